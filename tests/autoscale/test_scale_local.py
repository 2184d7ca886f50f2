"""`blockctl scale --instances` on a real local cluster: up with a cold start, down with streams in flight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from blockctl.cluster import procs
from blockctl.cluster.state import load_state
from tests.conftest import CLI_WIDTH, free_base_port

pytestmark = pytest.mark.slow


def blockctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(CLI_WIDTH), "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "blockctl", *args], capture_output=True, text=True, env=env,
                          timeout=180)
    assert done.returncode == 0, f"blockctl {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    base = free_base_port()
    try:
        blockctl("up", "--local", "--instances", "2", "--base-port", str(base), "--state-dir", str(tmp_path),
                 "--max-num-seqs", "8")
        yield tmp_path, base
    finally:
        subprocess.run([sys.executable, "-m", "blockctl", "down", "--state-dir", str(tmp_path)],
                       capture_output=True, timeout=120)


def stream(url: str, n: int, out: dict[int, tuple[str, int, str | None]]) -> None:
    """One streaming completion through the scheduler: (instance, tokens counted, error)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    tokens, instance, error = 0, "?", None
    try:
        raw = client.completions.with_raw_response.create(
            model="emulated", prompt=f"tell a long story {n}", max_tokens=300, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        instance = raw.headers["x-blockctl-instance"]
        for chunk in raw.parse():
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    except openai.OpenAIError as exc:
        error = repr(exc)
    finally:
        client.close()
    out[n] = (instance, tokens, error)


def test_scale_up_then_down_while_streams_are_in_flight(cluster: tuple[Path, int]) -> None:
    sd, base = cluster
    url = f"http://127.0.0.1:{base}"
    up = blockctl("scale", "--instances", "3", "--startup-delay", "1", "--state-dir", str(sd))
    assert "i2 serving" in up.stdout
    state = load_state(sd)
    assert state is not None and [i.name for i in state.serving()] == ["i0", "i1", "i2"]
    i2 = state.instances[2]
    assert i2.settings["startup_s"] >= 1.0  # the emulated cold start was waited out and measured
    pids = {i.name: i.pids for i in state.instances}

    results: dict[int, tuple[str, int, str | None]] = {}
    threads = [threading.Thread(target=stream, args=(url, n, results)) for n in range(9)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    time.sleep(0.5)  # every stream has been routed and is producing
    down = subprocess.run([sys.executable, "-m", "blockctl", "scale", "--instances", "1", "--state-dir", str(sd)],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": str(CLI_WIDTH)})
    for t in threads:
        t.join(120)
    assert down.returncode == 0, down.stderr
    assert all(err is None and tokens == 300 for _, tokens, err in results.values()), results
    state = load_state(sd)
    assert state is not None and len(state.instances) == 1
    kept = state.instances[0].name
    removed = {n for n in pids if n != kept}
    assert len(removed) == 2 and any(inst in removed for inst, _, _ in results.values())  # drained mid-stream
    for name in removed:
        assert not any(procs._running(pid) for pid in pids[name].values())
    after: dict[int, tuple[str, int, str | None]] = {}
    stream(url, 99, after)
    assert after[99][0] == kept and after[99][2] is None


def test_scale_auto_advisory_logs_without_acting(cluster: tuple[Path, int]) -> None:
    sd, _ = cluster
    blockctl("scale", "--auto", "--advisory", "--policy", "predictive", "--min", "1", "--max", "3",
             "--interval", "0.5", "--state-dir", str(sd))
    deadline = time.monotonic() + 60
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline and len(lines) < 3:
        time.sleep(0.5)
        path = sd / "autoscaler.jsonl"
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    assert len(lines) >= 3 and all(x["advisory"] for x in lines)
    assert any(x["action"] == "down" for x in lines)  # idle: it would give one back (min is 1) ...
    state = load_state(sd)
    assert state is not None and len(state.serving()) == 2  # ... but advisory mode changes nothing
    blockctl("down", "--state-dir", str(sd))
    assert not (sd / "autoscaler.json").exists()
