"""The cluster state directory: cluster.json (who runs where), the agents' bearer token, and logs.

Layout of a state dir (``--state-dir`` / ``BLOCKCTL_STATE_DIR``, default ``$XDG_STATE_HOME/blockctl``)::

    cluster.json   the ClusterState below, written atomically (temp file + rename), read by schedulers
    token          the agents' bearer token, mode 0600, never passed on a command line
    logs/          one log file per process started by ``blockctl up``

cluster.json::

    {"version": 1, "kind": "local" | "ssh", "policy": "block",
     "instances": [{"name", "host", "agent_url", "engine_url", "profile", "gpus": [0],
                    "pids": {"engine": 123, "agent": 124}, "status": "serving" | "draining",
                    "settings": {...}}],
     "schedulers": [{"url", "pid", "settings": {...}}],
     "settings": {...}}

``settings`` hold whatever the code that started a process needs to tell whether a re-run of ``up`` asks for
something different (engine flags, ports, spec file); readers that do not know a key ignore it.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from blockctl.errors import StateError

STATE_VERSION = 1
STATE_FILE = "cluster.json"
TOKEN_FILE = "token"
LOGS_DIR = "logs"

Status = Literal["serving", "draining"]


@dataclass(frozen=True, slots=True)
class InstanceState:
    name: str
    host: str
    agent_url: str  # where schedulers send /predict, /load and the traffic
    engine_url: str
    profile: str
    gpus: tuple[int, ...] = ()
    pids: dict[str, int] = field(default_factory=dict)  # "engine", "agent" -> pid on ``host``
    status: Status = "serving"  # draining: gets no new requests
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SchedulerState:
    url: str
    pid: int | None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClusterState:
    kind: Literal["local", "ssh"]
    policy: str
    instances: tuple[InstanceState, ...] = ()
    schedulers: tuple[SchedulerState, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    version: int = STATE_VERSION

    def serving(self) -> tuple[InstanceState, ...]:
        """Instances that may get new requests."""
        return tuple(i for i in self.instances if i.status == "serving")

    def with_instances(self, instances: tuple[InstanceState, ...]) -> ClusterState:
        return replace(self, instances=instances)


def default_state_dir() -> Path:
    """``BLOCKCTL_STATE_DIR``, else ``$XDG_STATE_HOME/blockctl``, else ``~/.local/state/blockctl``."""
    env = os.environ.get("BLOCKCTL_STATE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "blockctl"


def resolve_state_dir(state_dir: str | Path | None) -> Path:
    return Path(state_dir).expanduser() if state_dir else default_state_dir()


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def logs_dir(state_dir: Path) -> Path:
    return state_dir / LOGS_DIR


def to_json(state: ClusterState) -> dict[str, Any]:
    data = asdict(state)
    for inst in data["instances"]:
        inst["gpus"] = list(inst["gpus"])
    return data


def from_json(data: Any, *, source: str = STATE_FILE) -> ClusterState:
    """Parse cluster.json's content; StateError naming the file and the bad key when it is malformed."""
    try:
        if not isinstance(data, dict):
            raise TypeError("top level is not an object")
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"version {data.get('version')!r} is not {STATE_VERSION}")
        instances = tuple(
            InstanceState(
                name=str(i["name"]),
                host=str(i["host"]),
                agent_url=str(i["agent_url"]),
                engine_url=str(i["engine_url"]),
                profile=str(i["profile"]),
                gpus=tuple(int(g) for g in i.get("gpus", ())),
                pids={str(k): int(v) for k, v in i.get("pids", {}).items()},
                status=_status(i.get("status", "serving")),
                settings=dict(i.get("settings", {})),
            )
            for i in data.get("instances", [])
        )
        schedulers = tuple(
            SchedulerState(
                url=str(s["url"]),
                pid=None if s.get("pid") is None else int(s["pid"]),
                settings=dict(s.get("settings", {})),
            )
            for s in data.get("schedulers", [])
        )
        kind = data["kind"]
        if kind not in ("local", "ssh"):
            raise ValueError(f"kind {kind!r} is not local or ssh")
        return ClusterState(
            kind=kind,
            policy=str(data["policy"]),
            instances=instances,
            schedulers=schedulers,
            settings=dict(data.get("settings", {})),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise StateError(f"{source}: malformed cluster state: {what}", hint="blockctl down") from None


def _status(value: Any) -> Status:
    if value not in ("serving", "draining"):
        raise ValueError(f"status {value!r} is not serving or draining")
    return value  # type: ignore[no-any-return]


def load_state(state_dir: Path) -> ClusterState | None:
    """The cluster state, or None when no cluster.json exists (no cluster is up)."""
    path = state_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateError(f"{path}: not valid JSON: {exc}", hint="blockctl down") from None
    return from_json(data, source=str(path))


def save_state(state_dir: Path, state: ClusterState) -> None:
    """Write cluster.json atomically, so a reader sees the old file or the new one, never half of one."""
    state_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(state_path(state_dir), json.dumps(to_json(state), indent=2) + "\n", mode=0o644)


def remove_state(state_dir: Path) -> None:
    state_path(state_dir).unlink(missing_ok=True)


def _atomic_write(path: Path, text: str, *, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def token_path(state_dir: Path) -> Path:
    return state_dir / TOKEN_FILE


def read_token(state_dir: Path) -> str | None:
    """The agents' bearer token, or None when the state dir has none."""
    try:
        token = token_path(state_dir).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return token or None


def ensure_token(state_dir: Path) -> str:
    """The existing token, or a new random one written with mode 0600 (owner read/write only)."""
    existing = read_token(state_dir)
    if existing:
        return existing
    state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    _atomic_write(token_path(state_dir), token + "\n", mode=0o600)
    return token
