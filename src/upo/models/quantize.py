"""4-bit loading of a frozen Hugging Face MDM (`mdm_options.load_in_4bit`), as the UPO authors load
LLaDA-8B while training: NF4 weights with double quantization and bf16 compute (bitsandbytes), so
the 8B model takes about 5 GB beside the policy instead of 16 GB in bf16.

bitsandbytes' 4-bit kernels run on CUDA only here, so the option is refused anywhere else with one
line saying why, before anything is downloaded or loaded: a CPU run would otherwise fail deep in
the loader, minutes into a download.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import UpoError

OPTION = "mdm_options.load_in_4bit"


def refusal_4bit(device) -> str | None:
    """None when 4-bit loading can run on `device`, else why not (one line)."""
    kind = torch.device(device).type if device is not None else None
    if kind != "cuda":
        where = "no device was given" if kind is None else f"the device is {kind}"
        return (
            f"{OPTION}: 4-bit loading (bitsandbytes NF4) runs on CUDA only and {where}; "
            "set mdm_options.device: cuda on a machine with an NVIDIA GPU, or drop load_in_4bit"
        )
    if not torch.cuda.is_available():
        return f"{OPTION}: 4-bit loading needs CUDA and this torch sees no CUDA device"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return f"{OPTION}: 4-bit loading needs bitsandbytes, which is not installed (pip install bitsandbytes)"
    return None


def check_4bit(device) -> None:
    why = refusal_4bit(device)
    if why is not None:
        raise UpoError(why)


def quantization_config(transformers):
    """The authors' setting: NF4, double quantization, bf16 compute."""
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def is_4bit_linear(module: nn.Module) -> bool:
    """A bitsandbytes 4-bit Linear: its weight carries the quantization state."""
    return getattr(getattr(module, "weight", None), "quant_state", None) is not None


def dequantized_copy(block: nn.Module) -> nn.Module:
    """A copy of `block` in which every 4-bit Linear is an ordinary float32 Linear holding its
    dequantized weight: what a trainable head copied from a 4-bit MDM starts from (4-bit weights
    take no gradient). The MDM's block is left as it is."""
    import bitsandbytes.functional as bnbf

    copied = copy.deepcopy(block)
    for module in list(copied.modules()):
        for name, child in list(module.named_children()):
            if not is_4bit_linear(child):
                continue
            weight = bnbf.dequantize_4bit(child.weight.data, child.weight.quant_state)
            linear = nn.Linear(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                device=weight.device,
                dtype=torch.float32,
            )
            with torch.no_grad():
                linear.weight.copy_(weight.float())
                if child.bias is not None:
                    linear.bias.copy_(child.bias.float())
            setattr(module, name, linear)
    return copied
