"""Local process handling (recognise by command line, stop by PID) and the pure convergence plan of `up`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from blockctl.cluster import procs
from blockctl.cluster.local_plan import LocalSpec, argv_for, converge, instance_plans
from blockctl.cluster.state import InstanceState
from blockctl.errors import ClusterError, ConfigError

SLEEPER = "import time; time.sleep(60)"


def sleeper(tmp_path: Path, module: str, port: int) -> int:
    """A process whose command line looks like ``python -m MODULE --port PORT`` (the args are inert)."""
    return procs.spawn([sys.executable, "-c", SLEEPER, "-m", module, "--port", str(port)], tmp_path / "s.log")


def test_is_ours_checks_module_and_port(tmp_path: Path) -> None:
    pid = sleeper(tmp_path, "blockctl.fake", 4321)
    try:
        assert procs.is_ours(pid, ("blockctl.fake", 4321))
        assert not procs.is_ours(pid, ("blockctl.fake", 4322))
        assert not procs.is_ours(pid, ("blockctl.other", 4321))
        assert not procs.is_ours(None, ("blockctl.fake", 4321))
    finally:
        assert procs.stop([(pid, ("blockctl.fake", 4321))], timeout_s=5) == [pid]
    assert not procs.is_ours(pid, ("blockctl.fake", 4321))


def test_stop_never_signals_a_process_that_is_not_ours(tmp_path: Path) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", SLEEPER])
    try:
        assert procs.stop([(stranger.pid, ("blockctl.scheduler", 8000))], timeout_s=1) == []
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    pid = procs.spawn([sys.executable, "-c", stubborn, "-m", "blockctl.fake", "--port", "1"], tmp_path / "s.log")
    time.sleep(0.3)  # let it install its handler
    assert procs.stop([(pid, ("blockctl.fake", 1))], timeout_s=0.3) == [pid]
    assert not procs.is_ours(pid, ("blockctl.fake", 1))


def test_wait_healthy_reports_an_exited_process_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    pid = procs.spawn([sys.executable, "-c", "print('boom: bad flag'); raise SystemExit(3)"], log)
    with pytest.raises(ClusterError, match="boom: bad flag"):
        procs.wait_healthy([("http://127.0.0.1:9/health", pid, log)], timeout_s=10)


def inst(name: str, settings: dict[str, object]) -> InstanceState:
    return InstanceState(name=name, host="127.0.0.1", agent_url="a", engine_url="e", profile="p",
                         pids={"engine": 1, "agent": 2}, settings=dict(settings))


def test_converge_keeps_healthy_unchanged_restarts_changed_and_stops_extras() -> None:
    wanted = instance_plans(LocalSpec(instances=3, base_port=9000))
    existing = (
        inst("i0", wanted[0].settings),  # healthy, same: kept
        inst("i1", {**wanted[1].settings, "engine_flags": {"max_num_seqs": 8}}),  # changed: restarted
        inst("i2", wanted[2].settings),  # same but unhealthy: restarted
        inst("i3", {"index": 3}),  # no longer wanted: stopped
    )
    plan = converge(existing, {"i0": True, "i1": True, "i2": False, "i3": True}, wanted)
    assert [i.name for i in plan.keep] == ["i0"]
    assert [p.name for p in plan.start] == ["i1", "i2"]
    assert sorted(i.name for i in plan.stop) == ["i1", "i2", "i3"]


def test_converge_from_nothing_starts_everything() -> None:
    wanted = instance_plans(LocalSpec(instances=2, base_port=9000))
    plan = converge((), {}, wanted)
    assert not plan.keep and not plan.stop
    assert [(p.engine_port, p.agent_port) for p in plan.start] == [(9100, 9200), (9101, 9201)]


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        (LocalSpec(instances=0), "instances"),
        (LocalSpec(schedulers=101), "schedulers"),
        (LocalSpec(base_port=80), "base-port"),
        (LocalSpec(engine_flags={"max_num_seqs": 0}), "max-num-seqs"),
        (LocalSpec(engine_flags={"gpu_memory": 1}), "engine_flags"),
    ],
)
def test_spec_validation_names_the_option(spec: LocalSpec, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        spec.validate()
    assert info.value.key == key


def test_reply_lengths_go_to_the_emulators_only(tmp_path: Path) -> None:
    """The table tells the emulators each reply's length; the agents (and so the router) never get it."""
    plans = instance_plans(LocalSpec(instances=2, base_port=9000, reply_lengths="/data/replies.json"))
    for plan in plans:
        engine, agent = argv_for(plan, tmp_path)
        assert engine[engine.index("--reply-lengths") + 1] == "/data/replies.json"
        assert "--reply-lengths" not in agent
    plain = instance_plans(LocalSpec(instances=1, base_port=9000))[0]
    assert "reply_lengths" not in plain.settings and "--reply-lengths" not in argv_for(plain, tmp_path)[0]
