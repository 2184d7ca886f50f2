"""`up` then `up` again (converges, keeps healthy processes) then `down`, over asyncssh's in-process server:
the "GPU host" is this machine running the emulator as its engine through the same code path as vLLM."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from blockctl.cluster.ssh import lifecycle
from blockctl.cluster.state import load_state, read_token
from tests.conftest import free_port
from tests.ssh.conftest import make_spec
from tests.ssh.procs import procs_with, wait_gone
from tests.ssh.servers import SshServer


@pytest.mark.slow
async def test_up_converges_then_down_stops_everything(ssh_server: SshServer, tmp_path: Path) -> None:
    engine_port, agent_port = free_port(), free_port()
    spec = make_spec(
        ssh_server,
        tmp_path / "host",
        ports={"engine": engine_port, "agent": agent_port},
        model={"id": "tiny", "max_num_seqs": 8},
        hosts=[
            {
                "address": ssh_server.host,
                "name": "h1",
                "port": ssh_server.port,
                "user": ssh_server.user,
                "identity_file": str(ssh_server.client_key),
                "root": str(tmp_path / "host"),
                "agent_bind": "127.0.0.1",
            }
        ],
    )
    state_dir = tmp_path / "state"
    state, outcomes = await lifecycle.up(spec, spec_file="cluster.yaml", state_dir=state_dir)
    try:
        assert [o.error for o in outcomes] == [None], outcomes[0].error
        (inst,) = state.instances
        assert (
            state.kind == "ssh" and inst.name == "h1-0" and inst.agent_url == f"http://127.0.0.1:{agent_port}"
        )
        assert load_state(state_dir) == state
        token = read_token(state_dir)
        remote_token = tmp_path / "host" / "run" / "token"
        assert token and remote_token.read_text().strip() == token
        assert stat.S_IMODE(remote_token.stat().st_mode) == 0o600
        for proc in procs_with(f"--port {agent_port}"):  # the token is never on a command line
            assert token not in " ".join(proc.cmdline())
        async with httpx.AsyncClient(base_url=inst.agent_url, timeout=30, trust_env=False) as client:
            assert (
                await client.post("/predict", json={"prompt_tokens": 10, "predicted_output_tokens": 5})
            ).status_code == 401
            pred = await client.post(
                "/predict",
                json={"prompt_tokens": 10, "predicted_output_tokens": 5},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert pred.status_code == 200 and pred.json()["e2e_s"] > 0
            done = await client.post(
                "/v1/completions",
                json={"model": "tiny", "prompt": "hi", "max_tokens": 4},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] == 4

        lines: list[str] = []
        await lifecycle.remote_logs(state_dir, "h1", "engine", lines=5, follow=False, write=lines.append)
        assert lines[0].startswith("==> h1:") and lines[0].endswith("engine-0.log <==") and len(lines) == 2
        followed: list[str] = []
        follow = asyncio.create_task(
            lifecycle.remote_logs(state_dir, "h1", "agent", lines=3, follow=True, write=followed.append)
        )
        for _ in range(200):
            if followed:
                break
            await asyncio.sleep(0.05)
        follow.cancel()  # what Ctrl-C does
        await asyncio.gather(follow, return_exceptions=True)
        assert followed and not any(token in line for line in followed)

        again, outcomes = await lifecycle.up(spec, spec_file="cluster.yaml", state_dir=state_dir)
        assert outcomes[0].error is None
        assert again.instances[0].pids == inst.pids  # healthy engine and agent kept
        assert "h1-0: engine kept, agent kept" in outcomes[0].notes
    finally:
        downs = await lifecycle.down(state_dir)
    assert [d.error for d in downs] == [None]
    assert wait_gone(f"--port {engine_port}", f"--port {agent_port}") == []
    log = (state_dir / "logs" / "ssh" / "h1.log").read_text()
    for stage in (
        "connect",
        "probe",
        "plan",
        "install",
        "token",
        "start-engine",
        "wait-engine",
        "start-agent",
        "wait-agent",
        "stop",
    ):
        assert f"[{stage}] done" in log, stage
    assert token not in log


@pytest.mark.slow
async def test_changed_spec_restarts_and_removed_host_is_stopped(
    ssh_server: SshServer, tmp_path: Path
) -> None:
    def host(name: str) -> dict[str, Any]:
        return {
            "address": ssh_server.host,
            "name": name,
            "port": ssh_server.port,
            "user": ssh_server.user,
            "identity_file": str(ssh_server.client_key),
            "root": str(tmp_path / name),
            "agent_bind": "127.0.0.1",
            "ports": {"engine": free_port(), "agent": free_port()},
        }

    h1, h2 = host("h1"), host("h2")
    state_dir = tmp_path / "state"
    first, outcomes = await lifecycle.up(
        make_spec(ssh_server, tmp_path, hosts=[h1]), spec_file="a.yaml", state_dir=state_dir
    )
    try:
        assert outcomes[0].error is None
        changed = make_spec(ssh_server, tmp_path, hosts=[h1], engine={"kind": "emulator", "env": {"X": "1"}})
        second, outcomes = await lifecycle.up(changed, spec_file="a.yaml", state_dir=state_dir)
        assert outcomes[0].error is None and "h1-0: engine started, agent kept" in outcomes[0].notes
        assert second.instances[0].pids["engine"] != first.instances[0].pids["engine"]
        assert procs_with(f"--port {h1['ports']['engine']}")  # the new one runs
        third, outcomes = await lifecycle.up(
            make_spec(ssh_server, tmp_path, hosts=[h2]),
            spec_file="a.yaml",
            state_dir=state_dir,
        )
        assert [i.host for i in third.instances] == ["h2"]
        ports = h1["ports"]
        assert wait_gone(f"--port {ports['engine']}", f"--port {ports['agent']}") == []
    finally:
        await lifecycle.down(state_dir)
    ports = h2["ports"]
    assert wait_gone(f"--port {ports['engine']}", f"--port {ports['agent']}") == []


@pytest.mark.slow
async def test_standby_host_is_added_then_removed(ssh_server: SshServer, tmp_path: Path) -> None:
    def host(name: str, **kw: Any) -> dict[str, Any]:
        return {
            "address": ssh_server.host,
            "name": name,
            "port": ssh_server.port,
            "user": ssh_server.user,
            "identity_file": str(ssh_server.client_key),
            "root": str(tmp_path / name),
            "agent_bind": "127.0.0.1",
            "ports": {"engine": free_port(), "agent": free_port()},
            **kw,
        }

    active, spare = host("active"), host("spare", standby=True)
    state_dir = tmp_path / "state"
    state, _ = await lifecycle.up(
        make_spec(ssh_server, tmp_path, hosts=[active, spare]), spec_file="a.yaml", state_dir=state_dir
    )
    try:
        assert [i.host for i in state.instances] == ["active"]
        added = await lifecycle.add_host(state_dir, "spare")
        assert added.ok and [i.name for i in added.instances] == ["spare-0"]
        recorded = load_state(state_dir)
        assert recorded is not None and sorted(i.host for i in recorded.instances) == ["active", "spare"]
        removed = await lifecycle.remove_host(state_dir, "spare")
        assert removed.ok
        recorded = load_state(state_dir)
        assert recorded is not None and [i.host for i in recorded.instances] == ["active"]
        ports = spare["ports"]
        assert wait_gone(f"--port {ports['engine']}", f"--port {ports['agent']}") == []
    finally:
        await lifecycle.down(state_dir)


@pytest.mark.slow
async def test_up_measures_the_engine_and_keeps_the_profile_per_host(ssh_server: SshServer, tmp_path: Path) -> None:
    """profiles.measure: `blockctl profile engine` runs on the host against the new engine (here the emulator)
    before its agent starts, and the agent predicts with the measured profile; a second `up` keeps it."""
    engine_port, agent_port = free_port(), free_port()
    spec = make_spec(ssh_server, tmp_path / "host", ports={"engine": engine_port, "agent": agent_port},
                     model={"id": "llama-2-7b", "max_num_seqs": 4, "max_model_len": 512},
                     profiles={"measure": True})
    state_dir = tmp_path / "state"
    state, outcomes = await lifecycle.up(spec, spec_file="cluster.yaml", state_dir=state_dir)
    try:
        assert [o.error for o in outcomes] == [None], outcomes[0].error
        (measured,) = (tmp_path / "host" / "profiles").glob("h1-0-*.json")
        (inst,) = state.instances
        headers = {"Authorization": f"Bearer {read_token(state_dir)}"}
        live = httpx.get(f"{inst.agent_url}/state", headers=headers, timeout=10, trust_env=False).json()
        assert live["profile"] == measured.stem
        before = measured.stat().st_mtime
        _, again = await lifecycle.up(spec, spec_file="cluster.yaml", state_dir=state_dir)
        assert [o.error for o in again] == [None] and measured.stat().st_mtime == before
    finally:
        await lifecycle.down(state_dir)
