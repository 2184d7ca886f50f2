"""Start an emulated engine and its predictor agent as local subprocesses for benchmarks; stop them by PID."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from blockctl.errors import UpstreamError


@dataclass(frozen=True, slots=True)
class LocalInstance:
    engine_url: str
    agent_url: str
    token: str
    engine_pid: int
    agent_pid: int
    log_dir: Path

    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-800:]
            raise UpstreamError(f"exited with status {proc.returncode} before it was healthy:\n{tail}", url=url)
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise UpstreamError(f"not healthy after {timeout_s:.0f} s (log: {log})", url=url)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def local_instance(
    log_dir: Path,
    *,
    profile: str | None = None,
    seed: int = 0,
    engine_args: tuple[str, ...] = (),
    timeout_s: float = 60.0,
) -> Iterator[LocalInstance]:
    """An emulator (``engine_args`` are passed to it and to the agent) and a token-guarded agent in front."""
    log_dir.mkdir(parents=True, exist_ok=True)
    token_file = log_dir / "token"
    token = secrets.token_urlsafe(24)
    token_file.write_text(token)
    os.chmod(token_file, 0o600)
    common = [*(["--profile", profile] if profile else []), *engine_args]
    e_port, a_port = free_port(), free_port()
    engine_url, agent_url = f"http://127.0.0.1:{e_port}", f"http://127.0.0.1:{a_port}"
    procs: list[subprocess.Popen[bytes]] = []

    def start(module: str, url: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args, *common], stdout=out, stderr=subprocess.STDOUT
            )
        procs.append(proc)
        _wait_healthy(url, proc, log, timeout_s)
        return proc

    try:
        engine = start(
            "blockctl_agents.emulator", engine_url, log_dir / "engine.log", "--port", str(e_port), "--seed", str(seed)
        )
        agent = start(
            "blockctl_agents.predictor",
            agent_url,
            log_dir / "agent.log",
            "--engine-url",
            engine_url,
            "--port",
            str(a_port),
            "--token-file",
            str(token_file),
            "--name",
            "bench-0",
        )
        yield LocalInstance(engine_url, agent_url, token, engine.pid, agent.pid, log_dir)
    finally:
        for proc in reversed(procs):
            _stop(proc)
