"""SSH connection layer against asyncssh's in-process server: host keys, auth, refused, exit codes, SFTP."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from blockctl.cluster.spec import HostSpec, SshSpec
from blockctl.cluster.ssh.connection import TransportFailure, connect
from blockctl.cluster.ssh.hostlog import HostLog
from blockctl.errors import HostError
from tests.conftest import free_port
from tests.ssh.servers import SshServer, keygen


def host_of(server: SshServer, **kw: object) -> HostSpec:
    base: dict[str, object] = {
        "address": server.host,
        "name": "h1",
        "port": server.port,
        "user": server.user,
        "identity_file": str(server.client_key),
    }
    base.update(kw)
    return HostSpec.model_validate(base)


def ssh_of(server: SshServer, **kw: object) -> SshSpec:
    base: dict[str, object] = {"known_hosts": str(server.known_hosts), "connect_timeout_s": 5}
    base.update(kw)
    return SshSpec.model_validate(base)


async def test_run_returns_exit_status_and_output(ssh_server: SshServer, tmp_path: Path) -> None:
    log = HostLog(tmp_path / "h1.log", "h1")
    conn = await connect(host_of(ssh_server), ssh_of(ssh_server), log)
    try:
        ok = await conn.run("echo hello; echo warn >&2")
        assert (ok.exit_status, ok.stdout.strip(), ok.stderr.strip()) == (0, "hello", "warn")
        with pytest.raises(HostError) as info:
            await conn.run("echo some-problem >&2; exit 7")
        assert info.value.exit_status == 7 and info.value.host == "h1"
        assert "some-problem" in info.value.stderr_tail
        unchecked = await conn.run("exit 5", check=False)
        assert unchecked.exit_status == 5
    finally:
        await conn.close()
    text = log.path.read_text()
    assert "$ echo hello" in text and "exit 7" in text


async def test_write_file_creates_it_private(ssh_server: SshServer, tmp_path: Path) -> None:
    conn = await connect(host_of(ssh_server), ssh_of(ssh_server), HostLog(tmp_path / "l.log", "h1"))
    target = tmp_path / "remote" / "run" / "token"
    target.parent.mkdir(parents=True)
    target.write_text("old")
    os.chmod(target, 0o644)
    peek = tmp_path / "peek"  # another name for the old, world-readable file
    os.link(target, peek)
    try:
        await conn.write_file(str(target), b"s3cret\n")
    finally:
        await conn.close()
    assert target.read_text() == "s3cret\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert peek.read_text() == "old"  # the secret never went into the 0644 file
    assert sorted(p.name for p in target.parent.iterdir()) == ["token"]  # no temporary file left
    assert "s3cret" not in (tmp_path / "l.log").read_text()


async def test_unknown_host_key_is_refused_unless_opted_out(ssh_server: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    log = HostLog(tmp_path / "l.log", "h1")
    with pytest.raises(HostError) as info:
        await connect(host_of(ssh_server), ssh_of(ssh_server, known_hosts=str(empty)), log)
    assert info.value.stage == "connect" and "not trusted" in info.value.message
    assert not isinstance(info.value, TransportFailure)  # never retried
    assert info.value.hint and "ssh-keyscan" in info.value.hint
    conn = await connect(
        host_of(ssh_server),
        ssh_of(ssh_server, known_hosts=str(empty), insecure_skip_host_key_check=True),
        log,
    )
    await conn.close()


async def test_wrong_key_is_permission_denied(ssh_server: SshServer, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_key")
    with pytest.raises(HostError) as info:
        await connect(
            host_of(ssh_server, identity_file=str(other)),
            ssh_of(ssh_server),
            HostLog(tmp_path / "l.log", "h1"),
        )
    assert "permission denied" in info.value.message and info.value.stage == "connect"
    assert not isinstance(info.value, TransportFailure)


async def test_connection_refused_is_retried_then_reported(tmp_path: Path) -> None:
    server = SshServer("127.0.0.1", free_port(), "root", tmp_path / "k", tmp_path / "kh")
    (tmp_path / "kh").write_text("")
    log = HostLog(tmp_path / "l.log", "h1")
    start = time.monotonic()
    with pytest.raises(TransportFailure) as info:
        await connect(
            host_of(server, identity_file=None), ssh_of(server, connect_attempts=3), log, backoff_s=0.05
        )
    assert time.monotonic() - start < 5
    assert "connection refused" in info.value.message and f":{server.port}" in info.value.message
    assert log.path.read_text().count("connection refused") == 3
