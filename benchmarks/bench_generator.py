"""Throughput of the Sudoku data pipeline, single process, numpy only.

Measures 9x9 complete grids per second from `sample_grids` (the MDM's training stream; target
>= 100,000/s) and unique 9x9 puzzles per minute from `generate_puzzles` at a fixed blank count
(target >= 1,000/min at 45 blanks), and prints a markdown table.

Usage: OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/bench_generator.py [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from upo.tasks.sudoku.generate import GridStream, generate_puzzles, sample_grids
from upo.tasks.sudoku.grid import MASK, SPECS, solved_batch


def bench_grids(seconds: float, batch: int) -> tuple[float, int]:
    """Grids per second drawing batches the way GridStream does (random base pool + symmetries)."""
    spec = SPECS["sudoku9"]
    pool = GridStream(spec, seed=0).pool
    rng = np.random.default_rng(0)
    sample_grids(spec, batch, rng, pool)  # warm-up: numpy's first calls allocate
    made, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        grids = sample_grids(spec, batch, rng, pool)
        made += batch
    rate = made / (time.perf_counter() - start)
    # Sanity: a benchmark of wrong grids would be meaningless.
    assert solved_batch(spec, np.zeros_like(grids), grids).all()
    return rate, made


def bench_puzzles(blanks: int, seconds: float) -> tuple[float, int]:
    """Unique puzzles per minute with exactly `blanks` blanks, stopping after `seconds`."""
    spec = SPECS["sudoku9"]
    made, start = 0, time.perf_counter()
    for puzzle, _ in generate_puzzles(spec, 10**9, (blanks, blanks), seed=blanks):
        assert int((puzzle == MASK).sum()) == blanks
        made += 1
        if time.perf_counter() - start >= seconds:
            break
    return made / (time.perf_counter() - start) * 60, made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time per measurement")
    parser.add_argument("--batch", type=int, default=1024, help="grids per sample_grids call")
    args = parser.parse_args()

    rows = []
    rate, made = bench_grids(args.seconds, args.batch)
    rows.append((f"9x9 complete grids (sample_grids, batch {args.batch})", made, rate, "/s"))
    for blanks in (45, 52, 56):
        rate, made = bench_puzzles(blanks, args.seconds)
        rows.append((f"unique 9x9 puzzles, {blanks} blanks", made, rate, "/min"))

    versions = f"python {platform.python_version()}, numpy {np.__version__}"
    print(f"{versions}, {platform.machine()}, {os.cpu_count()} CPUs visible")
    print(f"{args.seconds:g} s per measurement, single process\n")
    print("| measurement | items made | rate |")
    print("|---|---:|---:|")
    for name, made, rate, unit in rows:
        print(f"| {name} | {made:,} | {rate:,.0f} {unit} |")


if __name__ == "__main__":
    main()
