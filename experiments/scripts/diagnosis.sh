#!/usr/bin/env bash
# The diagnosis runs behind experiments/README.md (sections 2.4-2.6), all judged on the validation set:
# correctness-supervised pre-training (two variants) and its validation solve rate, the error
# analysis of max-confidence, and the exploratory GRPO run with the `solved` reward. About 1 hour
# on one thread.
set -euo pipefail
UPO=${UPO:-.venv/bin/upo}
PY=${PY:-.venv/bin/python}
X=experiments/results
mkdir -p runs $X
pretrain() {  # config, name
  local out=runs/$2
  [ -f "$out/model.safetensors" ] || $UPO policy pretrain --config "$1" --out "$out" --threads 1
  cp "runs/$2/metrics.jsonl" "$X/$2.metrics.jsonl"
}
pretrain experiments/configs/policy-pretrain-correct-sudoku9.yaml pretrain-correct
pretrain experiments/configs/policy-pretrain-correct-pointwise-sudoku9.yaml pretrain-correct-pointwise
$UPO eval --task sudoku9 --mdm checkpoints/sudoku9-mdm --data data/sudoku9-val.jsonl --n 300 \
  --threads 1 --policies confidence,runs/pretrain-correct --json $X/pretrain-correct-val.json
$PY experiments/scripts/diagnose_errors.py
resume=""; [ -f runs/upo-solved/train_state.json ] && resume=--resume
$UPO policy train --config experiments/configs/upo-sudoku9-solved.yaml --out runs/upo-solved --threads 1 $resume
cp runs/upo-solved/metrics.jsonl $X/upo-solved.metrics.jsonl
cp runs/upo-solved/meta.json $X/upo-solved.meta.json
