#!/usr/bin/env bash
# The headroom screen (issue 35): where could a learned one-forward order beat max-confidence?
# For each regime, on validation data only: the hand rules (max-confidence, margin, entropy,
# random, left-to-right; right-to-left for addition), 8 sampled orders (softmax:0.05, pass@8 and
# the likeliest of 8) and the trial-decode search lookahead, with 95% intervals and NFE.
# Headroom = what a one-forward rule, or pass@8, reaches above max-confidence.
# Writes docs/results/headroom/*.json and docs/results/headroom.md.
# Usage: scripts/headroom_screen.sh [REGIME ...]   (THREADS=2 by default; N=300 items per regime)
set -euo pipefail
UPO=${UPO:-.venv/bin/upo}
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-2}
N=${N:-300}
R=docs/results/headroom
mkdir -p $R runs
RULES=confidence,margin,entropy,random,left-to-right
SAMPLED=softmax:0.05
REGIMES=${*:-sudoku9 sudoku9-58 sudoku9-k3 addition-carry addition-carry-shallow zebra4 sums sums-deep}
ev() {  # ev NAME TASK MDM DATA POLICIES [EXTRA FLAGS...]: NAME.json, and NAME-sampled.json
  # for the sampled orders (pass@8), which are not decoded 8 times for the deterministic rules
  local name=$1 task=$2 mdm=$3 data=$4 policies=$5
  shift 5
  local common=(--task "$task" --mdm "$mdm" --data "$data" --n "$N" --threads "$THREADS")
  $UPO eval "${common[@]}" --policies "$policies" --json "$R/$name.json" "$@"
  $UPO eval "${common[@]}" --policies "$SAMPLED" --pass-at 8 --json "$R/$name-sampled.json" "$@"
}
for regime in $REGIMES; do
  case $regime in
    sudoku9)  # the shipped MDM, in distribution (56 blanks)
      ev sudoku9 sudoku9 checkpoints/sudoku9-mdm data/sudoku9-val.jsonl "$RULES,lookahead:3" ;;
    sudoku9-58)  # harder puzzles than the default (58 blanks)
      ev sudoku9-58 sudoku9 checkpoints/sudoku9-mdm data/sudoku9-val-hard.jsonl "$RULES,lookahead:3" ;;
    sudoku9-k3)  # a budget of 3 cells per step (19 MDM calls): which 3 to fill together
      ev sudoku9-k3 sudoku9 checkpoints/sudoku9-mdm data/sudoku9-val.jsonl "$RULES" --k 3
      $UPO eval --task sudoku9 --mdm checkpoints/sudoku9-mdm --data data/sudoku9-val.jsonl --n "$N" \
        --threads "$THREADS" --policies threshold:0.95,threshold:0.98,checkpoints/sudoku9-parallel \
        --json "$R/sudoku9-k3-threshold.json" ;;
    addition-carry)  # trained on random digits, decoded on long carry chains
      ev addition-carry addition checkpoints/addition-mdm data/addition-carry-val.jsonl "$RULES,lookahead:3"
      $PY scripts/right_to_left.py checkpoints/addition-mdm data/addition-carry-val.jsonl \
        $R/addition-carry-rtl.json --threads "$THREADS" ;;
    addition-carry-shallow)  # the same shift with a 0.09M-parameter MDM (1 minute to train)
      [ -f runs/addition-mdm-shallow/meta.json ] && grep -q '"complete": true' runs/addition-mdm-shallow/meta.json ||
        $UPO mdm train --config experiments/configs/mdm-addition-shallow.yaml --out runs/addition-mdm-shallow \
          $([ -d runs/addition-mdm-shallow ] && echo --resume)
      ev addition-carry-shallow addition runs/addition-mdm-shallow data/addition-carry-val.jsonl "$RULES,lookahead:3"
      $PY scripts/right_to_left.py runs/addition-mdm-shallow data/addition-carry-val.jsonl \
        $R/addition-carry-shallow-rtl.json --threads "$THREADS" ;;
    zebra4)  # the shipped Zebra MDM
      ev zebra4 zebra4 checkpoints/zebra-mdm data/zebra4-val.jsonl "$RULES,lookahead:3" ;;
    sums)  # two phrasings in one block (upo/tasks/sums), the shipped 0.1M MDM
      ev sums sums checkpoints/sums-mdm data/sums-val.jsonl "$RULES,lookahead:3"
      # semi-autoregressive blocks too (of B answer positions; 4 = a total and its comma)
      $PY experiments/scripts/sums_forms.py --mdm checkpoints/sums-mdm --data data/sums-val.jsonl \
        --n "$N" --threads "$THREADS" --policies "$RULES" --blocks 4,8 --out $R/sums-forms.md ;;
    sums-deep)  # the same task with a 0.67M MDM (experiments/configs/mdm-sums-deep.yaml, ~25 min)
      [ -f runs/sums-mdm-deep/meta.json ] && grep -q '"complete": true' runs/sums-mdm-deep/meta.json ||
        $UPO mdm train --config experiments/configs/mdm-sums-deep.yaml --out runs/sums-mdm-deep \
          $([ -d runs/sums-mdm-deep ] && echo --resume)
      ev sums-deep sums runs/sums-mdm-deep data/sums-val.jsonl "$RULES,lookahead:3"
      $PY experiments/scripts/sums_forms.py --mdm runs/sums-mdm-deep --data data/sums-val.jsonl \
        --n "$N" --threads "$THREADS" --policies "$RULES" --blocks 4,8 --out $R/sums-deep-forms.md ;;
    *) echo "unknown regime $regime" >&2; exit 2 ;;
  esac
done
$PY scripts/headroom_table.py $R docs/results/headroom.md
