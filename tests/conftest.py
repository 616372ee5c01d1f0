"""Shared fixtures: tiny random MDMs (Sudoku grids and a plain sequence model) and small batches of
Sudoku puzzles. Everything is seeded, small (d_model 32, 2 layers) and fast on one CPU thread."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from upo.models.tiny import TinyConfig, TinyMDM
from upo.tasks.sudoku.generate import generate_puzzles
from upo.tasks.sudoku.grid import SPECS

# The non-grid sequence model used for padding tests: vocabulary 0..7, mask 7, pad with 0.
SEQ_VOCAB = 8
SEQ_MASK = 7
SEQ_PAD = 0
SEQ_LEN = 12


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # A training job shares this machine; the tests stay on one thread.
    torch.set_num_threads(1)


@pytest.fixture
def bf16_attention_under_a_lowered_kernel_level():
    """`ATEN_CPU_CAPABILITY=default` on a CPU with AMX: torch's CPU flash attention in bf16 still
    reaches for AMX packing and fails ("pack_vnni2 is only supported when avx512 is supported"),
    a torch defect of the override that no real CPU without AVX512 meets. There, bf16 attention
    takes torch's portable math kernel instead; everywhere else nothing changes. Only for tests
    that compare in-process results (a CLI subprocess would not get the patch)."""
    from upo.models.precision import NATIVE_BF16_FLAGS, cpu_flags

    lowered = torch.backends.cpu.get_cpu_capability() != "AVX512"
    if not (lowered and set(NATIVE_BF16_FLAGS) & cpu_flags()):
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fused = torch.nn.functional.scaled_dot_product_attention

    def math_attention(query, *args, **kwargs):
        # Only bf16 takes the failing AMX packing. float32 keeps the fused kernel, as the CLI
        # subprocesses of the resume tests (without this patch) do, so their bits agree.
        if query.dtype != torch.bfloat16:
            return fused(query, *args, **kwargs)
        with sdpa_kernel([SDPBackend.MATH]):  # per call: loading an HF model re-enables the rest
            return fused(query, *args, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = math_attention
    yield
    torch.nn.functional.scaled_dot_product_attention = fused


@pytest.fixture
def cpu(monkeypatch):
    """Say whether this CPU has native bf16, whatever the real one has: what dtype "auto" picks
    differs between machines (and under ATEN_CPU_CAPABILITY), so a test of "auto" fixes it."""
    from upo.models import precision

    monkeypatch.delenv(precision.ENV_VAR, raising=False)

    def say(native: bool) -> None:
        monkeypatch.setattr(precision, "_cpu_flags_say_bf16", lambda: native)

    return say


def sharpen(model: TinyMDM, seed: int) -> TinyMDM:
    """Re-initialise with unit-scale weights. The default init (std 0.02) gives near-uniform token
    distributions that hardly depend on context; with these weights confidences spread out over
    (0, 1) and every output depends strongly on every input, so ordering and padding bugs show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias") and p.dim() == 1 and "norm" not in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "norm" in name:
                continue  # LayerNorm keeps weight 1, bias 0
            elif p.dim() == 2 and name.split(".")[-2] in ("tok", "pos", "row", "col", "box"):
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
        model.head.weight.mul_(3.0)  # logits with a few units of spread
    return model


def make_tiny(
    task: str = "sudoku4",
    seed: int = 0,
    bf16: bool = False,
    d_model: int = 32,
    n_layers: int = 2,
    n_heads: int = 4,
    sharp: bool = True,
) -> TinyMDM:
    """A random TinyMDM. `task` is a Sudoku name, or "seq" for a non-grid model of length 12."""
    if task == "seq":
        cfg = TinyConfig(SEQ_VOCAB, SEQ_MASK, SEQ_LEN, d_model, n_layers, n_heads, bf16=bf16)
    else:
        spec = SPECS[task]
        cfg = TinyConfig(
            vocab_size=spec.vocab_size,
            mask_id=0,
            seq_len=spec.cells,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            grid_box=[spec.box_rows, spec.box_cols],
            bf16=bf16,
        )
    torch.manual_seed(seed)
    model = TinyMDM(cfg)
    if sharp:
        sharpen(model, seed)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_puzzles(task: str, n: int, blanks: tuple[int, int], seed: int = 0):
    """(puzzles [n, cells], solutions [n, cells]) as int64 torch tensors, 0 = blank."""
    pairs = list(generate_puzzles(SPECS[task], n, blanks, seed=seed))
    puzzles = torch.from_numpy(np.stack([p for p, _ in pairs]))
    solutions = torch.from_numpy(np.stack([s for _, s in pairs]))
    return puzzles, solutions


@pytest.fixture
def mdm4():
    return make_tiny("sudoku4", seed=0, bf16=False)


@pytest.fixture
def mdm4_bf16():
    return make_tiny("sudoku4", seed=1, bf16=True)


@pytest.fixture
def mdm9():
    return make_tiny("sudoku9", seed=2, bf16=False)


@pytest.fixture
def mdm9_bf16():
    return make_tiny("sudoku9", seed=3, bf16=True)


@pytest.fixture(params=["fp32", "bf16"])
def mdm4_any(request):
    """The sudoku4 model in both precisions."""
    return make_tiny("sudoku4", seed=4, bf16=request.param == "bf16")


@pytest.fixture
def seq_mdm():
    return make_tiny("seq", seed=5, bf16=False)


@pytest.fixture(scope="session")
def puzzles4():
    """8 unique 4x4 puzzles with 3 to 12 blanks (different counts within the batch)."""
    return make_puzzles("sudoku4", 8, (3, 12), seed=0)


@pytest.fixture(scope="session")
def puzzles9():
    """6 unique 9x9 puzzles with 20 to 45 blanks."""
    return make_puzzles("sudoku9", 6, (20, 45), seed=0)
