"""Each bootstrap failure gives one clear per-host error (host, stage, exit status, log tail) and leaves no
process behind; the other hosts are unaffected. Runs over asyncssh's in-process server (a real shell)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from blockctl.cluster.spec import ClusterSpec, parse_spec
from blockctl.cluster.ssh.bootstrap import bring_up, bring_up_host
from blockctl.cluster.ssh.lifecycle import down_instances
from tests.conftest import free_port
from tests.ssh.conftest import make_spec
from tests.ssh.procs import wait_gone
from tests.ssh.servers import SshServer, inprocess_server

SLEEPER = "{python} -c 'import time; time.sleep(300)' --port {port}"
CRASHER = "sh -c 'echo weights-not-found >&2; exit 3' --port {port}"


def custom(server: SshServer, root: Path, command: str, timeout: float = 60) -> ClusterSpec:
    port = free_port()
    return make_spec(
        server,
        root,
        engine={"kind": "custom", "command": command, "health_timeout_s": timeout},
        ports={"engine": port, "agent": free_port()},
    )


async def test_engine_never_healthy_is_stopped_and_reported(ssh_server: SshServer, tmp_path: Path) -> None:
    spec = custom(ssh_server, tmp_path / "host", SLEEPER, timeout=2)
    out = await bring_up_host(spec, spec.hosts[0], token="t0k", wheel=None, logs_dir=tmp_path / "logs")
    err = out.error
    assert err is not None and err.host == "h1" and err.stage == "wait-engine" and err.exit_status == 4
    assert "not healthy" in err.message and "within 2s" in err.message
    assert err.hint == "blockctl logs h1 --engine"
    port = spec.ports.engine
    assert wait_gone(f"--port {port}") == []
    assert not list((tmp_path / "host" / "run").glob("*.pid"))
    log = (tmp_path / "logs" / "ssh" / "h1.log").read_text()
    assert "[wait-engine] FAILED" in log and "[cleanup] done" in log and "t0k" not in log


async def test_engine_that_exits_shows_its_log_tail(ssh_server: SshServer, tmp_path: Path) -> None:
    spec = custom(ssh_server, tmp_path / "host", CRASHER)
    t0 = time.monotonic()
    out = await bring_up_host(spec, spec.hosts[0], token="t", wheel=None, logs_dir=tmp_path / "logs")
    assert time.monotonic() - t0 < 30  # noticed the death, did not wait for the timeout
    assert out.error is not None and out.error.stage == "wait-engine" and out.error.exit_status == 3
    assert "exited before" in out.error.message and "weights-not-found" in out.error.stderr_tail


async def test_stage_exiting_nonzero_names_stage_and_status(ssh_server: SshServer, tmp_path: Path) -> None:
    spec = make_spec(
        ssh_server, tmp_path / "host", install={"mode": "existing", "venv": str(tmp_path / "novenv")}
    )
    out = await bring_up_host(spec, spec.hosts[0], token="t", wheel=None, logs_dir=tmp_path / "logs")
    assert out.error is not None and out.error.stage == "install" and out.error.exit_status == 127
    assert "cannot import blockctl" in out.error.message and "install.mode: wheel" in (out.error.hint or "")
    assert out.instances == []


@pytest.mark.slow
async def test_failed_hosts_do_not_stop_the_others(ssh_server: SshServer, tmp_path: Path) -> None:
    base = make_spec(ssh_server, tmp_path / "a", ports={"engine": free_port(), "agent": free_port()})
    data = base.model_dump(mode="json")
    data["hosts"] = [
        {**data["hosts"][0], "name": "healthy", "agent_bind": "127.0.0.1"},
        {**data["hosts"][0], "name": "refused", "port": free_port()},
        {**data["hosts"][0], "name": "badkey", "identity_file": str(tmp_path / "nokey")},
        {**data["hosts"][0], "name": "standby", "standby": True},
    ]
    spec = parse_spec(data)
    outcomes = await bring_up(spec, token="t", logs_dir=tmp_path / "logs")
    by_host = {o.host: o for o in outcomes}
    assert list(by_host) == ["healthy", "refused", "badkey"]  # standby hosts are not started
    refused, badkey = by_host["refused"].error, by_host["badkey"].error
    assert refused is not None and "connection refused" in refused.message
    assert badkey is not None and badkey.stage == "connect"
    healthy = by_host["healthy"]
    try:
        assert healthy.error is None and [i.name for i in healthy.instances] == ["healthy-0"]
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.get(f"{healthy.instances[0].agent_url}/health")).status_code == 200
    finally:
        await down_instances(spec, healthy.instances, state_dir=tmp_path / "state")
    assert wait_gone(f"--port {spec.ports.engine}", f"--port {spec.ports.agent}") == []


async def test_transport_failure_mid_bootstrap_reruns_the_stages_once(tmp_path: Path) -> None:
    async with inprocess_server(tmp_path / "keys", drop_once="nvidia-smi") as server:
        spec = custom(server, tmp_path / "host", CRASHER)
        out = await bring_up_host(spec, spec.hosts[0], token="t", wheel=None, logs_dir=tmp_path / "logs")
    log = (tmp_path / "logs" / "ssh" / "h1.log").read_text()
    assert "[probe] FAILED" in log and "connection lost" in log
    assert "re-running the (idempotent) stages once" in log
    assert log.count("[connect] connected to") == 2
    # The second run got past the probe; what stops it now is the engine itself, not the transport.
    assert (
        out.error is not None
        and out.error.stage == "wait-engine"
        and "weights-not-found" in out.error.stderr_tail
    )
