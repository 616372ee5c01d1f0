#!/usr/bin/env bash
# UPO ablations at an equal, small budget (STEPS GRPO steps each, one thread) from the shipped
# recipe configs/upo-sudoku9.yaml: other references, no regularisation, random initialisation.
# Each run's final validation solve rate (held-out val set, never the test set) lands in its
# meta.json; scripts/results.py collects them into docs/results.
set -euo pipefail
UPO=${UPO:-.venv/bin/upo}
STEPS=${STEPS:-20}
SEEDS=${SEEDS:-0 1}
CFG=configs/upo-sudoku9.yaml
run() {  # name, extra args... (CFG=... before the call picks another recipe)
  local name=$1; shift
  for seed in $SEEDS; do
    local out=runs/ablations/$name-seed$seed archived=experiments/results/ablations/$name-seed$seed
    if [ -f "$out/meta.json" ] && grep -q '"complete": true' "$out/meta.json"; then continue; fi
    if [ -f "$archived.meta.json" ]; then  # a finished run kept in experiments/results: reuse it
      mkdir -p "$out" && cp "$archived.meta.json" "$out/meta.json" && cp "$archived.metrics.jsonl" "$out/metrics.jsonl"
      continue
    fi
    local resume=""; [ -f "$out/train_state.json" ] && resume=--resume
    $UPO policy train --config "${RUN_CFG:-$CFG}" --out "$out" --steps "$STEPS" --seed "$seed" --threads 1 $resume "$@"
    mkdir -p experiments/results/ablations  # keep the finished run's record with the results
    cp "$out/meta.json" "$archived.meta.json" && cp "$out/metrics.jsonl" "$archived.metrics.jsonl"
  done
}
# In the order they are worth running when time is short.
run ref-confidence --reference confidence --beta 0.01
run no-regulariser --reference none --beta 0
run ref-topk3 # the shipped recipe itself at the ablation budget
run ref-softmax0.05 --reference softmax:0.05
run ref-margin --reference margin --beta 0.01
RUN_CFG=experiments/configs/upo-sudoku9-unanchored.yaml run random-init-unanchored
run ref-topk5 --reference topk:5
