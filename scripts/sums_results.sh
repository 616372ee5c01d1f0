#!/usr/bin/env bash
# The learned order against the hand rules on the sums task (issue 35's headline,
# checkpoints/headline.yaml): validation (what the shipped seed was chosen on) and a test set drawn
# the way the manifest says, never used to choose anything. Writes docs/results/sums/.
# Usage: scripts/sums_results.sh   (THREADS=1 by default; about 3 minutes)
set -euo pipefail
UPO=${UPO:-.venv/bin/upo}
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-1}
R=docs/results/sums
mkdir -p $R
[ -f data/sums-test.jsonl ] ||
  $UPO data make sums --n 1000 --seed 901 --difficulty 2 --out data/sums-test.jsonl \
    --exclude data/sums-val.jsonl data/sums-train.jsonl
POLICIES=confidence,margin,entropy,random,left-to-right,checkpoints/sums-policy,checkpoints/sums-policy-seed0
for split in val test; do
  $UPO eval --task sums --mdm checkpoints/sums-mdm --data data/sums-$split.jsonl --threads "$THREADS" \
    --policies "$POLICIES,softmax:0.05,lookahead:3" --json $R/$split.json | tee $R/$split.md
  $PY experiments/scripts/sums_forms.py --mdm checkpoints/sums-mdm --data data/sums-$split.jsonl \
    --n 1000 --threads "$THREADS" --policies confidence,checkpoints/sums-policy --out $R/$split-forms.md
done
