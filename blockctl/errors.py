"""The one error tree of blockctl; library code raises these, only the CLI renders them.

    BlockctlError                 everything blockctl raises on purpose
    ├── ConfigError               a file, key or value given by the user is wrong (names file and key)
    ├── ProfileError              a step-time profile is missing, malformed or cannot be fitted
    ├── WorkloadError             a workload or trace cannot be read
    ├── EngineError               the engine model was asked something impossible (e.g. prompt > KV capacity)
    ├── TaggerError               a length tagger cannot be trained, loaded or run
    ├── UpstreamError             an agent, engine or scheduler answered badly or not at all
    │   └── InstanceUnavailable   an agent says its instance takes no requests now (engine sick, draining)
    ├── BadRequest                an HTTP client sent a body we refuse (rendered as OpenAI's 4xx error JSON)
    └── ClusterError              the cluster cannot be brought to the wanted state
        ├── StateError            the local state directory is missing or inconsistent
        └── HostError             one host failed one stage (names host, stage, exit status, stderr tail)

Every error carries an optional ``hint``: the next command a user should try.
"""

from __future__ import annotations


class BlockctlError(Exception):
    """Base of every error blockctl raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(BlockctlError):
    """Bad user input in a file or option; ``source`` names the file, ``key`` the dotted key."""

    def __init__(
        self, message: str, *, source: str | None = None, key: str | None = None, hint: str | None = None
    ) -> None:
        where = ":".join(p for p in (source, key) if p)
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.source = source
        self.key = key


class ProfileError(BlockctlError):
    """A step-time profile is missing, malformed or cannot be fitted."""


class WorkloadError(BlockctlError):
    """A workload, dataset or trace file cannot be read."""


class EngineError(BlockctlError):
    """The engine model was asked to do something it cannot (e.g. a prompt larger than the KV cache)."""


class TaggerError(BlockctlError):
    """A length tagger cannot be trained, loaded or run."""


class UpstreamError(BlockctlError):
    """An agent, engine or scheduler answered badly or not at all."""

    def __init__(self, message: str, *, url: str | None = None, hint: str | None = None, sent: bool = True) -> None:
        super().__init__(f"{url}: {message}" if url else message, hint=hint)
        self.url = url
        # False only when the request provably never left this process (connection refused, or a pooled
        # connection found closed before anything was written): only then may it be sent elsewhere.
        self.sent = sent


class InstanceUnavailable(UpstreamError):
    """An agent answered that its instance takes no requests now (its engine is sick, or it is draining)."""


class BadRequest(BlockctlError):
    """A client's request is invalid; servers render it with ``blockctl.openai_api.error_response``."""

    def __init__(
        self, message: str, *, param: str | None = None, status: int = 400, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.param = param
        self.status = status
        self.code = code


class ClusterError(BlockctlError):
    """The cluster cannot be brought to the wanted state."""


class StateError(ClusterError):
    """The local state directory is missing or inconsistent."""


class HostError(ClusterError):
    """One host failed one bootstrap stage."""

    def __init__(
        self,
        message: str,
        *,
        host: str,
        stage: str,
        exit_status: int | None = None,
        stderr_tail: str = "",
        hint: str | None = None,
    ) -> None:
        detail = f"{host}: stage '{stage}' failed"
        if exit_status is not None:
            detail += f" (exit {exit_status})"
        super().__init__(f"{detail}: {message}", hint=hint)
        self.host = host
        self.stage = stage
        self.exit_status = exit_status
        self.stderr_tail = stderr_tail
