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
ruff check blockctl agents profiles tests
mypy
pytest "$@"
