"""Which SSH hosts join or leave to reach a serving count (pure)."""

from __future__ import annotations

from blockctl.cluster.autoscale_ssh import plan_hosts
from blockctl.cluster.spec import ClusterSpec
from blockctl.cluster.state import ClusterState, InstanceState

SPEC = ClusterSpec.model_validate({
    "model": {"id": "m"},
    "hosts": [
        {"address": "a", "gpus": [0, 1]},
        {"address": "b", "gpus": [0]},
        {"address": "s1", "gpus": [0, 1], "standby": True},
        {"address": "s2", "instances": 1, "standby": True},
    ],
})


def state(*hosts: tuple[str, int]) -> ClusterState:
    insts = tuple(InstanceState(f"{h}-{g}", h, f"http://{h}:{9000 + g}", f"http://{h}:{8000 + g}", "p")
                  for h, n in hosts for g in range(n))
    return ClusterState(kind="ssh", policy="block", instances=insts)


def test_adds_standby_hosts_in_order_until_the_target() -> None:
    assert plan_hosts(SPEC, state(("a", 2), ("b", 1)), 4) == (["s1"], [])
    assert plan_hosts(SPEC, state(("a", 2), ("b", 1)), 6) == (["s1", "s2"], [])
    assert plan_hosts(SPEC, state(("a", 2), ("b", 1)), 9) == (["s1", "s2"], [])  # all there is
    assert plan_hosts(SPEC, state(("a", 2), ("b", 1)), 3) == ([], [])


def test_removes_standby_hosts_first_and_never_below_target_or_the_last_host() -> None:
    full = state(("a", 2), ("b", 1), ("s1", 2), ("s2", 1))
    assert plan_hosts(SPEC, full, 4) == ([], ["s2", "b"])  # s1 (2 GPUs) would leave 3 < 4; b fits
    assert plan_hosts(SPEC, full, 3) == ([], ["s2", "s1"])
    assert plan_hosts(SPEC, full, 1) == ([], ["s2", "s1", "b"])
    draining = ClusterState(kind="ssh", policy="block", instances=tuple(
        InstanceState(i.name, i.host, i.agent_url, i.engine_url, i.profile,
                      status="draining" if i.host == "s2" else "serving") for i in full.instances))
    assert plan_hosts(SPEC, draining, 3) == ([], ["s1"])  # a draining host counts for nothing
