"""``blockctl bench accuracy --endpoint AGENT_URL``: the agent's prediction error against whatever engine it fronts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from rich.table import Table

from blockctl.cli.ui import console, err_console, ok, print_json
from blockctl.errors import ConfigError, UpstreamError

E2E_TARGET_PCT = 10.0
TTFT_TARGET_PCT = 20.0
BASELINE_GAIN = 0.30  # the agent must beat the constant baseline's MAPE by this share
SCRAPE_SETTLE_S = 1.0  # four of the agent's engine scrapes


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise ConfigError(f"expected LO-HI, got {text!r}", key="--concurrency") from None
    if not 1 <= a <= b:
        raise ConfigError(f"need 1 <= LO <= HI, got {text!r}", key="--concurrency")
    return a, b


def _state(url: str, headers: dict[str, str]) -> dict[str, Any] | None:
    """The agent's ``/state``; None when it does not answer with a JSON object."""
    try:
        state = httpx.get(f"{url}/state", headers=headers, timeout=10, trust_env=False).json()
    except (httpx.HTTPError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _engine_prefix_hits(state: dict[str, Any] | None) -> float | None:
    """The engine's ``vllm:prefix_cache_hits`` total as the agent last scraped it."""
    cache = (state or {}).get("prefix_cache") or {}
    hits = cache.get("engine_hits")
    return float(hits) if isinstance(hits, int | float) else None


def _scored_since(before: dict[str, Any] | None, after: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    """The agent's ``errors.KEY`` over the requests it scored between two ``/state``s: count, MAPE, bias."""
    def totals(state: dict[str, Any] | None) -> tuple[int, float, float]:
        part = ((state or {}).get("errors") or {}).get(key) or {}
        n = int(part.get("count") or 0)
        return n, float(part.get("mape_pct") or 0.0) * n, float(part.get("bias_pct") or 0.0) * n

    if after is None or not ((after.get("errors") or {}).get(key)):
        return None
    (n0, a0, b0), (n1, a1, b1) = totals(before), totals(after)
    n = n1 - n0
    return {"n": n, "mape_pct": (a1 - a0) / n if n > 0 else None, "bias_pct": (b1 - b0) / n if n > 0 else None}


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.1f}"


def endpoint_accuracy(url: str, requests: int, concurrency: str, api_key: str, seed: int, json_out: bool,
                      qps: float | None = None) -> None:
    """``qps``: open-loop Poisson arrivals at that rate instead of the closed loop's ``concurrency``."""
    from blockctl_agents.predictor.bench_endpoint import drive, report, workload

    lo_hi = _range(concurrency)
    if qps is not None and not (qps > 0 and qps < float("inf")):
        raise ConfigError(f"expected a positive rate, got {qps}", key="--qps")
    url = url.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        models = httpx.get(f"{url}/v1/models", headers=headers, timeout=10, trust_env=False)
        models.raise_for_status()
        card = (models.json().get("data") or [{}])[0]
    except (httpx.HTTPError, ValueError) as exc:
        raise UpstreamError(f"{url}/v1/models: {exc}", hint="is the agent up, and --api-key right?") from None
    max_len = int(card.get("max_model_len") or 2048)
    reqs = workload(requests, max_len, seed)
    before = _state(url, headers)
    hits_before = _engine_prefix_hits(before)
    outcomes, wall = asyncio.run(drive(url, headers, reqs, seed, concurrency=lo_hi, qps=qps))
    time.sleep(SCRAPE_SETTLE_S)  # the agent's next scrapes carry the engine's counters past the last request
    state = _state(url, headers)
    hits_after = _engine_prefix_hits(state)
    result: dict[str, Any] = {
        "endpoint": url, "model": card.get("id"), "max_model_len": max_len,
        "concurrency": None if qps is not None else list(lo_hi), "qps": qps, "seed": seed, **report(outcomes, wall),
        # prompt tokens the engine served from its prefix cache during the run (0 expected: the prompts are
        # fresh random ids); null when the agent reports no engine counters
        "engine_prefix_hit_tokens": None if hits_before is None or hits_after is None else hits_after - hits_before,
        "agent": None if state is None else {k: state.get(k) for k in ("profile", "calibration", "learning")},
    }
    # the decode's error split (bench_endpoint's docstring): as the agent scored its prediction, and the step
    # model given the batches each request actually ran in (null when the agent does not learn steps)
    result["decode_split"] = {"agent": _scored_since(before, state, "decode"),
                              "given_batches": _scored_since(before, state, "decode_given_batches")}
    if json_out:
        print_json(result)
        return
    _print(result)


def _print(r: dict[str, Any]) -> None:
    load = f"Poisson arrivals at {r['qps']:g}/s" if r["qps"] is not None else \
        f"{r['concurrency'][0]}-{r['concurrency'][1]} in flight"
    table = Table(title=f"prediction accuracy at {r['endpoint']} ({r['completed']} of {r['requests']} completed, "
                  f"{load})")
    for col in ("requests", "n", "E2E MAPE %", "E2E bias %", "TTFT MAPE %", "TTFT bias %"):
        table.add_column(col, justify="right" if col != "requests" else "left")

    def add(name: str, part: dict[str, Any] | None) -> None:
        if part:
            e, t = part["e2e"], part["ttft"]
            table.add_row(name, str(e["n"]), _fmt(e["mape_pct"]), _fmt(e["bias_pct"]), _fmt(t["mape_pct"]),
                          _fmt(t["bias_pct"]))

    add("all", {"e2e": r["e2e"], "ttft": r["ttft"]})
    add("first third", r["first_third"])
    add("last third", r["last_third"])
    add("after 100", r["after_100"])
    for name, part in r["by_inflight_at_dispatch"].items():
        add(f"{name} in flight at dispatch", part)
    add("constant baseline (hindsight)", r["constant_baseline"] or None)
    console.print(table)
    _print_decode(r)
    hits = r.get("engine_prefix_hit_tokens")
    if hits:
        err_console.print(f"[yellow]![/yellow] the engine served {hits:.0f} prompt tokens from its prefix cache during "
                          "the run (another client's traffic?): the agent priced them as uncached")
    scored = r["after_100"] or {"e2e": r["e2e"], "ttft": r["ttft"]}
    base = (r["constant_baseline_after_100"] if r["after_100"] else r["constant_baseline"]) or {}
    over = "after 100 requests" if r["after_100"] else f"over all {r['completed']} (100 or fewer)"
    for key, target in (("e2e", E2E_TARGET_PCT), ("ttft", TTFT_TARGET_PCT)):
        mape = scored[key]["mape_pct"]
        base_mape = (base.get(key) or {}).get("mape_pct")
        what = f"{key.upper()} MAPE {_fmt(mape)} % {over}"
        if mape is not None and mape <= target:
            ok(f"{what} (target ≤ {target:g} %)")
        else:
            err_console.print(f"[yellow]![/yellow] {what}: misses the target ≤ {target:g} %")
        if mape is not None and base_mape:
            gain = 1 - mape / base_mape
            line = f"{key.upper()} {gain:+.0%} vs the constant baseline ({_fmt(base_mape)} %)"
            if gain >= BASELINE_GAIN:
                ok(f"{line} (target ≥ {BASELINE_GAIN:.0%} better)")
            else:
                err_console.print(f"[yellow]![/yellow] {line}: misses ≥ {BASELINE_GAIN:.0%} better")


def _print_decode(r: dict[str, Any]) -> None:
    """The decode's error: the agent's prediction, the step model given the actual batches, the constant."""
    split = r.get("decode_split") or {}
    given = split.get("given_batches")
    rows = [("agent, predicted at dispatch", r.get("decode")),
            ("constant baseline (hindsight)", (r.get("constant_baseline") or {}).get("decode")),
            ("agent's step model, given the batches each request ran in", given)]
    table = Table(title="decode time (first to last token): where the E2E error comes from")
    table.add_column("predictor")
    table.add_column("n", justify="right")
    table.add_column("MAPE %", justify="right")
    table.add_column("bias %", justify="right")
    for name, part in rows:
        if part:
            table.add_row(name, str(part["n"]), _fmt(part["mape_pct"]), _fmt(part.get("bias_pct")))
    console.print(table)
    if given and given.get("mape_pct") is not None:
        ok(f"given the batches, the model prices a request's decode within {given['mape_pct']:.1f} % (MAPE); the "
           "rest of the agent's decode error is the traffic that arrived after its prediction")
