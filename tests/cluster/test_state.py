"""The state directory: cluster.json round trip, atomic writes, malformed files, the 0600 token."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from blockctl.cluster.state import (
    ClusterState,
    InstanceState,
    SchedulerState,
    default_state_dir,
    ensure_token,
    load_state,
    read_token,
    save_state,
    state_path,
)
from blockctl.errors import StateError


def sample_state() -> ClusterState:
    inst = InstanceState(
        name="i0", host="127.0.0.1", agent_url="http://127.0.0.1:9001", engine_url="http://127.0.0.1:9000",
        profile="h100/llama-2-7b", gpus=(0,), pids={"engine": 10, "agent": 11},
        settings={"max_num_seqs": 8},
    )
    drained = InstanceState(name="i1", host="h", agent_url="u", engine_url="e", profile="p",
                            status="draining")
    return ClusterState(kind="local", policy="block", instances=(inst, drained),
                        schedulers=(SchedulerState(url="http://127.0.0.1:8000", pid=12),), settings={"k": 2})


def test_round_trip_and_serving(tmp_path: Path) -> None:
    state = sample_state()
    save_state(tmp_path, state)
    loaded = load_state(tmp_path)
    assert loaded == state
    assert loaded is not None and [i.name for i in loaded.serving()] == ["i0"]
    assert json.loads(state_path(tmp_path).read_text())["version"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_missing_state_is_none(tmp_path: Path) -> None:
    assert load_state(tmp_path / "nope") is None


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{", "not valid JSON"),
        ("[]", "top level"),
        ('{"version": 2, "kind": "local", "policy": "x"}', "version 2"),
        ('{"version": 1, "policy": "x"}', "missing key 'kind'"),
        ('{"version": 1, "kind": "local", "policy": "x", "instances": [{"name": "a"}]}', "missing key"),
        ('{"version": 1, "kind": "cloud", "policy": "x"}', "kind 'cloud'"),
    ],
)
def test_malformed_state_names_the_file(tmp_path: Path, content: str, match: str) -> None:
    state_path(tmp_path).write_text(content)
    with pytest.raises(StateError, match=match) as info:
        load_state(tmp_path)
    assert str(state_path(tmp_path)) in info.value.message


def test_token_is_private_and_stable(tmp_path: Path) -> None:
    assert read_token(tmp_path) is None
    token = ensure_token(tmp_path / "s")
    assert len(token) >= 32
    mode = stat.S_IMODE((tmp_path / "s" / "token").stat().st_mode)
    assert mode == 0o600
    assert ensure_token(tmp_path / "s") == token == read_token(tmp_path / "s")


def test_default_state_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BLOCKCTL_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "blockctl"
    monkeypatch.setenv("BLOCKCTL_STATE_DIR", str(tmp_path / "x"))
    assert default_state_dir() == tmp_path / "x"
