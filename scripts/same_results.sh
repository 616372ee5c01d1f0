#!/usr/bin/env bash
# Do a refactor's results stay bit-identical? Runs the same small MDM training, pre-training, two
# UPO runs and two evaluations with the upo of git revision REV and with the working tree, then
# compares the weights (sha256), metrics.jsonl and eval JSON (timings left out) and meta.json.
#
#   bash scripts/same_results.sh REV        (about 4 minutes on 2 cores)
#
# Runs use one thread and UPO_DTYPE=bfloat16, so both sides decode the same way on any CPU.
set -euo pipefail
REV=${1:?usage: same_results.sh REV}
ROOT=$(git rev-parse --show-toplevel)
PY=${PYTHON:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d)
trap 'git -C "$ROOT" worktree remove --force "$WORK/base-tree" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
git -C "$ROOT" worktree add -q --detach "$WORK/base-tree" "$REV"

run_side() {  # SRC OUT: the runs with the upo package found at SRC
  local SRC=$1 OUT=$2
  mkdir -p "$OUT"
  upo() { (cd "$ROOT" && PYTHONPATH=$SRC UPO_DTYPE=bfloat16 "$PY" -m upo.cli "$@"); }
  upo data make sudoku4 --n 300 --seed 5 --out "$OUT/train.jsonl" 2>/dev/null
  upo data make sudoku4 --n 60 --seed 6 --out "$OUT/val.jsonl" 2>/dev/null
  printf '%s\n' "task: sudoku4" "model: {d_model: 32, n_layers: 2, n_heads: 2, ff_mult: 2}" \
    "steps: 40" "batch_size: 32" "log_every: 10" "eval_every: 20" "checkpoint_every: 20" \
    "val_size: 32" "val_puzzles: 20" "val_blanks: [10]" "threads: 1" > "$OUT/mdm.yaml"
  upo mdm train --config "$OUT/mdm.yaml" --out "$OUT/mdm" 2>/dev/null >/dev/null
  printf '%s\n' "task: sudoku4" "mdm: checkpoints/sudoku4-mdm" "train_data: $OUT/train.jsonl" \
    'reference: "softmax:0.1"' "n_puzzles: 60" "held_out: 20" "epochs: 2" "batch_states: 64" \
    "threads: 1" > "$OUT/pre.yaml"
  upo policy pretrain --config "$OUT/pre.yaml" --out "$OUT/pre" 2>/dev/null >/dev/null
  printf '%s\n' "task: sudoku4" "mdm: checkpoints/sudoku4-mdm" "train_data: $OUT/train.jsonl" \
    "val_data: $OUT/val.jsonl" "val_n: 40" "init: pretrained" "pretrained: $OUT/pre" \
    'reference: "softmax:0.1"' "steps: 4" "prompts_per_step: 8" "group_size: 4" \
    "inner_steps: 2" "eval_every: 2" "checkpoint_every: 2" "threads: 1" > "$OUT/upo.yaml"
  upo policy train --config "$OUT/upo.yaml" --out "$OUT/upo" 2>/dev/null >/dev/null
  printf '%s\n' "task: sudoku4" "mdm: checkpoints/sudoku4-mdm" "train_data: $OUT/train.jsonl" \
    "init: random" "policy: {confidence_skip: 1.0}" "reference: confidence" "beta: 0.05" \
    "steps: 3" "prompts_per_step: 8" "group_size: 4" "inner_steps: 2" "step_aggregation: sum" \
    "threads: 1" > "$OUT/upo2.yaml"
  upo policy train --config "$OUT/upo2.yaml" --out "$OUT/upo2" 2>/dev/null >/dev/null
  local policies=random,confidence,margin,entropy,softmax:0.1,threshold:0.9,$OUT/upo,lookahead:2
  upo eval --task sudoku4 --mdm checkpoints/sudoku4-mdm --data data/sudoku4-test.jsonl --n 200 \
    --policies "$policies" --json "$OUT/eval.json" 2>/dev/null >/dev/null
  upo eval --task sudoku4 --mdm checkpoints/sudoku4-mdm --data data/sudoku4-test.jsonl --n 200 \
    --policies "confidence,$OUT/upo2" --k 2 --pass-at 4 --json "$OUT/eval_k2.json" 2>/dev/null >/dev/null
}

echo "runs at $REV ..." >&2
run_side "$WORK/base-tree/src" "$WORK/base"
echo "runs at the working tree ..." >&2
run_side "$ROOT/src" "$WORK/new"
"$PY" - "$WORK" <<'PY'
import hashlib, json, sys
from pathlib import Path

work = Path(sys.argv[1])
TIMINGS = {"seconds", "seconds_rollout", "seconds_update", "seq_per_s", "items_per_s",
           "train_seconds", "commit", "command", "train_data"}
same = True

def show(what, ok, extra=""):
    global same
    same &= ok
    print(f"{'same   ' if ok else 'DIFFERS'} {what} {extra}")

def clean(d):
    return {k: v for k, v in d.items() if k not in TIMINGS}

for run in ("mdm", "pre", "upo", "upo2"):
    a, b = (hashlib.sha256((work / s / run / "model.safetensors").read_bytes()).hexdigest()
            for s in ("base", "new"))
    show(f"{run}/model.safetensors", a == b)
    rows = [[clean(json.loads(l)) for l in (work / s / run / "metrics.jsonl").open()]
            for s in ("base", "new")]
    show(f"{run}/metrics.jsonl", rows[0] == rows[1], f"({len(rows[0])} lines)")
    metas = [clean(json.loads((work / s / run / "meta.json").read_text())) for s in ("base", "new")]
    changed = sorted(k for k in set(metas[0]) | set(metas[1]) if metas[0].get(k) != metas[1].get(k))
    print(f"        {run}/meta.json fields that differ: {changed or 'none'}")
for name in ("eval.json", "eval_k2.json"):
    res = [[clean(r) for r in json.loads((work / s / name).read_text())["results"]]
           for s in ("base", "new")]
    for r in res[0] + res[1]:
        r["policy"] = Path(r["policy"]).name  # the two sides' run directories differ
    show(name, res[0] == res[1], f"({len(res[0])} policies)")
sys.exit(0 if same else 1)
PY
