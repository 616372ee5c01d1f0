#!/usr/bin/env bash
# The puzzle files every recipe uses. Test first, then validation excluding test, then training
# excluding both: `--exclude` guarantees the three files never share a puzzle.
set -euo pipefail
UPO=${UPO:-.venv/bin/upo}
mkdir -p data
$UPO data make sudoku9 --n 1000 --seed 101 --blanks 56-56 --out data/sudoku9-test.jsonl
$UPO data make sudoku9 --n 1000 --seed 102 --blanks 58-58 --out data/sudoku9-test-hard.jsonl --exclude data/sudoku9-test.jsonl
$UPO data make sudoku9 --n 300 --seed 103 --blanks 56-56 --out data/sudoku9-val.jsonl \
  --exclude data/sudoku9-test.jsonl data/sudoku9-test-hard.jsonl
$UPO data make sudoku9 --n 4000 --seed 104 --blanks 54-58 --out data/sudoku9-train.jsonl \
  --exclude data/sudoku9-test.jsonl data/sudoku9-test-hard.jsonl data/sudoku9-val.jsonl
# Harder validation and training puzzles for the exploratory run experiments/configs/upo-sudoku9-hard.yaml,
# disjoint from every file above (made after them, so those stay as they were).
$UPO data make sudoku9 --n 300 --seed 105 --blanks 58-58 --out data/sudoku9-val-hard.jsonl \
  --exclude data/sudoku9-test.jsonl data/sudoku9-test-hard.jsonl data/sudoku9-val.jsonl data/sudoku9-train.jsonl
$UPO data make sudoku9 --n 1000 --seed 106 --blanks 57-58 --out data/sudoku9-train-hard.jsonl \
  --exclude data/sudoku9-test.jsonl data/sudoku9-test-hard.jsonl data/sudoku9-val.jsonl data/sudoku9-train.jsonl \
  data/sudoku9-val-hard.jsonl
