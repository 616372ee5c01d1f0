#!/usr/bin/env bash
# Solve rate of the shipped 9x9 MDM against the number of blanks, per hand rule: how the default
# difficulty was chosen. Uses its own puzzles (seed 900), never the test files.
set -euo pipefail
UPO=${UPO:-.venv/bin/upo}
mkdir -p data docs/results
[ -f data/sudoku9-calibration.jsonl ] || $UPO data make sudoku9 --n 600 --seed 900 --blanks 50-59 --out data/sudoku9-calibration.jsonl
$UPO eval --task sudoku9 --mdm checkpoints/sudoku9-mdm --data data/sudoku9-calibration.jsonl --threads 1 \
  --policies random,confidence,margin,entropy --json docs/results/mdm-sudoku9-by-blanks.json \
  --plot docs/results/mdm-sudoku9-by-blanks | tee docs/results/mdm-sudoku9-by-blanks.md
