"""CLI edges of SSH clusters without live hosts: `down` keeps unreachable hosts on record; `logs` files."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from blockctl.cli.main import app
from blockctl.cluster.spec import parse_spec
from blockctl.cluster.ssh.hostlog import host_log_path
from blockctl.cluster.state import ClusterState, InstanceState, load_state, save_state
from tests.conftest import free_port


def ssh_state(tmp_path: Path) -> ClusterState:
    spec = parse_spec(
        {
            "hosts": [{"address": "127.0.0.1", "name": "gone", "port": free_port(), "user": "root"}],
            "model": {"id": "m"},
            "ssh": {"connect_attempts": 1, "connect_timeout_s": 3, "known_hosts": str(tmp_path / "kh")},
        }
    )
    inst = InstanceState(
        name="gone-0",
        host="gone",
        agent_url="http://127.0.0.1:1",
        engine_url="http://127.0.0.1:2",
        profile="h100/llama-2-7b",
        pids={"engine": 999999, "agent": 999998},
        settings={"index": 0, "root": "/nonexistent", "engine_port": 2, "agent_port": 1},
    )
    return ClusterState(
        kind="ssh", policy="block", instances=(inst,), settings={"spec": spec.model_dump(mode="json")}
    )


def test_down_keeps_unreachable_hosts_on_record(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    save_state(state_dir, ssh_state(tmp_path))
    result = CliRunner().invoke(app, ["down", "--state-dir", str(state_dir)])
    assert result.exit_code == 1
    flat = result.output
    assert "gone: stage 'connect' failed: connection refused" in flat
    assert "still recorded" in flat and "blockctl down" in flat
    left = load_state(state_dir)
    assert left is not None and [i.name for i in left.instances] == ["gone-0"] and left.schedulers == ()


def test_logs_shows_the_bootstrap_log_and_names_unknown_hosts(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    save_state(state_dir, ssh_state(tmp_path))
    log = host_log_path(state_dir / "logs", "gone")
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {n}\n" for n in range(300)))
    runner = CliRunner()
    shown = runner.invoke(app, ["logs", "gone", "-n", "3", "--state-dir", str(state_dir)])
    assert shown.exit_code == 0 and shown.output.splitlines() == ["line 297", "line 298", "line 299"]
    unknown = runner.invoke(app, ["logs", "nohost", "--engine", "--state-dir", str(state_dir)])
    assert unknown.exit_code == 1 and "no host named 'nohost'" in unknown.output
    both = runner.invoke(app, ["logs", "gone", "--engine", "--agent", "--state-dir", str(state_dir)])
    assert both.exit_code == 1 and "at most one" in both.output


def test_logs_of_a_local_cluster_reads_local_files(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    inst = InstanceState(
        name="local-0",
        host="127.0.0.1",
        agent_url="http://127.0.0.1:1",
        engine_url="http://127.0.0.1:2",
        profile="p",
    )
    save_state(state_dir, ClusterState(kind="local", policy="block", instances=(inst,)))
    (state_dir / "logs").mkdir()
    (state_dir / "logs" / "local-0-agent.log").write_text("agent says hi\n")
    shown = CliRunner().invoke(app, ["logs", "local-0", "--agent", "--state-dir", str(state_dir)])
    assert shown.exit_code == 0 and "agent says hi" in shown.output
