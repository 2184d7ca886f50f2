"""Two SSH hosts as two network namespaces (own loopback, own ports, reached by address like real hosts):
`up -c` brings both up with the same ports, the scheduler spreads requests over them, `down` stops all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from tests.conftest import free_port
from tests.ssh.procs import blockctl
from tests.ssh.servers import (
    SshServer,
    make_netns_host,
    netns_usable,
    remove_netns_host,
    start_sshd,
    stop,
)

pytestmark = [pytest.mark.ssh, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[str, SshServer]]]:
    why = netns_usable()
    if why:
        pytest.skip(why)
    tag = os.getpid() % 10000
    made: list[tuple[str, subprocess.Popen[bytes], SshServer]] = []
    try:
        for i in (1, 2):
            ns = f"blk{tag}x{i}"
            address = make_netns_host(ns, subnet=(tag % 120) * 2 + i)
            proc, server = start_sshd(tmp_path_factory.mktemp(ns), address, 2222, netns=ns)
            made.append((ns, proc, server))
        yield [(ns, server) for ns, _, server in made]
    finally:
        for _ns, proc, _ in made:
            stop(proc)
        for i in (1, 2):
            remove_netns_host(f"blk{tag}x{i}")


def netns_pids(ns: str) -> set[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True).stdout
    return {int(p) for p in out.split()}


def test_two_namespaced_hosts_serve_through_one_scheduler(
    two_hosts: list[tuple[str, SshServer]], tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("".join(s.known_hosts.read_text() for _, s in two_hosts))
    hosts = [
        {
            "address": s.host,
            "name": f"node{i}",
            "port": s.port,
            "user": s.user,
            "identity_file": str(s.client_key),
            "root": str(tmp_path / f"node{i}"),
        }
        for i, (_, s) in enumerate(two_hosts, start=1)
    ]
    scheduler_port = free_port()
    spec = {
        "hosts": hosts,
        "model": {"id": "tiny"},
        "engine": {"kind": "emulator", "health_timeout_s": 120},
        "ports": {"engine": 8100, "agent": 8200},  # the same on both hosts: each namespace has its own
        "scheduler": {"port": scheduler_port, "policy": "round-robin"},
        "ssh": {"known_hosts": str(known)},
        "install": {"mode": "existing", "venv": sys.prefix},
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(spec))
    state = tmp_path / "state"
    up = blockctl(state, "up", "-c", str(path))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        cluster = json.loads((state / "cluster.json").read_text())
        assert sorted(i["agent_url"] for i in cluster["instances"]) == [
            f"http://{s.host}:8200" for _, s in two_hosts
        ]
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{scheduler_port}/v1", api_key="x", max_retries=0, timeout=60
        )
        for _ in range(4):
            done = client.completions.create(model="tiny", prompt="hello", max_tokens=3)
            assert done.usage is not None and done.usage.completion_tokens == 3
        status = blockctl(state, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        completed = {i["name"]: i["completed"] for i in json.loads(status.stdout)["instances"]}
        assert completed == {"node1-0": 2, "node2-0": 2}
    finally:
        down = blockctl(state, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    for ns, _ in two_hosts:  # nothing but sshd is left in either namespace
        deadline = time.monotonic() + 15
        while (left := [p for p in netns_pids(ns) if "sshd" not in _comm(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p in left]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return ""
