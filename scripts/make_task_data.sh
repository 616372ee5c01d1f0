#!/usr/bin/env bash
# Held-out and policy-training files of the addition and Zebra tasks (the MDMs train on generated
# streams and never read these). Test first, then validation excluding test, then training
# excluding both: `--exclude` guarantees the files never share an item.
# Usage: scripts/make_task_data.sh [addition|zebra|all]
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
