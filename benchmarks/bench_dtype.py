"""Max-confidence decoding in bfloat16 and in float32 side by side, on the machine it runs on.

Usage: python benchmarks/bench_dtype.py --n 64 --threads 2
Prints the CPU's model name and bf16-related flags, the dtype "auto" picks here (see
upo.models.precision), and items/s and solve rate for each dtype. On a CPU without native bf16
(AVX512-BF16 / AMX-BF16) bfloat16 is expected to be far slower: that is why auto avoids it there.

To play an AVX2-only CPU on a newer one, restrict torch's kernels before it starts:
    ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python benchmarks/bench_dtype.py --n 8
(ATen's vector kernels, oneDNN's and MKL's then use AVX2 only; "auto" sees torch's capability.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from upo.evaluate import decode_in_batches
from upo.models.precision import (
    NATIVE_BF16_FLAGS,
    cpu_flags,
    cpu_has_fast_bf16,
    cpu_model_name,
    resolve_dtype,
)
from upo.models.registry import load_mdm
from upo.policies.rules import make_rule
from upo.tasks.registry import get_task
from upo.tasks.sudoku.io import load_puzzles

# The flags that tell, at a glance, what kind of vector unit this is.
SHOWN_FLAGS = ("avx2", "avx512f", "avx512bw", *NATIVE_BF16_FLAGS, "amx_tile")


def time_decode(mdm_path: str, dtype: str, batch, task, batch_size: int):
    mdm = load_mdm(mdm_path, options={"dtype": dtype})
    start = time.perf_counter()
    out, order, _, _ = decode_in_batches(mdm, batch, make_rule("confidence"), batch_size)
    wall = time.perf_counter() - start
    return out, order, wall, float(task.solved(batch, out).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mdm", default="checkpoints/sudoku9-mdm")
    ap.add_argument("--data", default="data/sudoku9-test.jsonl")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task("sudoku9")
    data = load_puzzles(args.data, task.spec)
    batch = task.batch(data.puzzles[: args.n], data.solutions[: args.n])
    flags = cpu_flags()
    print(f"CPU: {cpu_model_name()}")
    print("flags: " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in SHOWN_FLAGS))
    print(f"native bf16: {cpu_has_fast_bf16()}; dtype auto chooses: {resolve_dtype('auto')}")
    print(
        f"torch {torch.__version__}, kernels {torch.backends.cpu.get_cpu_capability()}, "
        f"{args.threads} threads\n"
    )
    rows = {dtype: time_decode(args.mdm, dtype, batch, task, args.batch_size) for dtype in
            ("bfloat16", "float32")}  # fmt: skip
    print("| dtype | items | wall s | items/s | solve rate |")
    print("|---|---|---|---|---|")
    for dtype, (_, _, wall, solve) in rows.items():
        print(
            f"| {dtype} | {len(batch)} | {wall:.1f} | {len(batch) / wall:.1f} | {100 * solve:.1f}% |"
        )
    bf, fp = rows["bfloat16"], rows["float32"]
    same = bool(np.array_equal(bf[0], fp[0]) and np.array_equal(bf[1], fp[1]))
    speedup = fp[2] / bf[2]  # float32 wall over bfloat16 wall: below 1, bfloat16 is slower
    print(f"\nbfloat16 speed-up over float32: {speedup:.2f}x; identical answers and orders: {same}")


if __name__ == "__main__":
    main()
