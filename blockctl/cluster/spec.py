"""The YAML cluster spec for `blockctl up -c FILE`: pydantic models, validated at load, JSON Schema export.

Every model forbids unknown keys, so a typo is reported with its dotted key instead of being ignored.
Engine command templates are ``str.format`` templates over ``TEMPLATE_FIELDS``; values are shell-quoted
when rendered (see ``blockctl.cluster.ssh.plan``).
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from blockctl.errors import ConfigError

DEFAULT_PROFILE = "h100/llama-2-7b"  # same as blockctl.engine.profile.DEFAULT_PROFILE

# Fields an engine command template may use.
TEMPLATE_FIELDS = frozenset(
    {"python", "model", "served_model_name", "port", "tp", "engine_args", "extra_args", "profile", "seed"}
)

ENGINE_TEMPLATES: dict[str, str] = {
    "vllm": "{python} -m vllm.entrypoints.openai.api_server --model {model} --served-model-name "
    "{served_model_name} --host 127.0.0.1 --port {port} --tensor-parallel-size {tp} "
    "{engine_args} {extra_args}",
    "emulator": "{python} -m blockctl_agents.emulator --host 127.0.0.1 --port {port} --profile {profile} "
    "--served-model-name {served_model_name} --seed {seed} {engine_args} {extra_args}",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PortSpec(_Model):
    """Base ports; instance ``i`` on a host uses ``base + i``."""

    engine: int = Field(
        default=8100, ge=1, le=65535, description="Engine port of instance 0 (loopback on the host)."
    )
    agent: int = Field(
        default=8200, ge=1, le=65535, description="Agent port of instance 0 (reached by the scheduler)."
    )


class HostSpec(_Model):
    address: str = Field(description="Host name, IP address or ~/.ssh/config alias.")
    name: str | None = Field(default=None, description="Name in status and logs (default: address).")
    user: str | None = Field(default=None, description="SSH user (default: ssh config, then the local user).")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="SSH port (default: ssh config, then 22)."
    )
    identity_file: str | None = Field(
        default=None, description="Private key file (default: ssh config / agent)."
    )
    gpus: Literal["all"] | list[int] = Field(
        default="all", description="GPU indices to use, or 'all' detected."
    )
    instances: int = Field(
        default=1, ge=1, description="Engine instances on a host without GPUs (emulator or CPU engines only)."
    )
    standby: bool = Field(
        default=False, description="Kept out of `up`; used by the autoscaler when load grows."
    )
    profile: str | None = Field(
        default=None, description="Step-time profile for this host (overrides detection)."
    )
    agent_address: str | None = Field(
        default=None,
        description="Address the scheduler uses to reach this host's agents (default: where SSH got).",
    )
    agent_bind: str = Field(default="0.0.0.0", description="Address the agents bind on the host.")
    ports: PortSpec | None = Field(
        default=None, description="Per-host base ports (default: top-level ports)."
    )
    root: str | None = Field(
        default=None, description="Install/run directory on this host (default: install.root)."
    )

    @property
    def label(self) -> str:
        return self.name or self.address


class ModelSpec(_Model):
    id: str = Field(description="Hugging Face model id or a path on the hosts.")
    served_model_name: str | None = Field(default=None, description="Name clients use (default: id).")
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per engine instance.")
    max_model_len: int | None = Field(default=None, ge=1)
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    block_size: int | None = Field(default=None, ge=1)
    num_gpu_blocks_override: int | None = Field(default=None, ge=1)
    extra_args: list[str] = Field(default_factory=list, description="Appended to the engine command.")

    @property
    def name(self) -> str:
        return self.served_model_name or self.id


class EngineSpec(_Model):
    kind: Literal["vllm", "emulator", "custom"] = Field(
        default="vllm", description="Which command template to use."
    )
    command: str | None = Field(
        default=None,
        description="Command template overriding the kind's; fields: " + ", ".join(sorted(TEMPLATE_FIELDS)),
    )
    python: str | None = Field(
        default=None, description="Interpreter for {python} (default: the install venv's)."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the engine.")
    health_timeout_s: float = Field(
        default=900.0, gt=0, description="How long to wait for the engine's /health."
    )
    seed: int = 0
    api_key_file: str | None = Field(
        default=None,
        description="Local file (mode 0600) with an API key the engine then requires (vLLM's VLLM_API_KEY, set in "
        "its 0600 env file); the agent sends it. Engines listen on 127.0.0.1 only, key or not.",
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
        if bad:
            raise ValueError(f"not environment variable names: {bad}")
        return value

    @field_validator("command")
    @classmethod
    def _known_fields(cls, value: str | None) -> str | None:
        if value is not None:
            check_template(value)
        return value

    @model_validator(mode="after")
    def _custom_needs_command(self) -> EngineSpec:
        if self.kind == "custom" and not self.command:
            raise ValueError("engine.kind 'custom' needs engine.command")
        return self

    @property
    def template(self) -> str:
        return self.command or ENGINE_TEMPLATES[self.kind]

    @property
    def needs_gpu(self) -> bool:
        return self.kind == "vllm" and self.command is None


class SchedulerSpec(_Model):
    daemons: int = Field(default=1, ge=1, description="Local scheduler daemons (stateless replicas).")
    host: str = Field(default="127.0.0.1", description="Address the public OpenAI endpoint binds.")
    port: int = Field(
        default=8000, ge=1, le=65535, description="Port of the first daemon; the others use port + i."
    )
    policy: str = Field(default="block", description="Routing policy name (see `blockctl up --help`).")
    policy_params: dict[str, Any] = Field(default_factory=dict)
    tagger: str | None = Field(default=None, description="Length tagger directory (default: none).")
    api_key_file: str | None = Field(
        default=None, description="File with the API key(s) clients must send, one a line."
    )
    request_log: str | None = Field(
        default=None, description="Request log, -PORT added per daemon (default STATE/logs/requests.jsonl)."
    )
    request_log_enabled: bool = Field(default=True, description="One JSON line per answered request.")
    request_log_max_mb: float | None = Field(default=None, gt=0, description="Rotate past this size (MB, def. 64).")
    request_log_backups: int | None = Field(default=None, ge=0, description="Rotated files kept (default 5).")
    log_prompts: bool = Field(default=False, description="Prompt text in the request log (for retraining).")
    predict_timeout_ms: float | None = Field(
        default=None, gt=0, description="Deadline for all agents' /predict answers to one request (ms, def. 100)."
    )
    max_retries: int | None = Field(
        default=None, ge=0, description="Further instances tried for a request that provably did not run (def. 2)."
    )
    first_byte_floor_s: float | None = Field(
        default=None, gt=0, description="Seconds a forwarded request may wait for its first byte at least (def. 10)."
    )
    first_byte_factor: float | None = Field(
        default=None, gt=0, description="First-byte deadline = max(floor, this x predicted TTFT or E2E) (def. 4)."
    )
    idle_timeout_s: float | None = Field(
        default=None, gt=0, description="Longest gap between streamed chunks, seconds (default 30)."
    )
    drain_s: float | None = Field(
        default=None, ge=0, description="After SIGTERM, seconds requests in flight may still run (default 5)."
    )

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        from blockctl.scheduler.policies import POLICIES  # the registry; checked before any host is touched

        if value not in POLICIES:
            raise ValueError(f"unknown policy '{value}'; known: {', '.join(sorted(POLICIES))}")
        return value


class SloSpec(_Model):
    ttft_s: float | None = Field(default=None, gt=0, description="Time-to-first-token objective, seconds.")
    e2e_s: float | None = Field(default=None, gt=0, description="End-to-end latency objective, seconds.")
    tpot_s: float | None = Field(default=None, gt=0, description="Time-per-output-token objective, seconds.")


class ProfileSpec(_Model):
    default: str = Field(default=DEFAULT_PROFILE, description="Profile when no rule matches.")
    by_gpu: dict[str, str] = Field(
        default_factory=dict, description="Substring of the detected GPU name (case-insensitive) -> profile."
    )

    measure: bool | None = Field(
        default=None,
        description="Profile each new engine through its API (blockctl profile engine) and give its agent that "
        "profile, kept on the host while the engine is unchanged. Default: on for a vLLM engine when no profile "
        "is named for it (no hosts[].profile, no by_gpu rule matching its GPU, no profiles.default).",
    )

    def select(self, gpu_name: str | None, override: str | None = None) -> str:
        return self._named(gpu_name, override) or self.default

    def _named(self, gpu_name: str | None, override: str | None) -> str | None:
        if override:
            return override
        if gpu_name:
            for needle, profile in self.by_gpu.items():
                if needle.lower() in gpu_name.lower():
                    return profile
        return self.default if "default" in self.model_fields_set else None

    def measures(self, gpu_name: str | None, override: str | None, engine_kind: str) -> bool:
        """Whether ``up`` profiles this engine itself (see ``measure``)."""
        if self.measure is not None:
            return self.measure
        return engine_kind != "emulator" and self._named(gpu_name, override) is None


class SshSpec(_Model):
    known_hosts: str | None = Field(
        default=None, description="known_hosts file (default: ~/.ssh/known_hosts)."
    )
    insecure_skip_host_key_check: bool = Field(
        default=False, description="Accept any host key (man-in-the-middle risk)."
    )
    config_file: str | None = Field(
        default=None, description="OpenSSH client config (default: ~/.ssh/config)."
    )
    connect_timeout_s: float = Field(default=15.0, gt=0)
    connect_attempts: int = Field(
        default=3, ge=1, description="Tries on transport failures (never on auth failures)."
    )


class InstallSpec(_Model):
    mode: Literal["wheel", "existing"] = Field(
        default="wheel",
        description="'wheel': build locally, upload, pip-install; 'existing': use install.venv as is.",
    )
    python: str = Field(default="python3", description="Interpreter on the host that creates the venv.")
    root: str = Field(
        default="~/.blockctl", description="Directory on the host for the venv, logs and run files."
    )
    venv: str | None = Field(default=None, description="Venv on the host (default: {root}/venv).")
    system_site_packages: bool = False
    vllm: Literal["existing", "install"] = Field(
        default="existing", description="'install' pip-installs vllm_requirement into the venv."
    )
    vllm_requirement: str = "vllm"
    pip_args: list[str] = Field(default_factory=list, description="Extra arguments for pip install.")
    wheel: str | None = Field(
        default=None, description="Local prebuilt blockctl wheel (default: build from source)."
    )


class ClusterSpec(_Model):
    hosts: list[HostSpec] = Field(min_length=1)
    model: ModelSpec
    engine: EngineSpec = Field(default_factory=lambda: EngineSpec())
    ports: PortSpec = Field(default_factory=lambda: PortSpec())
    scheduler: SchedulerSpec = Field(default_factory=lambda: SchedulerSpec())
    slo: SloSpec = Field(default_factory=lambda: SloSpec())
    profiles: ProfileSpec = Field(default_factory=lambda: ProfileSpec())
    ssh: SshSpec = Field(default_factory=lambda: SshSpec())
    install: InstallSpec = Field(default_factory=lambda: InstallSpec())
    autoscale: dict[str, Any] = Field(
        default_factory=dict,
        description="`blockctl scale --auto` settings (blockctl.cluster.scaler.AutoscaleConfig).",
    )

    @field_validator("autoscale")
    @classmethod
    def _autoscale(cls, value: dict[str, Any]) -> dict[str, Any]:
        from blockctl.cluster.scaler import AutoscaleConfig

        if value:
            try:
                AutoscaleConfig.from_mapping(value)
            except ConfigError as exc:
                raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> ClusterSpec:
        seen: set[str] = set()
        for host in self.hosts:
            if host.label in seen:
                raise ValueError(f"two hosts are named '{host.label}'; give one a distinct `name`")
            seen.add(host.label)
        return self

    def host(self, label: str) -> HostSpec:
        for host in self.hosts:
            if host.label == label:
                return host
        raise ConfigError(f"no host named '{label}'", key="hosts", hint="blockctl status")


def check_template(template: str) -> None:
    """Raise ValueError when a command template uses a field outside TEMPLATE_FIELDS or is malformed."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"bad command template: {exc}") from None
    unknown = names - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(f"unknown template field(s) {sorted(unknown)}; known: {sorted(TEMPLATE_FIELDS)}")


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, str) and any(c in part for c in "[(,"):
            continue  # pydantic's union-member tag (e.g. "literal['all']"), not a key
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_spec(data: Any, *, source: str = "<spec>") -> ClusterSpec:
    """Validate already-parsed YAML/JSON; ConfigError names the source, the bad key(s) and each problem."""
    if not isinstance(data, dict):
        raise ConfigError(
            "the cluster spec must be a mapping with at least `hosts` and `model`", source=source
        )
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for err in exc.errors(include_url=False):
            key = _dotted(tuple(err["loc"])) or "(top level)"
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (see `blockctl config schema`)"
            problems[key] = f"{problems[key]}, or {msg}" if key in problems else msg
        if len(problems) == 1:
            ((key, msg),) = problems.items()
            raise ConfigError(msg, source=source, key=key) from None
        raise ConfigError("; ".join(f"{k}: {m}" for k, m in problems.items()), source=source) from None


def load_spec(path: str | Path) -> ClusterSpec:
    """Read and validate a cluster spec file; no side effects."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the cluster spec: {exc.strerror}", source=str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML{where}: {problem}", source=str(p)) from None
    return parse_spec(data, source=str(p))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the cluster spec (what `blockctl config schema` prints)."""
    schema = ClusterSpec.model_json_schema()
    schema["title"] = "blockctl cluster spec"
    return schema
