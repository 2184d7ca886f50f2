"""SSH servers for tests: a real OpenSSH sshd on a loopback port (optionally in a network namespace), and
asyncssh's in-process server whose sessions run their commands in a real local shell."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncssh

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    client_key: Path  # private key that the server accepts
    known_hosts: Path  # trusts exactly this server's host key at host:port


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def known_hosts_line(host: str, port: int, pub_key: Path) -> str:
    return f"[{host}]:{port} {pub_key.read_text().split()[0]} {pub_key.read_text().split()[1]}\n"


def sshd_usable() -> str | None:
    """None when a real sshd can be started here, else why not."""
    if not Path(SSHD).exists():
        return "OpenSSH server missing (apt-get install -y openssh-server)"
    if os.geteuid() != 0:
        return "starting sshd on loopback needs root"
    return None


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"sshd exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}"
            )
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {host}:{port}")


def start_sshd(
    workdir: Path, host: str, port: int, *, netns: str | None = None
) -> tuple[subprocess.Popen[bytes], SshServer]:
    """Start ``sshd -D`` with its own config, host key and authorized_keys; the caller terminates it."""
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = keygen(workdir / "host_ed25519")
    client_key = keygen(workdir / "client_ed25519")
    (workdir / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    (workdir / "known_hosts").write_text(known_hosts_line(host, port, Path(f"{host_key}.pub")))
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {host}\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {workdir}/authorized_keys\n"
        f"PidFile {workdir}/sshd.pid\nStrictModes no\nUsePAM no\nPermitRootLogin yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "Subsystem sftp internal-sftp\nMaxSessions 50\nMaxStartups 50\nLogLevel INFO\n"
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
    cmd = [SSHD, "-D", "-e", "-f", str(config)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    # Its log goes to a file: a pipe nobody reads would fill up and block sshd after many connections.
    with (workdir / "sshd.log").open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    _wait_port(
        host, port, proc, workdir / "sshd.log"
    )  # a namespace's address is routed from here by its veth pair
    return proc, SshServer(host, port, "root", client_key, workdir / "known_hosts")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- asyncssh's in-process server: real SSH protocol, commands run by a real local shell -----------------


class _Dropper:
    """Drops the whole SSH connection the first time a command contains ``needle`` (a transport failure)."""

    def __init__(self, needle: str | None) -> None:
        self.needle = needle
        self.dropped = 0

    async def __call__(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        if self.needle and not self.dropped and self.needle in (process.command or ""):
            self.dropped += 1
            process.channel.get_extra_info("connection").abort()
            return
        await _run_in_shell(process)


async def _run_in_shell(process: asyncssh.SSHServerProcess[bytes]) -> None:
    local = await asyncio.create_subprocess_shell(
        process.command or "true",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert local.stdin and local.stdout and local.stderr

    async def feed() -> None:
        assert local.stdin
        try:
            async for chunk in process.stdin:  # type: ignore[attr-defined]
                local.stdin.write(chunk)
                await local.stdin.drain()
        except (asyncssh.Error, ConnectionError, BrokenPipeError):
            pass
        finally:
            local.stdin.close()

    async def pump(src: asyncio.StreamReader, dst: asyncssh.SSHWriter[bytes]) -> None:
        while chunk := await src.read(65536):
            dst.write(chunk)

    feeder = asyncio.create_task(feed())
    await asyncio.gather(pump(local.stdout, process.stdout), pump(local.stderr, process.stderr))
    status = await local.wait()
    feeder.cancel()
    await asyncio.gather(feeder, return_exceptions=True)
    process.exit(status)


@asynccontextmanager
async def inprocess_server(workdir: Path, *, drop_once: str | None = None) -> AsyncIterator[SshServer]:
    """asyncssh server on a free loopback port, with SFTP on the local filesystem.

    ``drop_once``: abort the connection the first time a command contains this text.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = keygen(workdir / "ip_host_ed25519")
    client_key = keygen(workdir / "ip_client_ed25519")
    server = await asyncssh.create_server(
        asyncssh.SSHServer,
        "127.0.0.1",
        0,
        server_host_keys=[str(host_key)],
        authorized_client_keys=f"{client_key}.pub",
        process_factory=_Dropper(drop_once),
        sftp_factory=True,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    known = workdir / "ip_known_hosts"
    known.write_text(known_hosts_line("127.0.0.1", port, Path(f"{host_key}.pub")))
    try:
        yield SshServer("127.0.0.1", port, os.environ.get("USER", "root"), client_key, known)
    finally:
        server.close()
        await server.wait_closed()


# --- network namespaces as separate hosts ---------------------------------------------------------------


def netns_usable() -> str | None:
    """None when network namespaces can be made here (root and ip(8)), else why not."""
    if sshd_usable():
        return sshd_usable()
    if not shutil.which("ip"):
        return "ip(8) missing (apt-get install -y iproute2)"
    probe = f"blkprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def make_netns_host(name: str, subnet: int) -> str:
    """Namespace ``name`` joined to this one by a veth pair: here 10.213.S.1, there 10.213.S.2 (returned)."""
    here, there = f"{name}h", f"{name}n"
    _ip("netns", "add", name)
    _ip("link", "add", here, "type", "veth", "peer", "name", there)
    _ip("link", "set", there, "netns", name)
    _ip("addr", "add", f"10.213.{subnet}.1/24", "dev", here)
    _ip("link", "set", here, "up")
    _ip("netns", "exec", name, "ip", "addr", "add", f"10.213.{subnet}.2/24", "dev", there)
    _ip("netns", "exec", name, "ip", "link", "set", there, "up")
    _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
    return f"10.213.{subnet}.2"


def remove_netns_host(name: str) -> None:
    subprocess.run(
        ["ip", "netns", "del", name], check=False, capture_output=True
    )  # takes the veth pair along
