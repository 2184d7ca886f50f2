"""The JSON results file of a benchmark run (live or simulated): schema, save and load.

Schema (version 1)::

    {
      "version": 1,
      "kind": "live" | "sim",          # measured over HTTP, or in the cluster simulator
      "label": "block",                # the run's name in side-by-side reports (policy or user label)
      "created": "2026-01-01T12:00:00Z",
      "config": {...},                 # what was run: endpoint, workload, requests, qps, arrival, seed, ...
      "summary": {                     # blockctl.bench.metrics.Summary; seconds and per-second rates
        "requests", "completed", "failed", "duration_s", "request_throughput", "output_token_throughput",
        "total_token_throughput", "goodput", "slo_attainment", "errors": {message: count},
        "ttft" | "tpot" | "itl" | "e2e" | "lateness": {"n", "mean", "p50", "p90", "p99", "max"}
      },
      "records": [                     # blockctl.bench.metrics.RequestRecord, one a request, failed ones too
        {"index", "prompt_tokens", "output_tokens", "expected_output_tokens", "scheduled_s", "sent_s",
         "ttft_s", "e2e_s", "itl_s": [...], "instance", "predicted_e2e_s", "predicted_output_tokens", "error"}
      ]
    }

Numbers that are undefined (a statistic over no requests) are written as null.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from blockctl.bench.metrics import RequestRecord, RequestSlo, Summary, summarize
from blockctl.errors import ConfigError

SCHEMA_VERSION = 1


@dataclass(slots=True)
class RunResult:
    label: str
    kind: str  # "live" | "sim"
    config: dict[str, Any]
    records: list[RequestRecord]
    summary: Summary
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    @classmethod
    def build(
        cls,
        label: str,
        kind: str,
        config: dict[str, Any],
        records: list[RequestRecord],
        *,
        slo: RequestSlo | None = None,
        duration_s: float | None = None,
    ) -> RunResult:
        """A result whose summary is computed from ``records`` (the simulator passes its own duration)."""
        return cls(label, kind, config, records, summarize(records, slo=slo, duration_s=duration_s))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "kind": self.kind,
            "label": self.label,
            "created": self.created,
            "config": self.config,
            "summary": self.summary.to_dict(),
            "records": [r.to_dict() for r in self.records],
        }


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by None (strict JSON has neither)."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def dumps(result: RunResult) -> str:
    return json.dumps(jsonable(result.to_dict()), allow_nan=False)


def save_results(path: str | Path, result: RunResult) -> Path:
    """Write ``result`` to ``path`` atomically (temp file + rename); ConfigError naming the path if not."""
    path = Path(path)
    text = dumps(result)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write results: {exc.strerror}", source=str(path)) from exc
    return path


def load_results(path: str | Path) -> RunResult:
    """Read a results file; ConfigError naming the file (and key) when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read results: {exc.strerror}", source=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON (line {exc.lineno}): {exc.msg}", source=str(path)) from exc
    return from_dict(data, source=str(path))


def from_dict(data: Any, *, source: str = "<results>") -> RunResult:
    if not isinstance(data, dict):
        raise ConfigError("a results file is a JSON object", source=source)
    version = data.get("version")
    if version != SCHEMA_VERSION:
        raise ConfigError(f"unsupported results version {version!r} (expected 1)", source=source, key="version")
    for key, kind in (("label", str), ("kind", str), ("config", dict), ("summary", dict), ("records", list)):
        if not isinstance(data.get(key), kind):
            raise ConfigError(f"missing or not a {kind.__name__}", source=source, key=key)
    try:
        records = [RequestRecord.from_dict(r) for r in data["records"]]
        summary = Summary.from_dict(data["summary"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ConfigError(f"malformed: {exc}", source=source, key="records/summary") from exc
    return RunResult(data["label"], data["kind"], data["config"], records, summary, str(data.get("created", "")))
