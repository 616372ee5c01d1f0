#!/usr/bin/env bash
# GPU smoke test of the Hugging Face path, offline, in well under 5 minutes:
#   tiny LLaDA-convention model loaded with trust_remote_code -> padded batch == one by one on
#   the GPU -> text decoding -> 2 UPO (GRPO) steps on a text task -> throughput of a ~200M
#   ModernBERT-shaped masked LM (forwards/s, decoded positions/s). Exits non-zero on any failure.
# Usage: scripts/gpu_smoke.sh [--out benchmarks/gpu_smoke.json] [--allow-cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
# Nothing may reach the network: every model here is built from a config.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec timeout 300 "$PY" scripts/gpu_smoke.py "$@"
