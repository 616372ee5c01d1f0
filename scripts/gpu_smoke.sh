#!/usr/bin/env bash
# GPU smoke test of the Hugging Face path, offline, in well under 5 minutes:
#   tiny LLaDA-convention model loaded with trust_remote_code -> padded batch == one by one on
#   the GPU -> text decoding -> 2 UPO (GRPO) steps on a text task -> the REAL LLaDA and Dream
#   code (../shared/reference-models, toy size) in bf16: LLaDA's generate() reproduced token for
#   token, padding probes, Dream padded == alone -> the paper's toy pipeline (FAST) on the device
#   -> throughput of a ~200M ModernBERT-shaped masked LM -> the paper-exact recipe at toy size
#   (scripts/paper_exact_smoke.py) -> block-wise caching speed-ups (benchmarks/bench_cache.py).
#   Exits non-zero on any failure.
# Usage: scripts/gpu_smoke.sh [--out benchmarks/gpu_smoke.json] [--allow-cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
# $PYTHON wins; else the project's venv when there is one; else python.
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
# Nothing may reach the network: every model here is built from a config.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
timeout 300 "$PY" scripts/gpu_smoke.py "$@"
# The paper-exact recipe (docs/paper-recipe.md) at toy size on the device: the real LLaDA code with
# its weights in 4-bit where bitsandbytes is installed (the summary says whether it was), the
# mdm-block head pre-trained to max-confidence, GRPO with configs/llada-sudoku4-paper.yaml's
# options, the authors' eval-script protocol on 256 puzzles; then the CUDA test of a 4-bit block's
# dequantized copy. Writes its summary to benchmarks/paper_exact_gpu.json.
ALLOW_CPU=(); for arg in "$@"; do if [ "$arg" = --allow-cpu ]; then ALLOW_CPU=(--allow-cpu); fi; done
timeout 300 "$PY" scripts/paper_exact_smoke.py --out "$(mktemp -d)" --json benchmarks/paper_exact_gpu.json \
  "${ALLOW_CPU[@]}"
timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_load_in_4bit.py
# Block-wise key/value caching (docs/cache.md): cache none/prefix/dual x confidence,
# threshold:0.9 and a learned head on the mid-size real-code LLaDA (d_model 256, 6 layers, 400-token
# prompts, 128 positions in blocks of 32, batch 2) on the device; the CPU numbers are in
# benchmarks/cache.md. Writes the rows to benchmarks/cache_gpu.json.
exec timeout 300 "$PY" benchmarks/bench_cache.py --only mid-llada --items 8 --device auto \
  --json benchmarks/cache_gpu.json
