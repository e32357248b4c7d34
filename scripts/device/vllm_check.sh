#!/usr/bin/env bash
# The vLLM backend's GPU check (issue 25), prepared to run on a lent GPU machine from the repository root:
#   1. equivalence on the tiny models (tests/engines/test_vllm.py, GPU tests included);
#   2. throughput against the PyTorch path on a Qwen2-0.5B-shaped random model (icae.benchmarks.engines_vllm).
# It needs a Python with this project, torch with CUDA and vllm installed (the machine reaches no registry: bring
# them). Results go to $OUT (default ./out). About 5 minutes on one H200.
set -uo pipefail
OUT="${OUT:-out}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
if ! "$PY" -c "import torch, vllm, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>"$OUT/import.txt"; then
  echo "vllm_check: vllm or a GPU is missing here (see $OUT/import.txt); nothing was measured" | tee "$OUT/summary.txt"
  exit 3
fi
timeout 300 "$PY" -m pytest -q -rs tests/engines/test_vllm.py 2>&1 | tee "$OUT/tests.txt"
timeout 300 "$PY" -m icae.benchmarks.engines_vllm --work "$OUT/bench" --requests 64 --context 2048 \
  --new-tokens 64 2>&1 | tail -5 | tee "$OUT/bench.txt"
