#!/usr/bin/env bash
# The UPO paper's whole pipeline at toy size, on the CPU, through the Hugging Face path a GPU user
# takes with LLaDA-8B-Instruct (docs/gpu.md has the measured numbers and times):
#  1. data: 4x4 puzzles (train and validation never hold a test puzzle); the test set as the
#     paper's Puzzle,Solution CSV;
#  2. a LLaDA-architecture MDM (LLaDA's own modeling code from ../shared/reference-models/llada,
#     2.7M parameters) trained by upo on the paper's 4x4 format, saved as a Hugging Face directory;
#  3. upo eval of the hand rules on the test CSV (task sudoku4-paper, hf: model, trust_remote_code);
#  4. upo policy train with the paper's recipe shape, scaled down;
#  5. upo eval of the learned policy beside the rules.
# Every step resumes or skips what is done: rerun the script after an interruption.
# FAST=1: a few steps of each, for CI (tests/test_paper_pipeline_toy.py), in about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
UPO="${UPO:-.venv/bin/upo}"
OUT="${OUT:-runs/paper-toy}"
MODEL_CODE="${MODEL_CODE:-../shared/reference-models/llada}"
if [ ! -f "$MODEL_CODE/modeling_llada.py" ]; then
  echo "paper_pipeline_toy.sh: LLaDA's model code not found at $MODEL_CODE (set MODEL_CODE to a LLaDA snapshot directory)" >&2
  exit 2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT/data"
if [ "${FAST:-0}" = 1 ]; then
  N_TRAIN=200 N_TEST=20 MDM_STEPS=(--steps 3) UPO_STEPS=(--max-steps 32) EVAL_N=20
else
  N_TRAIN=20000 N_TEST=500 MDM_STEPS=() UPO_STEPS=() EVAL_N=500
fi
if [ "${FAST:-0}" = 1 ] || [ ! -f "$OUT/data/test.csv" ]; then
  $UPO data make sudoku4 --n "$N_TRAIN" --seed 11 --out "$OUT/data/train.jsonl" --exclude data/sudoku4-test.jsonl
  $UPO data make sudoku4 --n 200 --seed 12 --out "$OUT/data/val.jsonl" --exclude data/sudoku4-test.jsonl "$OUT/data/train.jsonl"
  # The test puzzles in the paper's CSV format (Puzzle,Solution; 0 = blank).
  python3 - "$OUT/data/test.csv" "$N_TEST" <<'PY'
import json, sys
rows = [json.loads(line) for line in open("data/sudoku4-test.jsonl")][: int(sys.argv[2])]
with open(sys.argv[1], "w") as f:
    f.write("Puzzle,Solution\n")
    f.writelines(f"{r['puzzle']},{r['solution']}\n" for r in rows)
PY
fi
# Point the recipes at this run's folders (they name runs/paper-toy).
FAST_SED=()
if [ "${FAST:-0}" = 1 ]; then  # small validation sets and rounds: the CI version
  FAST_SED=(-e "s/^val_n: .*/val_n: 8/" -e "s/^prompts_per_step: .*/prompts_per_step: 2/" -e "s/^eval_every: .*/eval_every: 2/")
fi
DEVICE="${DEVICE:-cpu}" DTYPE="${DTYPE:-float32}"  # where the frozen MDM runs for UPO and eval
sub() { sed -e "s#runs/paper-toy#$OUT#g" -e "s#\.\./shared/reference-models/llada#$MODEL_CODE#" \
  -e "s/^  device: cpu/  device: $DEVICE/" -e "s/^  dtype: float32/  dtype: $DTYPE/" "${FAST_SED[@]}" "$1" > "$2"; }
sub configs/hf-mdm-toy-llada-sudoku4.yaml "$OUT/mdm.yaml"
sub configs/upo-toy-llada-sudoku4.yaml "$OUT/upo.yaml"
resume() { if [ -f "$1/train_state.json" ] || [ -f "$1/meta.json" ]; then echo --resume; fi; }

$UPO mdm train-hf --config "$OUT/mdm.yaml" --out "$OUT/mdm" $(resume "$OUT/mdm") "${MDM_STEPS[@]}"
MDM="hf:$OUT/mdm/model"
EVAL=(--task sudoku4-paper --mdm "$MDM" --trust-remote-code --data "$OUT/data/test.csv" --n "$EVAL_N" --batch-size 64
  --instructions "Fill the blanks of this 4x4 Sudoku." --device "$DEVICE" --dtype "$DTYPE")
$UPO eval "${EVAL[@]}" --policies confidence,margin,entropy,random,softmax-vocab:0.05 --json "$OUT/eval-rules.json"
$UPO policy train --config "$OUT/upo.yaml" --out "$OUT/policy" $(resume "$OUT/policy") "${UPO_STEPS[@]}"
$UPO eval "${EVAL[@]}" --policies confidence,random,"$OUT/policy" --json "$OUT/eval-policy.json"
echo "paper_pipeline_toy.sh: results in $OUT/eval-rules.json and $OUT/eval-policy.json"
