"""``blockctl bench bad-input``: send the bad-request corpus and count the answers that are OpenAI's 4xx JSON."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import typer

from blockctl.bench.badinput import TARGETS, Report, Target, corpus, run_corpus
from blockctl.cli.ui import console, fail, handle_errors, metric_table, ok, print_json
from blockctl.errors import ConfigError
from blockctl.secrets import read_secret_file

LOCAL_BODY_LIMIT = 1 << 20  # the local servers' body limit (the oversize case sends one byte more)


async def _local() -> tuple[list[Report], dict[str, Any]]:
    from blockctl.bench.badinput_local import local_servers

    with tempfile.TemporaryDirectory(prefix="blockctl-badinput-") as tmp:
        cases = corpus(max_body_bytes=LOCAL_BODY_LIMIT)
        async with local_servers(Path(tmp), max_body_bytes=LOCAL_BODY_LIMIT) as servers:
            reports = [await run_corpus(e.url, t, key=e.key, cases=cases) for t, e in servers.endpoints.items()]
        # the servers are stopped: the request log is flushed and closed
        forwarded = sum(servers.scheduler.metrics.routed.values())
        log = servers.request_log
        logged = len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0
        return reports, {"answered_by_an_instance": forwarded, "request_log_lines": logged}


def _read_key(path: Path | None) -> str | None:
    return read_secret_file(path, what="API key", key="--api-key-file").strip() or None if path else None


@handle_errors
def bad_input(
    endpoint: str | None = typer.Option(None, help="A running server to test (default: start an emulator, "
                                        "an agent and a scheduler on loopback and test all three)."),
    target: str = typer.Option("scheduler", help="What --endpoint is: scheduler, agent or emulator."),
    api_key_file: Path | None = typer.Option(None, help="File holding the endpoint's API key or agent token."),
    max_body_mb: float = typer.Option(32.0, help="The endpoint's body limit in MiB (one byte more is sent)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Send every bad request of the corpus; each answer must be a 4xx with OpenAI's error JSON, never a 5xx."""
    extra: dict[str, Any] = {}
    if endpoint is None:
        reports, extra = asyncio.run(_local())
    else:
        if target not in TARGETS:
            raise ConfigError(f"must be one of {', '.join(TARGETS)}, got {target!r}", key="target")
        cases = corpus(max_body_bytes=int(max_body_mb * (1 << 20)))
        reports = [asyncio.run(run_corpus(endpoint.rstrip("/"), _as_target(target), key=_read_key(api_key_file),
                                          cases=cases))]
    if json_out:
        print_json({"reports": [r.as_dict() for r in reports], **extra})
        return
    rows = [(r.target, f"{r.correct} / {r.tried}") for r in reports]
    tried, correct = sum(r.tried for r in reports), sum(r.correct for r in reports)
    rows.append(("all", f"{correct} / {tried}"))
    if extra:
        rows.append(("request-log lines / requests an instance answered",
                     f"{extra['request_log_lines']} / {extra['answered_by_an_instance']}"))
    console.print(metric_table("bad-input corpus: answered with OpenAI 4xx JSON / tried", rows))
    for r in reports:
        for res in r.results:
            if not res.correct:
                fail(f"{r.target}: {res.case}: {res.problem}" + (f" (HTTP {res.status})" if res.status else ""))
    summary = json.dumps(dict(sum((r.problems() for r in reports), Counter[str]())))
    if correct == tried:
        ok(f"all {tried} bad requests answered with OpenAI's error JSON")
    else:
        fail(f"{tried - correct} of {tried} answered wrongly: {summary}")
        raise typer.Exit(1)


def _as_target(name: str) -> Target:
    for t in TARGETS:
        if t == name:
            return t
    raise ConfigError(f"unknown target {name!r}", key="target")


def register(group: typer.Typer) -> None:
    group.command("bad-input")(bad_input)
