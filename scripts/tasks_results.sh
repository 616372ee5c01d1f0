#!/usr/bin/env bash
# Test-set tables of the addition and Zebra tasks (docs/results/tasks/): every hand rule, the
# learned policies (both seeds), and solve rate against difficulty (digits, clues).
# Usage: scripts/tasks_results.sh [addition|zebra|all]   (THREADS=1 by default)
set -euo pipefail
UPO=${UPO:-.venv/bin/upo}
PY=${PY:-.venv/bin/python}
PART=${1:-all}
THREADS=${THREADS:-1}
R=docs/results/tasks
mkdir -p $R
RULES=random,confidence,margin,entropy,left-to-right,topk-random:3,softmax:0.1,threshold:0.9
if [ "$PART" = addition ] || [ "$PART" = all ]; then
  EV="$UPO eval --task addition --mdm checkpoints/addition-mdm --threads $THREADS"
  $EV --data data/addition-test.jsonl --policies $RULES --json $R/addition-test-rules.json
  $EV --data data/addition-carry-test.jsonl --policies $RULES --json $R/addition-carry-test-rules.json
  LEARNED=$(ls -d checkpoints/addition-policy checkpoints/addition-policy-seed* 2>/dev/null | paste -sd,)
  $EV --data data/addition-carry-test.jsonl --policies "$LEARNED" --json $R/addition-carry-test-learned.json
  $EV --data data/addition-test.jsonl --policies "$LEARNED" --json $R/addition-test-learned.json
  # The right-to-left order as an oracle row, and how right-to-left each policy's order is.
  for SPLIT in addition-carry-test addition-test; do
    $PY scripts/right_to_left.py checkpoints/addition-mdm data/$SPLIT.jsonl $R/$SPLIT-rtl.json \
      --threads "$THREADS" --policies "random,confidence,margin,left-to-right,$LEARNED"
  done
  $PY scripts/tasks_tables.py $R/.carry.md "Addition, carry-heavy test set (8-16 digits)" \
    $R/addition-carry-test-rules.json $R/addition-carry-test-rtl.json $R/addition-carry-test-learned.json
  $PY scripts/tasks_tables.py $R/.plain.md "Addition, random digits (1-16 digits)" \
    $R/addition-test-rules.json $R/addition-test-rtl.json $R/addition-test-learned.json
  cat $R/.carry.md - $R/.plain.md > $R/addition.md <<< ""
  rm -f $R/.carry.md $R/.plain.md
fi
if [ "$PART" = zebra ] || [ "$PART" = all ]; then
  EV="$UPO eval --task zebra4 --mdm checkpoints/zebra-mdm --threads $THREADS"
  $EV --data data/zebra4-test.jsonl --policies $RULES --json $R/zebra4-test-rules.json
  LEARNED=$(ls -d checkpoints/zebra-policy checkpoints/zebra-policy-seed* 2>/dev/null | paste -sd, || true)
  if [ -n "$LEARNED" ]; then
    $EV --data data/zebra4-test.jsonl --policies "$LEARNED" --json $R/zebra4-test-learned.json
  fi
  $PY scripts/tasks_tables.py $R/zebra.md "Zebra 4x4 test set" \
    $R/zebra4-test-rules.json $R/zebra4-test-learned.json
fi
