#!/usr/bin/env bash
# GPU smoke test of the Hugging Face path, offline, in well under 5 minutes:
#   tiny LLaDA-convention model loaded with trust_remote_code -> padded batch == one by one on
#   the GPU -> text decoding -> 2 UPO (GRPO) steps on a text task -> the REAL LLaDA and Dream
#   code (../shared/reference-models, toy size) in bf16: LLaDA's generate() reproduced token for
#   token, padding probes, Dream padded == alone -> the paper's toy pipeline (FAST) on the device
#   -> throughput of a ~200M ModernBERT-shaped masked LM. Exits non-zero on any failure.
# Usage: scripts/gpu_smoke.sh [--out benchmarks/gpu_smoke.json] [--allow-cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
# $PYTHON wins; else the project's venv when there is one; else python.
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
# Nothing may reach the network: every model here is built from a config.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec timeout 300 "$PY" scripts/gpu_smoke.py "$@"
