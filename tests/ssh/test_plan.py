"""Pure decisions of the bootstrap: probe parsing, GPU groups, ports, profiles, rendered commands."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from blockctl.cluster.spec import ClusterSpec, parse_spec
from blockctl.cluster.ssh.bootstrap import HostOutcome, _measured
from blockctl.cluster.ssh.connection import Completed, TransportFailure
from blockctl.cluster.ssh.plan import expand_home, plan_host
from blockctl.cluster.ssh.probe import Gpu, ProbeResult, parse_probe, probe_script
from blockctl.errors import HostError

PROBE = """home=/home/u
python=3.11.7
gpu=0, NVIDIA H100 80GB HBM3, 81559, 80000
gpu=1, NVIDIA H100 80GB HBM3, 81559, 1024
gpu=2, NVIDIA H200, 143771, 140000
gpu=3, NVIDIA H200, 143771, 140000
disk_free_kib=10485760
cpus=32
"""


def spec(**sections: object) -> ClusterSpec:
    data: dict[str, object] = {"hosts": [{"address": "10.0.0.5", "name": "a"}], "model": {"id": "m/llama 7b"}}
    data.update(sections)
    return parse_spec(data)


def probe(gpus: int = 4) -> ProbeResult:
    found = parse_probe(PROBE)
    return ProbeResult(found.home, found.python_version, found.gpus[:gpus], found.disk_free_mib, found.cpus)


def test_parse_probe_reads_nvidia_smi_rows() -> None:
    found = parse_probe(PROBE + "gpu=garbage\n")
    assert found.home == "/home/u" and found.python_version == "3.11.7" and found.cpus == 32
    assert found.disk_free_mib == 10240
    assert found.gpus[1] == Gpu(1, "NVIDIA H100 80GB HBM3", 81559, 1024) and len(found.gpus) == 4
    assert parse_probe("home=/x\npython=\n").python_version is None


def test_one_instance_per_gpu_group_with_ports_profiles_and_visible_devices() -> None:
    s = spec(
        model={"id": "m", "tensor_parallel_size": 2},
        profiles={"by_gpu": {"h200": "h200/llama-2-7b"}, "default": "h100/llama-2-7b"},
    )
    paths, plans = plan_host(s, s.hosts[0], probe(), peer="10.0.0.5")
    assert paths.root == "/home/u/.blockctl" and paths.python == "/home/u/.blockctl/venv/bin/python"
    assert [p.gpus for p in plans] == [(0, 1), (2, 3)]
    assert [p.engine_env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0,1", "2,3"]
    assert [p.profile for p in plans] == ["h100/llama-2-7b", "h200/llama-2-7b"]
    assert [(p.engine_port, p.agent_port) for p in plans] == [(8100, 8200), (8101, 8201)]
    assert plans[1].agent_url == "http://10.0.0.5:8201" and plans[1].name == "a-1"
    argv = shlex.split(plans[0].engine_command)
    assert argv[:3] == ["/home/u/.blockctl/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2" and argv[argv.index("--port") + 1] == "8100"
    agent = shlex.split(plans[0].agent_command)
    assert agent[agent.index("--token-file") + 1] == "/home/u/.blockctl/run/token"
    assert agent[agent.index("--engine-url") + 1] == "http://127.0.0.1:8100"


def test_values_are_shell_quoted_and_engine_flags_shared() -> None:
    s = spec(
        model={"id": "m/llama 7b; rm -rf /", "max_num_seqs": 8, "extra_args": ["--x", "a b"]},
        engine={"kind": "emulator"},
    )
    _, plans = plan_host(s, s.hosts[0], probe(1))
    argv = shlex.split(plans[0].engine_command)
    assert "m/llama 7b; rm -rf /" in argv and argv[-2:] == ["--x", "a b"]
    assert argv[argv.index("--max-num-seqs") + 1] == "8"
    agent = shlex.split(plans[0].agent_command)
    assert agent[agent.index("--max-num-seqs") + 1] == "8"


def test_gpu_selection_errors_name_the_host() -> None:
    s = spec(hosts=[{"address": "x", "gpus": [0, 7]}])
    with pytest.raises(HostError, match=r"GPU\(s\) \[7\] not found") as info:
        plan_host(s, s.hosts[0], probe())
    assert info.value.host == "x" and info.value.stage == "plan"
    s = spec(model={"id": "m", "tensor_parallel_size": 4}, hosts=[{"address": "x", "gpus": [0, 1]}])
    with pytest.raises(HostError, match="tensor_parallel_size=4"):
        plan_host(s, s.hosts[0], probe())
    s = spec()
    with pytest.raises(HostError, match="no NVIDIA GPU"):
        plan_host(s, s.hosts[0], probe(0))


def test_no_gpu_is_fine_for_the_emulator() -> None:
    s = spec(
        engine={"kind": "emulator"}, hosts=[{"address": "x", "instances": 3, "profile": "h200/llama-2-7b"}]
    )
    _, plans = plan_host(s, s.hosts[0], probe(0))
    assert [p.gpus for p in plans] == [(), (), ()]
    assert all("CUDA_VISIBLE_DEVICES" not in p.engine_env for p in plans)
    assert {p.profile for p in plans} == {"h200/llama-2-7b"}
    assert len({p.fingerprint("engine") for p in plans}) == 3  # ports differ


def test_fingerprint_follows_what_runs() -> None:
    base = spec(engine={"kind": "emulator"})
    changed = spec(engine={"kind": "emulator", "env": {"A": "1"}})
    _, a = plan_host(base, base.hosts[0], probe(1))
    _, b = plan_host(changed, changed.hosts[0], probe(1))
    assert a[0].fingerprint("engine") != b[0].fingerprint("engine")
    assert a[0].fingerprint("agent") == b[0].fingerprint("agent")


def test_expand_home() -> None:
    assert expand_home("~", "/h") == "/h" and expand_home("~/x", "/h/") == "/h/x"
    assert expand_home("/abs", "/h") == "/abs"


def test_probe_script_in_a_real_shell_reads_nvidia_smi(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "nvidia-smi"  # stands in for the driver's tool: prints what it was asked for
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        '[ "$1" = "--query-gpu=index,name,memory.total,memory.free" ] || exit 9\n'
        "echo '0, NVIDIA H100 80GB HBM3, 81559, 80100'\necho '1, NVIDIA H100 80GB HBM3, 81559, 512'\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    out = subprocess.run(
        ["bash", "-c", probe_script(sys.executable)], capture_output=True, text=True, env=env
    )
    found = parse_probe(out.stdout)
    assert found.home == str(tmp_path) and found.python_version == ".".join(map(str, sys.version_info[:3]))
    assert [g.memory_free_mib for g in found.gpus] == [80100, 512] and found.gpus[0].name.startswith("NVIDIA")
    assert found.disk_free_mib is not None and found.disk_free_mib > 0 and (found.cpus or 0) >= 1
    missing = parse_probe(
        subprocess.run(["bash", "-c", probe_script("/no/python")], capture_output=True, text=True).stdout
    )
    assert missing.python_version is None


def test_engines_listen_on_loopback_and_take_a_key_only_through_files() -> None:
    plain = spec()
    _, (p,) = plan_host(plain, plain.hosts[0], probe(1))
    assert "--host 127.0.0.1 " in p.engine_command and "--engine-api-key-file" not in p.agent_command
    keyed = spec(engine={"api_key_file": "/secrets/engine.key"})
    paths, (k,) = plan_host(keyed, keyed.hosts[0], probe(1))
    assert "--host 127.0.0.1 " in k.engine_command
    assert f"--engine-api-key-file {paths.engine_key}" in k.agent_command
    assert paths.engine_key.startswith(paths.run) and "VLLM_API_KEY" not in k.engine_env  # set at bootstrap


def test_an_engine_without_a_named_profile_is_measured_and_its_agent_gets_the_result() -> None:
    s = spec(model={"id": "m/llama 7b", "max_num_seqs": 4})  # vLLM, no hosts[].profile, by_gpu or default
    paths, plans = plan_host(s, s.hosts[0], probe(2), peer="10.0.0.5")
    measure = plans[0].measure_command
    assert "profile engine --endpoint http://127.0.0.1:8100" in measure and "--max-batch 4" in measure
    agent = shlex.split(plans[0].agent_command)
    measured = agent[agent.index("--profile") + 1]
    assert measured.startswith(f"{paths.root}/profiles/a-0-") and measured.endswith(".json")
    assert f"test -s {measured} ||" in measure  # kept while the engine is unchanged
    assert plans[0].profile == "h100/llama-2-7b"  # what the spec names (the fallback) is still recorded
    changed = spec(model={"id": "m/llama 7b", "max_num_seqs": 4}, engine={"env": {"A": "1"}})
    _, again = plan_host(changed, changed.hosts[0], probe(2), peer="10.0.0.5")
    assert again[0].measure_command != measure  # another engine: measured again


@pytest.mark.parametrize(
    ("sections", "measured"),
    [
        ({"profiles": {"default": "h100/llama-2-7b"}}, False),  # named by the spec
        ({"profiles": {"by_gpu": {"h100": "h100/llama-2-7b"}}}, False),
        ({"hosts": [{"address": "10.0.0.5", "name": "a", "profile": "h200/llama-2-7b"}]}, False),
        ({"engine": {"kind": "emulator"}}, False),  # the emulator runs a profile already
        ({"engine": {"kind": "emulator"}, "profiles": {"measure": True}}, True),
        ({"profiles": {"measure": False}}, False),
        ({}, True),
    ],
)
def test_when_up_measures_a_profile(sections: dict[str, object], measured: bool) -> None:
    s = spec(**sections)
    _, plans = plan_host(s, s.hosts[0], probe(1), peer="10.0.0.5")
    assert bool(plans[0].measure_command) is measured


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)


class _Conn:
    """A host connection whose commands end as given (an exit status, or an exception)."""

    def __init__(self, ends: int | Exception) -> None:
        self.ends, self.log, self.ran = ends, _Log(), []  # type: ignore[var-annotated]

    async def run(self, command: str, **_: object) -> Completed:
        self.ran.append(command)
        if isinstance(self.ends, Exception):
            raise self.ends
        return Completed(self.ends, "", "cannot connect to http://127.0.0.1:8100" if self.ends else "")


TIMED_OUT = HostError("`profile engine-0` did not finish within 1800s", host="a", stage="measure-profile")


@pytest.mark.parametrize("ends", [0, 2, TIMED_OUT])
def test_a_failed_measurement_falls_back_to_the_named_profile(ends: int | Exception) -> None:
    s = spec(model={"id": "m/llama 7b", "max_num_seqs": 4})
    _, (plan,) = plan_host(s, s.hosts[0], probe(1), peer="10.0.0.5")
    conn, outcome = _Conn(ends), HostOutcome("a")
    got = asyncio.run(_measured(conn, plan, outcome))  # type: ignore[arg-type]
    assert conn.ran == [plan.measure_command]
    agent = shlex.split(got.agent_command)
    if ends == 0:
        assert got == plan and not outcome.notes
        return
    assert agent[agent.index("--profile") + 1] == "h100/llama-2-7b"  # the spec's profile (its default here)
    before = shlex.split(plan.agent_command)
    assert agent[: before.index("--profile")] == before[: before.index("--profile")]  # otherwise the same agent
    assert agent[before.index("--profile") + 2 :] == before[before.index("--profile") + 2 :]
    assert outcome.notes == ["a-0: profile measurement failed, agent uses h100/llama-2-7b (see the host log)"]
    assert any("cannot connect" in line or "did not finish" in line for line in conn.log.lines)


def test_a_lost_connection_while_measuring_is_the_host_failing() -> None:
    s = spec(model={"id": "m/llama 7b"})
    _, (plan,) = plan_host(s, s.hosts[0], probe(1), peer="10.0.0.5")
    with pytest.raises(TransportFailure):
        asyncio.run(_measured(_Conn(TransportFailure("connection lost", host="a", stage="measure-profile")), plan,  # type: ignore[arg-type]
                              HostOutcome("a")))
