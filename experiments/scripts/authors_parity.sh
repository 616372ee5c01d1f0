#!/usr/bin/env bash
# upo's paper-exact recipe against the UPO authors' own code on identical rollouts (issue 37):
# loss and gradients at every inner step, the greedy decode with the same head, the head's inputs.
# Results: experiments/results/authors-parity.json; the story: docs/paper-recipe.md.
#
#   AUTHORS=/path/to/chunsanHong/UPO bash experiments/scripts/authors_parity.sh
#
# AUTHORS: a clone (or bare git directory) of github.com/chunsanHong/UPO holding commit 8084c40.
# The authors' code has no licence: it is read from there at run time and never copied into upo.
# TOY: the toy pipeline's folder (bash scripts/paper_pipeline_toy.sh, then
# configs/policy-pretrain-toy-llada-sudoku4-paper.yaml: the pre-trained mdm-block head in
# $TOY/pretrain-paper). WORK: a scratch folder for the authors' files and the packages their
# trainer imports (trl 0.17.0, torchvision's wheel for its MLP class, rich), installed there with
# --no-deps so that upo's environment is untouched.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${AUTHORS:?set AUTHORS to a clone or git directory of github.com/chunsanHong/UPO}"
TOY="${TOY:-runs/paper-toy}"
WORK="${WORK:-${TMPDIR:-/tmp}/upo-authors-parity}"
COMMIT=8084c40
PY="${PY:-.venv/bin/python}"
for f in "$TOY/mdm/model/config.json" "$TOY/pretrain-paper/model.safetensors"; do
  if [ ! -f "$f" ]; then
    echo "authors_parity.sh: $f not found: run scripts/paper_pipeline_toy.sh and the paper head's pre-training first (see the top of this script)" >&2
    exit 2
  fi
done
mkdir -p "$WORK/src" "$WORK/deps"
if git --git-dir="$AUTHORS" rev-parse -q --verify "$COMMIT^{commit}" >/dev/null 2>&1; then
  GIT=(git --git-dir="$AUTHORS")
elif git -C "$AUTHORS" rev-parse -q --verify "$COMMIT^{commit}" >/dev/null 2>&1; then
  GIT=(git -C "$AUTHORS")
else
  echo "authors_parity.sh: $AUTHORS holds no commit $COMMIT of chunsanHong/UPO" >&2
  exit 2
fi
for f in upo_trainer.py modeling_llada.py configuration_llada.py eval/generate_sudoku.py; do
  "${GIT[@]}" show "$COMMIT:$f" > "$WORK/src/$(basename "$f")"
done
if [ ! -d "$WORK/deps/site/trl" ]; then
  "$PY" -m pip install -q --no-deps --target "$WORK/deps/site" trl==0.17.0 rich markdown-it-py mdurl pygments
fi
if [ ! -d "$WORK/deps/torchvision" ]; then
  # only torchvision/ops/misc.py is loaded (the MLP class); its compiled ops need a CUDA torch
  "$PY" -m pip install -q --no-deps --target "$WORK/deps/tv" torchvision==0.28.0
  mv "$WORK/deps/tv/torchvision" "$WORK/deps/torchvision"
  rm -rf "$WORK/deps/tv"
fi
OMP_NUM_THREADS="${THREADS:-2}" "$PY" experiments/scripts/authors_parity.py \
  --authors-src "$WORK/src" --deps "$WORK/deps" --toy-dir "$TOY" \
  --threads "${THREADS:-2}" --out experiments/results/authors-parity.json "$@"
