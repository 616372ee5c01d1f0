#!/usr/bin/env bash
# Held-out and policy-training files of the addition and Zebra tasks (the MDMs train on generated
# streams and never read these). Test first, then validation excluding test, then training
# excluding both: `--exclude` guarantees the files never share an item.
# Usage: scripts/make_task_data.sh [addition|zebra|sums|all]
set -euo pipefail
UPO=${UPO:-.venv/bin/upo}
PART=${1:-all}
mkdir -p data
if [ "$PART" = addition ] || [ "$PART" = all ]; then
  $UPO data make addition --n 1000 --seed 601 --difficulty 1-16 --out data/addition-test.jsonl
  $UPO data make addition --n 300 --seed 602 --difficulty 1-16 --out data/addition-val.jsonl \
    --exclude data/addition-test.jsonl
  $UPO data make addition --n 2000 --seed 603 --difficulty 1-16 --out data/addition-train.jsonl \
    --exclude data/addition-test.jsonl data/addition-val.jsonl
fi
if [ "$PART" = addition ] || [ "$PART" = all ]; then
  # Carry-heavy additions (half the columns pass a carry on), 8-16 digits: where order matters.
  $UPO data make addition-carry --n 1000 --seed 611 --difficulty 8-16 --out data/addition-carry-test.jsonl
  $UPO data make addition-carry --n 300 --seed 612 --difficulty 8-16 --out data/addition-carry-val.jsonl \
    --exclude data/addition-carry-test.jsonl
  $UPO data make addition-carry --n 2000 --seed 613 --difficulty 8-16 --out data/addition-carry-train.jsonl \
    --exclude data/addition-carry-test.jsonl data/addition-carry-val.jsonl
fi
if [ "$PART" = zebra ] || [ "$PART" = all ]; then
  # 4x4 Zebra puzzles with unique solutions (about 40 ms each on one core).
  $UPO data make zebra4 --n 1000 --seed 701 --out data/zebra4-test.jsonl
  $UPO data make zebra4 --n 300 --seed 702 --out data/zebra4-val.jsonl --exclude data/zebra4-test.jsonl
  $UPO data make zebra4 --n 1000 --seed 703 --out data/zebra4-train.jsonl \
    --exclude data/zebra4-test.jsonl data/zebra4-val.jsonl
fi
if [ "$PART" = sums ] || [ "$PART" = all ]; then
  # Sums of 5 numbers of 1-2 digits (the end-of-text-trap regime): validation and policy training.
  # No test file is kept: test sets are drawn fresh with other seeds (the headline manifest's data_make).
  $UPO data make sums --n 300 --seed 802 --difficulty 2 --out data/sums-val.jsonl
  $UPO data make sums --n 2000 --seed 803 --difficulty 2 --out data/sums-train.jsonl --exclude data/sums-val.jsonl
fi
