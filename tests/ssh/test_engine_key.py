"""``engine.api_key_file`` over SSH (asyncssh's in-process server, a real shell, emulator engine): the engine
requires the key, the agent sends it, and the key is only ever in 0600 files, never on a command line."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from blockctl.cluster.spec import parse_spec
from blockctl.cluster.ssh.bootstrap import bring_up_host
from blockctl.cluster.ssh.lifecycle import down_instances
from tests.conftest import free_port
from tests.ssh.conftest import make_spec
from tests.ssh.procs import wait_gone
from tests.ssh.servers import SshServer

KEY = "ek-5e3d41c2"


@pytest.mark.slow
async def test_up_gives_the_engine_its_key_through_private_files(ssh_server: SshServer, tmp_path: Path) -> None:
    key_file = tmp_path / "engine.key"
    key_file.write_text(KEY + "\n")
    os.chmod(key_file, 0o600)
    base = make_spec(ssh_server, tmp_path / "host", ports={"engine": free_port(), "agent": free_port()},
                     engine={"kind": "emulator", "health_timeout_s": 60, "api_key_file": str(key_file)})
    data = base.model_dump(mode="json")
    data["hosts"] = [{**data["hosts"][0], "agent_bind": "127.0.0.1"}]
    spec = parse_spec(data)
    out = await bring_up_host(spec, spec.hosts[0], token="t0k", wheel=None, logs_dir=tmp_path / "logs")
    try:
        assert out.error is None, out.error
        run = tmp_path / "host" / "run"
        secret_files = [p for p in run.iterdir() if KEY in p.read_text(errors="replace")]
        assert sorted(p.name for p in secret_files) == ["engine-0.env", "engine_key"]
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in secret_files)
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in out.instances[0].pids.values()]
        assert cmdlines and not any(KEY.encode() in c for c in cmdlines)
        engine = f"http://127.0.0.1:{spec.ports.engine}"
        body = {"prompt": "hi", "max_tokens": 3}
        async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
            assert (await http.post(f"{engine}/v1/completions", json=body)).status_code == 401
            via_agent = await http.post(f"{out.instances[0].agent_url}/v1/completions", json=body,
                                        headers={"authorization": "Bearer t0k"})
            assert via_agent.status_code == 200, via_agent.text
        assert KEY not in (tmp_path / "logs" / "ssh" / "h1.log").read_text()
    finally:
        await down_instances(spec, out.instances, state_dir=tmp_path / "state")
    assert wait_gone(f"--port {spec.ports.engine}", f"--port {spec.ports.agent}") == []
