"""`blockctl up -c` / `down` on an SSH cluster: the CLI's glue around the SSH lifecycle (faked at that seam)
starts and stops the local scheduler daemons the spec asks for."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from blockctl.cli.main import app
from blockctl.cluster import procs
from blockctl.cluster.ssh import lifecycle
from blockctl.cluster.ssh.bootstrap import HostOutcome
from blockctl.cluster.state import ClusterState, InstanceState, load_state, save_state

SPEC = """
hosts:
  - address: gpu-a
model:
  id: tiny
scheduler:
  daemons: 2
  port: {port}
  policy: round-robin
"""


def _free_pair() -> int:
    for _ in range(200):
        port = random.randrange(41000, 60000)
        if procs.port_free(port) and procs.port_free(port + 1):
            return port
    raise RuntimeError("no free ports")


def test_up_c_starts_the_spec_schedulers_and_down_stops_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_pair()
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(SPEC.format(port=port))
    state_dir = tmp_path / "state"
    downs: list[Path] = []

    async def fake_up(spec: Any, *, spec_file: str, state_dir: Path) -> tuple[ClusterState, list[HostOutcome]]:
        inst = InstanceState(name="gpu-a/0", host="gpu-a", agent_url="http://127.0.0.1:9", engine_url="e",
                             profile="h100/llama-2-7b")
        state = ClusterState(kind="ssh", policy=spec.scheduler.policy, instances=(inst,))
        save_state(state_dir, state)
        return state, [HostOutcome(host="gpu-a", instances=[inst], notes=["engine-0: started"])]

    async def fake_down(state_dir: Path) -> list[HostOutcome]:
        downs.append(state_dir)
        return [HostOutcome(host="gpu-a")]

    monkeypatch.setattr(lifecycle, "up", fake_up)
    monkeypatch.setattr(lifecycle, "down", fake_down)
    runner = CliRunner()
    try:
        result = runner.invoke(app, ["up", "-c", str(spec_file), "--state-dir", str(state_dir)])
        assert result.exit_code == 0, result.output
        assert "gpu-a: 1 instance(s) (engine-0: started)" in result.output
        state = load_state(state_dir)
        assert state is not None and state.kind == "ssh"
        assert [s.url for s in state.schedulers] == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
        for sched in state.schedulers:
            health = httpx.get(f"{sched.url}/health", timeout=5).json()
            assert health == {"status": "ok", "policy": "round-robin", "instances": 1, "out_of_rotation": {}}
    finally:
        result = runner.invoke(app, ["down", "--state-dir", str(state_dir)])
    assert result.exit_code == 0, result.output
    assert "stopped 2 local process(es)" in result.output
    assert downs == [state_dir]
    assert load_state(state_dir) is None


def test_up_needs_exactly_one_of_local_or_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["up", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "give exactly one of --local or -c FILE" in result.output


def test_reaching_a_host_prints_no_library_warning() -> None:
    """asyncssh's DSA support warns under cryptography 51; blockctl never offers DSA, so a user never sees it."""
    run = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import blockctl.cluster.ssh.connection"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
