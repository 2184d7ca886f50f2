"""End to end through the real CLI and a real OpenSSH sshd on loopback: `up -c`, status, a request through the
scheduler with the openai client, `logs`, `down`; and the per-host errors of a wrong key and an unknown host key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.conftest import free_port
from tests.ssh.procs import blockctl, free_port_pair, wait_gone
from tests.ssh.servers import SshServer, keygen

pytestmark = [pytest.mark.ssh, pytest.mark.slow]


def spec_file(tmp_path: Path, server: SshServer, **host: Any) -> tuple[Path, dict[str, Any]]:
    data: dict[str, Any] = {
        "hosts": [
            {
                "address": server.host,
                "name": "gpu1",
                "port": server.port,
                "user": server.user,
                "identity_file": str(server.client_key),
                "root": str(tmp_path / "remote-home"),
                "instances": 2,
                **host,
            }
        ],
        "model": {"id": "tiny-llama", "max_num_seqs": 16},
        "engine": {"kind": "emulator", "health_timeout_s": 120},
        "scheduler": {"port": free_port(), "policy": "block"},
        "ssh": {"known_hosts": str(server.known_hosts)},
        "install": {"mode": "existing", "venv": sys.prefix},
    }
    # Two instances use base + 0 and base + 1: both must be free.
    data["ports"] = {"engine": free_port_pair(), "agent": free_port_pair()}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, data


def test_up_status_request_logs_down(sshd: SshServer, tmp_path: Path) -> None:
    path, data = spec_file(tmp_path, sshd)
    state = tmp_path / "state"
    up = blockctl(state, "up", "-c", str(path))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "gpu1: 2 instance(s)" in up.stdout and "OpenAI endpoint" in up.stdout
        status = blockctl(state, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "gpu1-0" in status.stdout and "gpu1-1" in status.stdout
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{data['scheduler']['port']}/v1",
            api_key="x",
            max_retries=0,
            timeout=60,
        )
        done = client.completions.create(model="tiny-llama", prompt="hello there", max_tokens=5)
        assert done.usage is not None and done.usage.completion_tokens == 5
        logs = blockctl(state, "logs", "gpu1", "--agent", "-n", "5")
        assert logs.returncode == 0 and "agent-0.log" in logs.stdout and "agent-1.log" in logs.stdout
        boot = blockctl(state, "logs", "gpu1")
        assert "[wait-agent] done" in boot.stdout
    finally:
        down = blockctl(state, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "gpu1: stopped" in down.stdout
    ports = data["ports"]
    assert wait_gone(*(f"--port {ports[r] + i}" for r in ("engine", "agent") for i in (0, 1))) == []


def test_wrong_key_and_unknown_host_key_are_clear_per_host_errors(sshd: SshServer, tmp_path: Path) -> None:
    path, data = spec_file(tmp_path, sshd, identity_file=str(keygen(tmp_path / "stranger")))
    data["hosts"].append({**data["hosts"][0], "name": "gpu2", "identity_file": str(sshd.client_key)})
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    data["ssh"]["known_hosts"] = str(empty)
    path.write_text(yaml.safe_dump(data))
    up = blockctl(tmp_path / "state", "up", "-c", str(path))
    assert up.returncode == 1
    err = up.stderr
    assert "gpu1: stage 'connect' failed: host key of" in err  # checked before any key is offered
    assert "gpu2: stage 'connect' failed: host key of 127.0.0.1" in err and "not trusted" in err
    assert "no host came up" in err
    # With the host key trusted, the stranger key is refused and the right key would pass.
    data["ssh"]["known_hosts"] = str(sshd.known_hosts)
    data["hosts"] = data["hosts"][:1]
    path.write_text(yaml.safe_dump(data))
    up = blockctl(tmp_path / "state", "up", "-c", str(path))
    err = up.stderr
    assert up.returncode == 1 and "gpu1: stage 'connect' failed: permission denied for root" in err
