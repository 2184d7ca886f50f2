"""`blockctl profile run --host`: the profiler runs on a cluster host over SSH (here: an in-process SSH server
whose sessions run a real local shell) and its profile comes back."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from blockctl.cli.main import app
from blockctl.cluster.ssh.profiling import profile_on_host
from blockctl.engine.profile import profile_from_document
from blockctl.errors import ConfigError
from blockctl_agents.profiler.run import Options
from tests.ssh.conftest import make_spec
from tests.ssh.servers import inprocess_server

pytest.importorskip("torch")


async def test_profile_runs_on_a_host_over_ssh_and_comes_back(tmp_path: Path) -> None:
    async with inprocess_server(tmp_path / "keys") as server:
        spec = make_spec(server, tmp_path / "remote")
        opts = Options(model="tiny", name="cpu/tiny", device="cpu", grid="quick", repeats=1, warmup=0)
        doc = await profile_on_host(spec, "h1", opts.argv(), logs_dir=tmp_path / "logs")
    profile = profile_from_document(doc, source="remote")
    assert profile.name == "cpu/tiny"
    assert len(profile.rows) == 24
    assert profile.measurement["device"] == "cpu"
    log = (tmp_path / "logs" / "ssh" / "h1.log").read_text()
    assert "[profile] done" in log


async def test_unknown_host_is_named(tmp_path: Path) -> None:
    async with inprocess_server(tmp_path / "keys") as server:
        spec = make_spec(server, tmp_path / "remote")
        with pytest.raises(ConfigError, match="no host named 'nope'"):
            await profile_on_host(spec, "nope", [], logs_dir=tmp_path / "logs")


def test_host_without_spec_is_a_clear_cli_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["profile", "run", "--model", "tiny", "--host", "h1", "--out", str(tmp_path / "x.json")]
    )
    assert result.exit_code == 1
    assert "--host needs the cluster spec" in result.output


def test_options_round_trip_through_the_host_command_line() -> None:
    from blockctl_agents.profiler.__main__ import _parser

    opts = Options(model="tiny", name="n", grid="quick", tp=2, share_layer_weights=True, max_num_seqs=48)
    parsed = vars(_parser().parse_args([*opts.argv(), "--out", "x.json"]))
    parsed.pop("out")
    assert Options(**parsed) == opts
