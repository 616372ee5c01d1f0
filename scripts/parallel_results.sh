#!/usr/bin/env bash
# The accuracy-vs-NFE results of docs/results/parallel.md: the hand rules' frontier and the learned
# set policies (both training seeds) on the 9x9 validation and test sets and the 4x4 set.
#   bash scripts/parallel_results.sh            (about 15 minutes on 2 cores)
# The policies come from (each about 40 minutes on one thread):
#   upo policy train --config configs/upo-sudoku9-parallel.yaml --out runs/parallel-seed0 --seed 0 --threads 1
#   upo policy train --config configs/upo-sudoku9-parallel.yaml --out runs/parallel-seed1 --seed 1 --threads 1
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=docs/results/frontier
LEARNED=${LEARNED:-runs/parallel-seed0,runs/parallel-seed1}
mkdir -p $OUT
$PY scripts/frontier.py --data data/sudoku9-val.jsonl --policies "$LEARNED" --out $OUT/sudoku9-val
$PY scripts/frontier.py --data data/sudoku9-test.jsonl --policies "$LEARNED" --out $OUT/sudoku9-test
$PY scripts/frontier.py --data data/sudoku9-test-hard.jsonl --policies "$LEARNED" --out $OUT/sudoku9-test-hard
$PY scripts/frontier.py --task sudoku4 --mdm checkpoints/sudoku4-mdm --data data/sudoku4-test.jsonl \
  --out $OUT/sudoku4-test
