"""What to run on one host, decided from the spec and the probe (pure): GPU groups, ports, commands, paths."""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field

from blockctl.cluster.spec import ClusterSpec, HostSpec
from blockctl.cluster.ssh.probe import ProbeResult
from blockctl.errors import HostError

q = shlex.quote


def expand_home(path: str, home: str) -> str:
    if path == "~":
        return home
    if path.startswith("~/"):
        return home.rstrip("/") + path[1:]
    return path


@dataclass(frozen=True, slots=True)
class RemotePaths:
    root: str
    venv: str

    @property
    def python(self) -> str:
        return f"{self.venv}/bin/python"

    @property
    def logs(self) -> str:
        return f"{self.root}/logs"

    @property
    def run(self) -> str:
        return f"{self.root}/run"

    @property
    def token(self) -> str:
        return f"{self.run}/token"

    @property
    def engine_key(self) -> str:
        return f"{self.run}/engine_key"

    @property
    def wheels(self) -> str:
        return f"{self.root}/wheels"


def remote_paths(spec: ClusterSpec, host: HostSpec, home: str) -> RemotePaths:
    root = expand_home(host.root or spec.install.root, home).rstrip("/")
    venv = expand_home(spec.install.venv, home) if spec.install.venv else f"{root}/venv"
    return RemotePaths(root=root, venv=venv.rstrip("/"))


@dataclass(frozen=True, slots=True)
class InstancePlan:
    name: str
    index: int
    gpus: tuple[int, ...]
    profile: str
    engine_port: int
    agent_port: int
    agent_url: str  # as the scheduler reaches it
    engine_command: str
    engine_env: dict[str, str] = field(default_factory=dict)
    agent_command: str = ""
    measure_command: str = ""  # profiles the running engine into the file the agent's --profile names
    fallback_agent_command: str = ""  # the agent with ``profile`` instead, when measuring fails

    def log(self, paths: RemotePaths, role: str) -> str:
        return f"{paths.logs}/{role}-{self.index}.log"

    def pid_file(self, paths: RemotePaths, role: str) -> str:
        return f"{paths.run}/{role}-{self.index}.pid"

    def fingerprint(self, role: str) -> str:
        """Changes when what ``role`` would run changes; a running process with another one is restarted."""
        text = (
            self.engine_command + repr(sorted(self.engine_env.items()))
            if role == "engine"
            else (self.agent_command)
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def engine_needle(self) -> str:
        return port_needle(self.engine_port)

    @property
    def agent_needle(self) -> str:
        return port_needle(self.agent_port)


def port_needle(port: int) -> str:
    """Text that identifies our process by its command line (see ``remote.alive``, which ends it with a space,
    so ``--port 810`` does not match ``--port 8100``)."""
    return f"--port {port} "


def engine_flags(spec: ClusterSpec) -> list[str]:
    """Engine-shape flags given to both the engine and its agent (vLLM's names, which the emulator shares)."""
    m = spec.model
    pairs = [
        ("--max-model-len", m.max_model_len),
        ("--max-num-seqs", m.max_num_seqs),
        ("--max-num-batched-tokens", m.max_num_batched_tokens),
        ("--block-size", m.block_size),
        ("--num-gpu-blocks-override", m.num_gpu_blocks_override),
    ]
    return [tok for flag, value in pairs if value is not None for tok in (flag, str(value))]


def _gpu_groups(spec: ClusterSpec, host: HostSpec, probe: ProbeResult) -> list[tuple[int, ...]]:
    found = {g.index for g in probe.gpus}
    wanted = sorted(found) if host.gpus == "all" else list(host.gpus)
    missing = [g for g in wanted if g not in found]
    if missing:
        have = ", ".join(map(str, sorted(found))) or "none"
        raise HostError(f"GPU(s) {missing} not found (the host has: {have})", host=host.label, stage="plan")
    if not wanted:
        if spec.engine.needs_gpu:
            raise HostError(
                "no NVIDIA GPU found (nvidia-smi missing or lists none) and the engine is vLLM",
                host=host.label,
                stage="plan",
                hint="use engine.kind: emulator, or a CPU engine via engine.command",
            )
        return [() for _ in range(host.instances)]
    tp = spec.model.tensor_parallel_size
    if len(wanted) % tp:
        raise HostError(
            f"{len(wanted)} GPU(s) cannot be split into groups of tensor_parallel_size={tp}",
            host=host.label,
            stage="plan",
            hint="set hosts[].gpus to a multiple of model.tensor_parallel_size",
        )
    return [tuple(wanted[i : i + tp]) for i in range(0, len(wanted), tp)]


def plan_host(
    spec: ClusterSpec, host: HostSpec, probe: ProbeResult, *, peer: str | None = None
) -> tuple[RemotePaths, list[InstancePlan]]:
    """The instances ``host`` should run; HostError(stage='plan') when the spec does not fit the host.

    ``peer`` is the address the SSH connection reached (an alias resolved); agents are reached there unless
    ``hosts[].agent_address`` says otherwise.
    """
    paths = remote_paths(spec, host, probe.home)
    ports = host.ports or spec.ports
    gpu_names = {g.index: g.name for g in probe.gpus}
    python = spec.engine.python or paths.python
    flags = engine_flags(spec)
    plans = []
    for i, group in enumerate(_gpu_groups(spec, host, probe)):
        gpu_name = gpu_names.get(group[0]) if group else None
        profile = spec.profiles.select(gpu_name, host.profile)
        engine_port, agent_port = ports.engine + i, ports.agent + i
        name = f"{host.label}-{i}"
        engine_command = spec.engine.template.format(
            python=q(python),
            model=q(spec.model.id),
            served_model_name=q(spec.model.name),
            port=engine_port,
            tp=spec.model.tensor_parallel_size,
            engine_args=" ".join(map(q, flags)),
            extra_args=" ".join(map(q, spec.model.extra_args)),
            profile=q(profile),
            seed=spec.engine.seed + i,
        )
        env = dict(spec.engine.env)
        if group:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, group))
        measure_command, agent_profile = "", profile
        if spec.profiles.measures(gpu_name, host.profile, spec.engine.kind):
            measure_command, agent_profile = _measure(spec, paths, name, engine_port, engine_command, env)
        agent = (spec, paths, host, name, engine_port, agent_port)  # the agent's command, but for its profile
        agent_command = _agent_command(*agent, agent_profile, flags)
        plans.append(
            InstancePlan(
                name=name,
                index=i,
                gpus=group,
                profile=profile,
                engine_port=engine_port,
                agent_port=agent_port,
                agent_url=f"http://{_url_host(host.agent_address or peer or host.address)}:{agent_port}",
                engine_command=engine_command.strip(),
                engine_env=env,
                agent_command=agent_command,
                measure_command=measure_command,
                fallback_agent_command=_agent_command(*agent, profile, flags) if measure_command else "",
            )
        )
    return paths, plans


def _agent_command(
    spec: ClusterSpec, paths: RemotePaths, host: HostSpec, name: str, engine_port: int, agent_port: int,
    profile: str, flags: list[str],
) -> str:
    return " ".join(
        [
            q(paths.python),
            "-m",
            "blockctl_agents.predictor",
            "--engine-url",
            f"http://127.0.0.1:{engine_port}",
            "--host",
            q(host.agent_bind),
            "--port",
            str(agent_port),
            "--profile",
            q(profile),
            "--token-file",
            q(paths.token),
            "--name",
            q(name),
            *(["--engine-api-key-file", q(paths.engine_key)] if spec.engine.api_key_file else []),
            *map(q, flags),
        ]
    )


def _measure(
    spec: ClusterSpec, paths: RemotePaths, name: str, port: int, engine_command: str, env: dict[str, str]
) -> tuple[str, str]:
    """The host command that profiles a running engine through its API, and the profile file it writes: one
    per engine command, so a kept engine keeps its profile and a changed one is measured again."""
    key = hashlib.sha256((engine_command + repr(sorted(env.items()))).encode()).hexdigest()[:12]
    out = f"{paths.root}/profiles/{name}-{key}.json"
    batch = min(8, spec.model.max_num_seqs or 8)
    profile = " ".join([
        q(paths.python), "-m", "blockctl", "profile", "engine", "--endpoint", f"http://127.0.0.1:{port}",
        "--out", q(out), "--model", q(spec.model.id), "--max-batch", str(batch), "--json",
    ])
    return f"mkdir -p {q(paths.root)}/profiles && (test -s {q(out)} || {profile} > /dev/null)", out


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address
