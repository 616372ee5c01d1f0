"""mdm_options.load_in_4bit: NF4 loading through bitsandbytes on CUDA only. Elsewhere one UpoError
line names the option and says why, before anything is downloaded or loaded (the Hub id below does
not exist: reaching the loader would give a different error)."""

from __future__ import annotations

import sys

import pytest
import torch

from upo.errors import UpoError
from upo.models.registry import load_mdm

MISSING = "hf:no-such-owner/no-such-model-4bit"


@pytest.mark.parametrize(
    ("device", "why"),
    [("cpu", "runs on CUDA only and the device is cpu"), (None, "no device was given")],
)
def test_refused_off_cuda_before_loading(device, why):
    options = {"load_in_4bit": True, "trust_remote_code": True}
    if device is not None:
        options["device"] = device
    with pytest.raises(UpoError) as err:
        load_mdm(MISSING, options=options)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("mdm_options.load_in_4bit: ") and why in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_refused_when_torch_sees_no_cuda():
    with pytest.raises(UpoError, match=r"load_in_4bit: 4-bit loading needs CUDA"):
        load_mdm(MISSING, options={"load_in_4bit": True, "device": "cuda"})


def test_refused_without_bitsandbytes(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import raises ImportError
    with pytest.raises(
        UpoError, match=r"load_in_4bit: .*needs bitsandbytes, which is not installed"
    ):
        load_mdm(MISSING, options={"load_in_4bit": True, "device": "cuda"})


def test_the_option_has_its_type_and_is_for_hf_models_only(tmp_path):
    with pytest.raises(UpoError, match="load_in_4bit"):
        load_mdm(MISSING, options={"load_in_4bit": "true", "device": "cuda"})
    from upo.checkpoint import save_checkpoint
    from upo.models.tiny import TinyConfig, TinyMDM

    cfg = TinyConfig(vocab_size=5, mask_id=0, seq_len=16, d_model=16, n_layers=2, n_heads=2)
    save_checkpoint(tmp_path, TinyMDM(cfg), {"kind": "tiny", "model": cfg.__dict__}, {})
    with pytest.raises(UpoError, match="load_in_4bit is for Hugging Face models"):
        load_mdm(tmp_path, options={"load_in_4bit": True})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes 4-bit needs CUDA")
def test_dequantized_copy_of_a_4bit_block_trains_in_float32():
    """The mdm-block head copies a 4-bit MDM's last block with its Linear layers dequantized:
    float32, trainable, computing what the 4-bit layer computes."""
    bnb = pytest.importorskip("bitsandbytes")
    from upo.models.quantize import dequantized_copy, is_4bit_linear

    torch.manual_seed(0)
    dense = torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False), torch.nn.SiLU())
    q = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
    q.weight = bnb.nn.Params4bit(
        dense[0].weight.data.clone(), requires_grad=False, quant_type="nf4"
    )
    block = torch.nn.Sequential(q.cuda(), torch.nn.SiLU())
    assert is_4bit_linear(block[0])
    copied = dequantized_copy(block)
    assert type(copied[0]) is torch.nn.Linear and copied[0].weight.dtype == torch.float32
    x = torch.randn(3, 64, device="cuda")
    with torch.no_grad():
        want = block(x.bfloat16()).float()
        got = copied(x)
    assert torch.allclose(got, want, atol=0.05, rtol=0.05)
    assert is_4bit_linear(block[0])  # the MDM's own block untouched
