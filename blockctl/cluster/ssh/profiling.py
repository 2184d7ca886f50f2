"""`blockctl profile run --host`: run the profiler on a cluster host over SSH and bring its profile back."""

from __future__ import annotations

import json
import shlex
import tempfile
import uuid
from pathlib import Path
from typing import Any

from blockctl.cluster.spec import ClusterSpec
from blockctl.cluster.ssh.connection import connect
from blockctl.cluster.ssh.hostlog import HostLog, host_log_path, tail_text
from blockctl.cluster.ssh.install import build_wheel, install
from blockctl.cluster.ssh.plan import remote_paths
from blockctl.cluster.ssh.probe import probe
from blockctl.errors import HostError

q = shlex.quote


async def profile_on_host(
    spec: ClusterSpec,
    host_label: str,
    profiler_argv: list[str],
    *,
    logs_dir: Path,
    timeout_s: float = 3 * 3600,
) -> dict[str, Any]:
    """Connect, install blockctl as ``up`` does, run ``python -m blockctl_agents.profiler`` there, and return
    the profile document it wrote. torch must be importable in the host's venv (vLLM brings it)."""
    host = spec.host(host_label)
    log = HostLog(host_log_path(logs_dir, host.label), host.label)
    log.write(f"=== blockctl profile run: {host.label}")
    with log.stage("connect"):
        conn = await connect(host, spec.ssh, log)
    try:
        with log.stage("probe"):
            found = await probe(conn, spec.install.python)
            paths = remote_paths(spec, host, found.home)
        with log.stage("install"):
            wheel = None
            if spec.install.mode != "existing":
                wheel = await build_wheel(spec.install, Path(tempfile.mkdtemp(prefix="blockctl-wheel-")))
            await install(conn, spec.install, paths, found, wheel)
            has_torch = await conn.run(f"{q(paths.python)} -c 'import torch'", check=False)
            if has_torch.exit_status != 0:
                raise HostError(
                    f"torch is not importable in {paths.venv}",
                    host=host.label,
                    stage="install",
                    exit_status=has_torch.exit_status,
                    stderr_tail=tail_text(has_torch.stderr),
                    hint=f"install it there: {paths.python} -m pip install 'blockctl[profile]'",
                )
        with log.stage("profile"):
            out = f"{paths.run}/profile-{uuid.uuid4().hex[:8]}.json"
            command = " ".join(
                [q(paths.python), "-m", "blockctl_agents.profiler", *map(q, profiler_argv), "--out", q(out)]
            )
            await conn.run(f"mkdir -p {q(paths.run)} && {command}", timeout=timeout_s)
            text = (await conn.run(f"cat {q(out)} && rm -f {q(out)}", what=f"fetch {out}")).stdout
        try:
            doc: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HostError(
                f"the profile written on the host is not JSON: {exc}", host=host.label, stage="profile"
            ) from None
        return doc
    finally:
        await conn.close()
