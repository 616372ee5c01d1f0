#!/usr/bin/env bash
# DAgger with aggregation on the under-trained MDM (experiments/README.md, section 2.13), judged on
# the validation set: correctness-supervised pre-training on greedy max-confidence states (round 0),
# then two rounds that add the states of the previous rounds' own greedy orders and retrain on all
# of them. Each policy is evaluated on 300 validation puzzles, and every policy's wrong picks on
# its own greedy path are counted on the first 200. About 45 minutes on two threads; reruns skip
# what already exists.
set -euo pipefail
UPO=${UPO:-.venv/bin/upo}
PY=${PY:-.venv/bin/python}
X=experiments/results
MDM=runs/sudoku9-mdm-weak
mkdir -p runs $X
[ -f "$MDM/model.safetensors" ] || $UPO mdm train --config experiments/configs/mdm-sudoku9-weak.yaml --out $MDM
pretrain() {  # config, name
  local out=runs/$2
  [ -f "$out/model.safetensors" ] || $UPO policy pretrain --config "$1" --out "$out"
  cp "runs/$2/metrics.jsonl" "$X/weakmdm-$2.metrics.jsonl"
  $UPO eval --task sudoku9 --mdm $MDM --data data/sudoku9-val.jsonl --n 300 \
    --policies "confidence,$out" --json "$X/weakmdm-val-$2.json"
}
pretrain experiments/configs/policy-pretrain-correct-sudoku9-weakmdm-greedy.yaml pre-correct-weak-greedy
pretrain experiments/configs/policy-pretrain-correct-sudoku9-weakmdm-dagger-agg1.yaml dagger-weak-agg1
pretrain experiments/configs/policy-pretrain-correct-sudoku9-weakmdm-dagger-agg2.yaml dagger-weak-agg2
$PY experiments/scripts/greedy_path_errors.py $MDM confidence runs/pre-correct-weak-greedy \
  runs/dagger-weak-agg1 runs/dagger-weak-agg2 > "$X/weakmdm-dagger-agg-greedy-path-errors.md"
