"""The install stage for real: build blockctl's wheel here, upload by SFTP, pip-install into a fresh venv on the
"host", then skip on a re-run; `existing` mode only checks the venv. (--no-deps keeps it offline and fast.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import blockctl
from blockctl.cluster.spec import InstallSpec
from blockctl.cluster.ssh.connection import connect
from blockctl.cluster.ssh.hostlog import HostLog
from blockctl.cluster.ssh.install import MARKER, build_wheel, install
from blockctl.cluster.ssh.plan import remote_paths
from blockctl.cluster.ssh.probe import probe
from blockctl.errors import ConfigError, HostError
from tests.ssh.conftest import make_spec
from tests.ssh.servers import SshServer

pytestmark = pytest.mark.slow


async def test_wheel_is_built_uploaded_installed_then_kept(ssh_server: SshServer, tmp_path: Path) -> None:
    root = tmp_path / "host"
    spec = make_spec(
        ssh_server, root, install={"mode": "wheel", "python": sys.executable, "pip_args": ["--no-deps"]}
    )
    wheel = await build_wheel(spec.install, tmp_path / "wheels")
    assert wheel.path.name.startswith(f"blockctl-{blockctl.__version__}-") and len(wheel.sha256) == 64
    conn = await connect(spec.hosts[0], spec.ssh, HostLog(tmp_path / "h1.log", "h1"))
    try:
        found = await probe(conn, spec.install.python)
        paths = remote_paths(spec, spec.hosts[0], found.home)
        assert await install(conn, spec.install, paths, found, wheel) == "installed"
        assert (root / "venv" / MARKER).read_text().strip() == wheel.sha256
        assert (root / "wheels" / wheel.path.name).read_bytes() == wheel.path.read_bytes()
        version = subprocess.run(
            [paths.python, "-c", "import blockctl; print(blockctl.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert version == blockctl.__version__
        assert await install(conn, spec.install, paths, found, wheel) == "up to date"
        existing = InstallSpec(mode="existing", venv=str(root / "venv"))
        with pytest.raises(
            HostError, match="cannot import blockctl's agent"
        ):  # --no-deps: its dependencies are absent
            await install(conn, existing, paths, found, None)
    finally:
        await conn.close()


async def test_missing_wheel_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"install\.wheel"):
        await build_wheel(InstallSpec(wheel=str(tmp_path / "nope.whl")), tmp_path)
