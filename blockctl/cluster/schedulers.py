"""Scheduler daemons on this machine (for local and SSH clusters alike): start, converge, restart, stop."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from blockctl.cluster import procs
from blockctl.cluster.state import ClusterState, SchedulerState, load_state, logs_dir, save_state
from blockctl.errors import ClusterError, StateError
from blockctl.scheduler.policies import make_policy
from blockctl.secrets import read_secret_file

SCHEDULER_MODULE = "blockctl.scheduler"


@dataclass(frozen=True, slots=True)
class SchedulerSpec:
    """How one scheduler daemon is started; stored as its ``settings`` in cluster.json."""

    port: int
    policy: str
    host: str = "127.0.0.1"  # address it listens on
    k: int | None = None
    tagger: str | None = None
    api_key_file: str | None = None
    predict_timeout_ms: float | None = None
    max_retries: int | None = None
    first_byte_floor_s: float | None = None  # the forwarding deadlines (scheduler.proxy.Deadlines); None: default
    first_byte_factor: float | None = None
    idle_timeout_s: float | None = None
    drain_s: float | None = None
    # Request log: each daemon writes PATH with "-<port>" before its suffix (default STATE/logs/requests.jsonl).
    request_log: str | None = None
    request_log_enabled: bool = True
    request_log_max_mb: float | None = None
    request_log_backups: int | None = None
    log_prompts: bool = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def argv(self, state_dir: Path) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            SCHEDULER_MODULE,
            "--state-dir",
            str(state_dir),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--policy",
            self.policy,
        ]
        for flag, value in (
            ("--k", self.k),
            ("--tagger", self.tagger),
            ("--api-key-file", self.api_key_file),
            ("--predict-timeout-ms", self.predict_timeout_ms),
            ("--max-retries", self.max_retries),
            ("--first-byte-floor", self.first_byte_floor_s),
            ("--first-byte-factor", self.first_byte_factor),
            ("--idle-timeout", self.idle_timeout_s),
            ("--drain", self.drain_s),
        ):
            if value is not None:
                argv += [flag, str(value)]
        return argv + self._request_log_argv(state_dir)

    def _request_log_argv(self, state_dir: Path) -> list[str]:
        if not self.request_log_enabled:
            return ["--no-request-log"]
        path = Path(self.request_log) if self.request_log else logs_dir(state_dir) / "requests.jsonl"
        argv = ["--request-log", str(path.with_name(f"{path.stem}-{self.port}{path.suffix}"))]
        for flag, value in (("--request-log-max-mb", self.request_log_max_mb),
                            ("--request-log-backups", self.request_log_backups)):
            if value is not None:
                argv += [flag, str(value)]
        return argv + (["--log-prompts"] if self.log_prompts else [])

    def log_path(self, state_dir: Path) -> Path:
        return logs_dir(state_dir) / f"scheduler-{self.port}.log"

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> SchedulerSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in settings.items() if k in names})
        except TypeError as exc:
            raise StateError(f"cluster.json: scheduler settings are incomplete: {exc}") from None


def scheduler_specs(count: int, *, base_port: int, policy: str, **options: Any) -> list[SchedulerSpec]:
    """``count`` daemons on consecutive ports from ``base_port``; ConfigError for an unknown policy or k."""
    make_policy(policy, k=options.get("k"))
    if options.get("api_key_file"):  # refused now, naming the file, rather than by every daemon at start-up
        read_secret_file(options["api_key_file"], what="API key", key="scheduler.api_key_file")
    return [SchedulerSpec(port=base_port + n, policy=policy, **options) for n in range(count)]


def _marker(spec: SchedulerSpec) -> procs.Marker:
    return (SCHEDULER_MODULE, spec.port)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def converge_schedulers(
    state_dir: Path,
    current: Sequence[SchedulerState],
    wanted: Sequence[SchedulerSpec],
    *,
    timeout_s: float = 30.0,
) -> tuple[SchedulerState, ...]:
    """Keep healthy daemons that already run as wanted, stop the rest, start what is missing."""
    kept: dict[int, SchedulerState] = {}
    to_stop: list[tuple[int | None, procs.Marker]] = []
    wanted_settings = {spec.port: asdict(spec) for spec in wanted}
    for sched in current:
        spec = SchedulerSpec.from_settings(sched.settings) if sched.settings else None
        alive = spec is not None and procs.is_ours(sched.pid, _marker(spec))
        same = spec is not None and wanted_settings.get(spec.port) == asdict(spec)
        if spec is not None and alive and same and _healthy(spec.url):
            kept[spec.port] = sched
        elif spec is not None:
            to_stop.append((sched.pid, _marker(spec)))
    procs.stop(to_stop)
    started: dict[int, SchedulerState] = {}
    checks = []
    for spec in wanted:
        if spec.port in kept:
            continue
        if not procs.port_free(spec.port, spec.host if spec.host != "0.0.0.0" else "127.0.0.1"):
            stop_schedulers(list(started.values()))
            raise ClusterError(
                f"port {spec.port} (scheduler) is in use by another program",
                hint="blockctl up --local --base-port PORT",
            )
        pid = procs.spawn(spec.argv(state_dir), spec.log_path(state_dir))
        started[spec.port] = SchedulerState(url=spec.url, pid=pid, settings=asdict(spec))
        checks.append((f"{spec.url}/health", pid, spec.log_path(state_dir)))
    try:
        procs.wait_healthy(checks, timeout_s=timeout_s)
    except ClusterError:
        stop_schedulers(list(started.values()))
        raise
    merged = {**kept, **started}
    return tuple(merged[spec.port] for spec in wanted)


def stop_schedulers(schedulers: Sequence[SchedulerState], *, timeout_s: float = 10.0) -> list[int]:
    """Stop the recorded daemons that are still ours; returns the PIDs signalled."""
    targets = [(s.pid, _marker(SchedulerSpec.from_settings(s.settings))) for s in schedulers if s.settings]
    return procs.stop(targets, timeout_s=timeout_s)


def restart_schedulers(
    state_dir: Path, policy: str, *, k: int | None = None, timeout_s: float = 30.0
) -> ClusterState:
    """Run every scheduler of the cluster with ``policy`` (and ``k``) instead; instances are untouched."""
    state = load_state(state_dir)
    if state is None or not state.schedulers:
        raise StateError(f"no scheduler is recorded in {state_dir}", hint="blockctl up --local")
    make_policy(policy, k=k)
    wanted = [
        dataclasses.replace(SchedulerSpec.from_settings(s.settings), policy=policy, k=k)
        for s in state.schedulers
    ]
    schedulers = converge_schedulers(state_dir, state.schedulers, wanted, timeout_s=timeout_s)
    state = dataclasses.replace(state, policy=policy, schedulers=schedulers)
    save_state(state_dir, state)
    return state
