"""The shell snippets of remote process control, run by a real local sh (the same text SSH would carry)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from blockctl.cluster.ssh import remote
from blockctl.cluster.ssh.plan import port_needle
from tests.conftest import free_port
from tests.ssh.procs import procs_with, wait_gone


def sh(command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run as sshd does, with a login shell (bash here); returns only once stdout and stderr are closed."""
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=timeout)


def test_detached_start_alive_and_stop_group(tmp_path: Path) -> None:
    marker = f"--port {free_port()}"
    # The started process forks a child: stopping must take the whole group.
    child = 'import subprocess, time; subprocess.Popen(["sleep", "60"]); time.sleep(60)'
    cmd = f"{sys.executable} -c '{child}' {marker}"
    env_file = tmp_path / "e.env"
    env_file.write_text(remote.env_file_text({"HF_TOKEN": "s3cret 'x'", "B": "2"}))
    start = sh(
        remote.detached(
            cmd,
            env_file=str(env_file),
            log_path=str(tmp_path / "e.log"),
            pid_path=str(tmp_path / "e.pid"),
            cwd=str(tmp_path / "cwd"),
        )
    )
    assert start.returncode == 0, start.stderr
    pid = int(start.stdout.split()[0])
    assert int((tmp_path / "e.pid").read_text()) == pid
    deadline = time.monotonic() + 10
    while len([p for p in procs_with("sleep 60")]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sh(remote.alive(pid, marker)).returncode == 0
    assert marker in " ".join(psutil.Process(pid).cmdline())  # the pid is the command itself
    assert psutil.Process(pid).environ()["HF_TOKEN"] == "s3cret 'x'"  # from the file, never in argv
    assert "s3cret" not in " ".join(psutil.Process(pid).cmdline())
    assert sh(remote.alive(pid, "--port 1")).returncode != 0  # another command line: not ours
    assert sh(remote.alive(pid, port_needle(int(marker.split()[1])))).returncode == 0
    assert (
        sh(remote.alive(pid, port_needle(int(marker.split()[1][:-1])))).returncode != 0
    )  # a prefix is not it
    assert sh(remote.stop_group(pid, grace_s=5)).returncode == 0
    assert sh(remote.alive(pid, marker)).returncode != 0
    assert wait_gone(marker) == []
    assert "=== start" in (tmp_path / "e.log").read_text()


def test_wait_http_reports_death_and_timeout(tmp_path: Path) -> None:
    port = free_port()
    dead = sh(
        remote.detached(
            "sh -c 'echo boom; exit 3'",
            env_file=None,
            log_path=str(tmp_path / "d.log"),
            pid_path=str(tmp_path / "d.pid"),
            cwd=str(tmp_path),
        )
    )
    pid = int(dead.stdout.split()[0])
    waited = sh(remote.wait_http(sys.executable, f"http://127.0.0.1:{port}/health", pid, 20))
    assert waited.returncode == remote.WAIT_DIED
    assert "boom" in sh(remote.tail(str(tmp_path / "d.log"), 5)).stdout
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        t0 = time.monotonic()
        waited = sh(remote.wait_http(sys.executable, f"http://127.0.0.1:{port}/health", sleeper.pid, 1.5))
        assert waited.returncode == remote.WAIT_TIMEOUT and time.monotonic() - t0 < 15
    finally:
        sleeper.kill()
        sleeper.wait()
    assert "no log at" in sh(remote.tail(str(tmp_path / "missing.log"))).stdout


def test_tail_quotes_a_hostile_path_everywhere(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"{tmp_path}/x')$(touch {marker})('.log"  # would close the quote of the fallback echo
    out = sh(remote.tail(hostile)).stdout
    assert not marker.exists()
    assert out.strip() == f"(no log at {hostile})"
