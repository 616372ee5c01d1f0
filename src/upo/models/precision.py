"""Which dtype the built-in MDM runs in when asked for "auto".

bf16 matmuls are fast only where the hardware does them natively (CUDA GPUs, x86 CPUs with
AVX512-BF16 or AMX-BF16). Elsewhere torch emulates them, which on an AVX2-only CPU made the
built-in MDM about 60x slower than in float32 (issue 29), so "auto" picks float32 there.

The choice is read from the CPU's flags, never timed: a timing probe would make the dtype, and so
the decoded answers (bf16 and float32 break near-ties differently), depend on machine load.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import UpoError

DTYPES = ("auto", "bfloat16", "float32")
# The CPU flags (as /proc/cpuinfo spells them) that mean bf16 arithmetic in hardware.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")
# Overrides the CPU check, for users on an unusual machine and for tests.
ENV_VAR = "UPO_DTYPE"


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The flags of the first CPU in /proc/cpuinfo; empty when there is none (not Linux)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":  # x86; every core lists the same flags
            return set(value.split())
    return set()


def cpu_model_name(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name from /proc/cpuinfo, for reports; the platform's name elsewhere."""
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    import platform

    return platform.processor() or platform.machine() or "unknown"


@lru_cache(maxsize=1)
def _cpu_flags_say_bf16() -> bool:
    # Without /proc/cpuinfo (macOS, Windows) nothing reliable says bf16 is native, and guessing
    # True is the costly mistake (60x), so the answer is False: --dtype bfloat16 forces it.
    if not (sys.platform.startswith("linux") and set(NATIVE_BF16_FLAGS) & cpu_flags()):
        return False
    # torch must also run its AVX512 kernels: below that (an old build, or ATEN_CPU_CAPABILITY
    # lowered, as benchmarks/bench_dtype.py does to play an AVX2-only CPU) bf16 is emulated.
    return torch.backends.cpu.get_cpu_capability() == "AVX512"


def env_dtype() -> str | None:
    """UPO_DTYPE when set (bfloat16 or float32), else None."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    if value not in ("bfloat16", "float32"):
        raise UpoError(f"{ENV_VAR}={value!r:.40}: must be bfloat16 or float32")
    return value


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU does bf16 in hardware (or UPO_DTYPE says which dtype to treat as fast)."""
    forced = env_dtype()
    if forced is not None:
        return forced == "bfloat16"
    return _cpu_flags_say_bf16()


def resolve_dtype(requested: str | None, device: str | torch.device = "cpu") -> str:
    """ "auto" (or None) becomes UPO_DTYPE when set, else bfloat16 on CUDA or a CPU with native
    bf16 and float32 otherwise; bfloat16 and float32 are passed through."""
    requested = requested or "auto"
    if requested not in DTYPES:
        raise UpoError(f"unknown dtype {requested!r:.40}; valid: {', '.join(DTYPES)}")
    if requested != "auto":
        return requested
    forced = env_dtype()
    if forced is not None:  # the user's word for this machine, GPU or not
        return forced
    kind = torch.device(device).type
    if kind == "cuda":
        return "bfloat16"
    if kind == "cpu" and cpu_has_fast_bf16():
        return "bfloat16"
    return "float32"


def dtype_reason(dtype: str, requested: str | None) -> str:
    """Why `dtype` was used, for the one-line notice."""
    if (requested or "auto") != "auto":
        return "as asked"
    if env_dtype() is not None:
        return f"{ENV_VAR} is set"
    if dtype == "bfloat16":
        return "CPU has native bf16"
    return "no native bf16 on this CPU; --dtype bfloat16 to force"
