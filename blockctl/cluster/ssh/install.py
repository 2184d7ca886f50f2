"""The install stage: build blockctl's wheel here once, upload it by SFTP, pip-install it on a host.

A host is skipped when its venv's marker file holds the same wheel hash (re-running ``up`` converges without
reinstalling). ``install.mode: existing`` installs nothing and only checks the venv can run the agent.
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import blockctl
from blockctl.cluster.spec import InstallSpec
from blockctl.cluster.ssh.connection import HostConn
from blockctl.cluster.ssh.hostlog import tail_text
from blockctl.cluster.ssh.plan import RemotePaths
from blockctl.cluster.ssh.probe import ProbeResult
from blockctl.errors import ClusterError, ConfigError, HostError

q = shlex.quote
MARKER = ".blockctl-wheel"
MIN_FREE_MIB = {"wheel": 512, "vllm": 12 * 1024}


@dataclass(frozen=True, slots=True)
class Wheel:
    path: Path
    sha256: str


def project_root() -> Path | None:
    """The source tree blockctl is imported from, when it is one (an editable or source checkout)."""
    root = Path(blockctl.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "blockctl"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


async def build_wheel(spec: InstallSpec, out_dir: Path) -> Wheel:
    """``install.wheel`` if given, else ``pip wheel --no-deps`` of the source tree into ``out_dir``."""
    if spec.wheel:
        path = Path(spec.wheel).expanduser()
        if not path.is_file():
            raise ConfigError(f"no such wheel: {path}", key="install.wheel")
        return Wheel(path, _sha256(path))
    root = project_root()
    if root is None:
        raise ConfigError(
            "blockctl is not running from a source tree, so it cannot build its wheel",
            key="install.wheel",
            hint="build one (pip wheel --no-deps blockctl) and set install.wheel, "
            "or use install.mode: existing",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix="wheel-", dir=out_dir))
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(build)]
    # Without build isolation first (offline-friendly, fast); with it when setuptools is missing here.
    for extra in (["--no-build-isolation"], []):
        proc = await asyncio.create_subprocess_exec(
            *base, *extra, str(root), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        wheels = sorted(build.glob("blockctl-*.whl"))
        if proc.returncode == 0 and wheels:
            return Wheel(wheels[-1], _sha256(wheels[-1]))
    raise ClusterError(f"building the blockctl wheel failed: {tail_text(err.decode(errors='replace'), 8)}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def install(
    conn: HostConn, spec: InstallSpec, paths: RemotePaths, probe: ProbeResult, wheel: Wheel | None
) -> str:
    """Make ``paths.venv`` run blockctl's agent; returns 'installed', 'up to date' or 'existing'."""
    py = q(paths.python)
    if spec.mode == "existing":
        # The agent's server module pulls in its dependencies (starlette, uvicorn, httpx, numpy).
        check = (
            f"{py} -c 'import blockctl, blockctl_agents.predictor.app, uvicorn; print(blockctl.__version__)'"
        )
        result = await conn.run(check, check=False)
        if result.exit_status != 0:
            raise HostError(
                f"install.mode is 'existing' but {paths.python} cannot import blockctl's agent",
                host=conn.label,
                stage="install",
                exit_status=result.exit_status,
                stderr_tail=tail_text(result.stderr),
                hint="set install.mode: wheel, or install blockctl into install.venv on the host",
            )
        if result.stdout.strip() != blockctl.__version__:
            conn.log.write(f"note: host has blockctl {result.stdout.strip()}, here {blockctl.__version__}")
        return "existing"
    assert wheel is not None  # mode 'wheel' always builds one
    marker = f"{paths.venv}/{MARKER}"
    current = await conn.run(f"cat {q(marker)} 2>/dev/null || true", check=False)
    if current.stdout.strip() == wheel.sha256:
        conn.log.write(f"blockctl wheel {wheel.sha256[:12]} already installed")
        return "up to date"
    need = MIN_FREE_MIB["vllm" if spec.vllm == "install" else "wheel"]
    if probe.disk_free_mib is not None and probe.disk_free_mib < need:
        raise HostError(
            f"only {probe.disk_free_mib} MiB free on the disk of $HOME; install needs ~{need} MiB",
            host=conn.label,
            stage="install",
        )
    if probe.python_version is None:
        raise HostError(
            f"install.python '{spec.python}' is not on the host",
            host=conn.label,
            stage="install",
            hint="set install.python to a Python >= 3.10 on the host",
        )
    remote_wheel = f"{paths.wheels}/{wheel.path.name}"
    await conn.put(wheel.path, remote_wheel)
    site = " --system-site-packages" if spec.system_site_packages else ""
    pip = f"{py} -m pip install -q --disable-pip-version-check {' '.join(map(q, spec.pip_args))}"
    await conn.run(f"[ -x {py} ] || {q(spec.python)} -m venv{site} {q(paths.venv)}", timeout=300)
    if spec.vllm == "install":
        await conn.run(f"{py} -c 'import vllm' 2>/dev/null || {pip} {q(spec.vllm_requirement)}", timeout=3600)
    await conn.run(f"{pip} {q(remote_wheel)}", timeout=1200)  # its dependencies
    await conn.run(f"{pip} --no-deps --force-reinstall {q(remote_wheel)}", timeout=600)  # this very build
    await conn.run(f"echo {wheel.sha256} > {q(marker)}")
    return "installed"
