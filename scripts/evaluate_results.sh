#!/usr/bin/env bash
# Test-set evaluation behind docs/results and the README table. PART selects a piece so the hand
# rules can run while the policy trains: rules | learned | passat | search | search-gated | sudoku4 |
# all (default).
set -euo pipefail
UPO=${UPO:-.venv/bin/upo}
PART=${1:-all}
THREADS=${THREADS:-2}
R=docs/results
mkdir -p $R
MDM=checkpoints/sudoku9-mdm
EV="$UPO eval --task sudoku9 --mdm $MDM --threads $THREADS"
if [ "$PART" = rules ] || [ "$PART" = all ]; then
  $EV --data data/sudoku9-test.jsonl --json $R/sudoku9-test-rules.json \
    --policies random,confidence,margin,entropy,topk-random:5,softmax:0.1,left-to-right
  $EV --data data/sudoku9-test-hard.jsonl --json $R/sudoku9-test-hard-rules.json \
    --policies confidence,margin,entropy
fi
if [ "$PART" = learned ] || [ "$PART" = all ]; then
  $EV --data data/sudoku9-test.jsonl --json $R/sudoku9-test-learned.json \
    --policies checkpoints/sudoku9-policy,checkpoints/sudoku9-policy-pretrained
  $EV --data data/sudoku9-test-hard.jsonl --json $R/sudoku9-test-hard-learned.json \
    --policies checkpoints/sudoku9-policy
fi
if [ "$PART" = passat ] || [ "$PART" = all ]; then
  $EV --data data/sudoku9-test.jsonl --n 100 --pass-at 8 --json $R/sudoku9-test-passat.json \
    --policies confidence,softmax:0.05,topk-random:5,checkpoints/sudoku9-policy
fi
if [ "$PART" = search ] || [ "$PART" = all ]; then
  # trial-decode search (6-9 times the forwards of a greedy decode), beside max-confidence
  $EV --data data/sudoku9-test.jsonl --json $R/sudoku9-test-search.json --policies confidence,lookahead:3
  $EV --data data/sudoku9-test-hard.jsonl --json $R/sudoku9-test-hard-search.json \
    --policies confidence,lookahead:3
fi
if [ "$PART" = search-gated ] || [ "$PART" = all ]; then
  # the cheaper setting chosen on validation (experiments/README.md, section 3.6): K = 4, trials below 0.9 only
  $EV --data data/sudoku9-test.jsonl --json $R/sudoku9-test-search-gated.json --policies lookahead:4:0.9
  $EV --data data/sudoku9-test-hard.jsonl --json $R/sudoku9-test-hard-search-gated.json \
    --policies lookahead:4:0.9
fi
if [ "$PART" = sudoku4 ] || [ "$PART" = all ]; then
  [ -f data/sudoku4-test.jsonl ] || $UPO data make sudoku4 --n 1000 --seed 401 --blanks 8-12 --out data/sudoku4-test.jsonl
  $UPO eval --task sudoku4 --mdm checkpoints/sudoku4-mdm --threads "$THREADS" --data data/sudoku4-test.jsonl \
    --json $R/sudoku4-test.json --policies random,confidence,margin,entropy,topk-random:3,left-to-right
fi
