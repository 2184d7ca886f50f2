"""One SSH connection to one host: connect with host-key checking, run commands, write files by SFTP.

Failures become ``HostError`` naming host and stage. ``TransportFailure`` (a HostError) marks failures of the
connection itself — the only ones worth retrying; a command that ran and exited non-zero is never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # cryptography 51 deprecates DSA and warns when asyncssh imports its DSA support; blockctl never uses DSA keys,
    # and the warning would print on every command that reaches a host.
    warnings.filterwarnings("ignore", message="DSA is deprecated")
    import asyncssh

from blockctl.cluster.spec import HostSpec, SshSpec
from blockctl.cluster.ssh.hostlog import HostLog, tail_text
from blockctl.errors import HostError


class TransportFailure(HostError):
    """The SSH transport failed (refused, timed out, dropped); retrying may help."""


@dataclass(frozen=True, slots=True)
class Completed:
    exit_status: int | None  # None when the command was killed by a signal
    stdout: str
    stderr: str


def connect_options(host: HostSpec, ssh: SshSpec) -> dict[str, Any]:
    """asyncssh.connect keyword arguments; unset spec keys are left to ~/.ssh/config and asyncssh defaults."""
    opts: dict[str, Any] = {"connect_timeout": ssh.connect_timeout_s}
    if host.port is not None:
        opts["port"] = host.port
    if host.user is not None:
        opts["username"] = host.user
    if host.identity_file is not None:
        opts["client_keys"] = [str(Path(host.identity_file).expanduser())]
    if ssh.config_file is not None:
        opts["config"] = [str(Path(ssh.config_file).expanduser())]
    if ssh.insecure_skip_host_key_check:
        opts["known_hosts"] = None
    elif ssh.known_hosts is not None:
        opts["known_hosts"] = str(Path(ssh.known_hosts).expanduser())
    return opts


def _where(host: HostSpec) -> str:
    return f"{host.address}:{host.port}" if host.port else host.address


async def _connect_once(host: HostSpec, ssh: SshSpec) -> asyncssh.SSHClientConnection:
    label, stage = host.label, "connect"
    try:
        return await asyncssh.connect(host.address, **connect_options(host, ssh))
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostError(
            f"host key of {_where(host)} is not trusted ({exc.reason}); "
            "it is not in known_hosts or it changed",
            host=label,
            stage=stage,
            hint="check the fingerprint, then: ssh-keyscan "
            + (f"-p {host.port} " if host.port else "")
            + f"{host.address} >> ~/.ssh/known_hosts",
        ) from None
    except asyncssh.PermissionDenied as exc:
        user = host.user or "the default user"
        raise HostError(
            f"permission denied for {user} at {_where(host)} ({exc.reason})",
            host=label,
            stage=stage,
            hint="check hosts[].user and hosts[].identity_file, or run: ssh-copy-id " + host.address,
        ) from None
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        raise HostError(f"cannot use the identity file: {exc}", host=label, stage=stage) from None
    except socket.gaierror as exc:
        raise HostError(f"cannot resolve {host.address}: {exc.strerror}", host=label, stage=stage) from None
    except ConnectionRefusedError:
        raise TransportFailure(
            f"connection refused by {_where(host)} (is sshd running there?)", host=label, stage=stage
        ) from None
    except (TimeoutError, asyncssh.TimeoutError):
        raise TransportFailure(
            f"no answer from {_where(host)} within {ssh.connect_timeout_s:g}s", host=label, stage=stage
        ) from None
    except (OSError, asyncssh.Error) as exc:
        raise TransportFailure(f"cannot connect to {_where(host)}: {exc}", host=label, stage=stage) from None


async def connect(host: HostSpec, ssh: SshSpec, log: HostLog, *, backoff_s: float = 0.5) -> HostConn:
    """Connect, retrying transport failures ``ssh.connect_attempts`` times; never auth/host-key ones."""
    for attempt in range(1, ssh.connect_attempts + 1):
        try:
            conn = await _connect_once(host, ssh)
        except TransportFailure as exc:
            log.write(f"attempt {attempt}/{ssh.connect_attempts}: {exc.message}")
            if attempt == ssh.connect_attempts:
                raise
            await asyncio.sleep(backoff_s * attempt)
            continue
        log.write(f"connected to {_where(host)}")
        return HostConn(conn, host.label, log)
    raise AssertionError("unreachable")  # the loop returns or raises


class HostConn:
    """A connected host. ``run`` raises HostError(stage=log.current_stage) when ``check`` and exit != 0."""

    def __init__(self, conn: asyncssh.SSHClientConnection, label: str, log: HostLog) -> None:
        self.conn = conn
        self.label = label
        self.log = log

    async def run(
        self,
        command: str,
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float | None = None,
        what: str | None = None,
    ) -> Completed:
        """Run one ``sh`` command; ``what`` replaces the command text in messages and the log."""
        stage = self.log.current_stage
        self.log.write(f"$ {what or command}")
        try:
            result = await self.conn.run(command, check=False, input=input, timeout=timeout)
        except asyncssh.TimeoutError as exc:
            raise HostError(
                f"`{what or command}` did not finish within {timeout:g}s",
                host=self.label,
                stage=stage,
                stderr_tail=tail_text(str(exc.stderr or "")),
            ) from None
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError, asyncssh.ChannelOpenError, OSError) as exc:
            raise TransportFailure(f"connection lost: {exc}", host=self.label, stage=stage) from None
        out = _text(result.stdout)
        err = _text(result.stderr)
        status = result.exit_status
        signal = result.exit_signal[0] if result.exit_signal else None
        if status is None and signal is None:  # the channel closed without an exit status: transport lost
            self.log.write("connection lost before the command reported its exit status")
            raise TransportFailure(
                f"connection lost while running `{what or command}`", host=self.label, stage=stage
            )
        self.log.write(
            (f"killed by signal {signal}" if signal else f"exit {status}")
            + (f"; stderr: {tail_text(err, 5)}" if err.strip() else "")
        )
        if check and status != 0:
            raise HostError(
                f"`{what or command}` " + (f"was killed by signal {signal}" if signal else "failed"),
                host=self.label,
                stage=stage,
                exit_status=status,
                stderr_tail=tail_text(err or out),
            )
        return Completed(status, out, err)

    async def write_file(self, path: str, data: bytes, *, mode: int = 0o600) -> None:
        """Write ``data`` to ``path`` by SFTP so that it is never readable beyond ``mode``.

        The bytes go to a new file (exclusive create) whose mode is set before anything is written, which
        then replaces ``path`` by rename: an existing file with wider rights (or another link to it) never
        holds the new content, and a reader never sees half of it.
        """
        stage = self.log.current_stage
        self.log.write(f"sftp write {path} ({len(data)} bytes, mode {mode:o})")
        tmp = f"{path}.tmp-{secrets.token_hex(6)}"
        try:
            async with self.conn.start_sftp_client() as sftp:
                await sftp.makedirs(str(Path(path).parent), exist_ok=True)
                attrs = asyncssh.SFTPAttrs(permissions=mode)
                try:
                    flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
                    async with sftp.open(tmp, flags, attrs, encoding=None) as f:
                        await f.chmod(mode)  # the server's umask applied at create: make it exactly ``mode``
                        await f.write(data)
                    await _replace(sftp, tmp, path)
                except BaseException:
                    with contextlib.suppress(asyncssh.SFTPError, OSError):
                        await sftp.remove(tmp)
                    raise
        except asyncssh.SFTPError as exc:
            raise HostError(f"cannot write {path}: {exc.reason}", host=self.label, stage=stage) from None
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError, asyncssh.ChannelOpenError, OSError) as exc:
            raise TransportFailure(f"connection lost: {exc}", host=self.label, stage=stage) from None

    async def put(self, local: Path, remote: str) -> None:
        stage = self.log.current_stage
        self.log.write(f"sftp put {local.name} -> {remote}")
        try:
            async with self.conn.start_sftp_client() as sftp:
                await sftp.makedirs(str(Path(remote).parent), exist_ok=True)
                await sftp.put(str(local), remote)
        except asyncssh.SFTPError as exc:
            raise HostError(
                f"cannot upload {local.name}: {exc.reason}", host=self.label, stage=stage
            ) from None
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError, asyncssh.ChannelOpenError, OSError) as exc:
            raise TransportFailure(f"connection lost: {exc}", host=self.label, stage=stage) from None

    async def close(self) -> None:
        self.conn.close()
        await self.conn.wait_closed()


async def _replace(sftp: asyncssh.SFTPClient, src: str, dst: str) -> None:
    """Rename ``src`` over ``dst`` (OpenSSH's posix-rename; plain SFTP rename refuses an existing target)."""
    try:
        await sftp.posix_rename(src, dst)
    except asyncssh.SFTPOpUnsupported:
        with contextlib.suppress(asyncssh.SFTPNoSuchFile):
            await sftp.remove(dst)
        await sftp.rename(src, dst)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
