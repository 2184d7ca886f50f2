"""``blockctl bench predictor`` (prediction speed, agent RSS) and ``blockctl bench accuracy`` (its error)."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import httpx
import typer

from blockctl.cli.ui import console, err_console, handle_errors, metric_table, ok, print_json

SPEED_TARGET_US = 1000.0
SATURATED_P50_US = 300.0  # what-if CPU µs over states from a saturated simulation
SATURATED_P99_US = 1000.0
RSS_TARGET_MB = 150.0
E2E_MAPE_TARGET_PCT = 8.0
LATE_WARN = 0.05  # emulator lateness (share of emulated time) above which the host dominates the error


def _fmt(value: Any, unit: str = "") -> str:
    return "—" if value is None else f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _verdict(value: Any, target: float, what: str, target_text: str) -> None:
    """✓ when ``value`` meets the (upper-bound) target, a yellow ! otherwise; never an error exit."""
    if isinstance(value, int | float) and value <= target:
        ok(f"{what} ({target_text})")
    else:
        err_console.print(f"[yellow]![/yellow] {what}: misses the {target_text}")


@handle_errors
def predictor(
    running: int = typer.Option(48, help="Running requests in the synthetic in-flight table."),
    waiting: int = typer.Option(32, help="Waiting requests in the synthetic in-flight table."),
    predictions: int = typer.Option(2000, help="Predictions to time."),
    profile: str = typer.Option("h100/llama-2-7b", help="Step-time profile."),
    process: bool = typer.Option(True, help="Also start an emulator + agent and measure the agent's RSS."),
    distributions: bool = typer.Option(
        False, "--distributions/--exact-lengths",
        help="In-flight lengths as distributions (the prior at each mean), as the agent keeps a tagger's."),
    saturated: bool = typer.Option(
        True, help="Also time what-ifs over states sampled from a saturated simulation (12 instances, "
        "--running sequences, 512-token budget, 1052 KV blocks, ShareGPT, noisy:50 lengths)."),
    states: int = typer.Option(300, "--states", min=1, help="Saturated states to sample."),
    saturation_qps: float = typer.Option(260.0, "--saturation-qps", help="QPS offered to the saturated cluster."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Microseconds per prediction (p50, p99) through the agent's own prediction function, over states
    sampled from a saturated simulation (most meet a preemption), agent RSS, and online learning's CPU."""
    from blockctl.engine.profile import load_profile
    from blockctl_agents.predictor.bench_learn import learning_cost
    from blockctl_agents.predictor.bench_speed import measure_agent_process, synthetic_core, time_predictions
    from blockctl_agents.predictor.launch import local_instance

    speed = time_predictions(synthetic_core(running, waiting, profile=profile, distributions=distributions),
                             predictions)
    result: dict[str, Any] = {"profile": profile, "distributions": distributions,
                              "in_process": dataclasses.asdict(speed)}
    result["online_learning"] = learning_cost(load_profile(profile))
    if saturated:
        from blockctl.bench.sim.run import SimSetup
        from blockctl.bench.sim.states import saturated_states, time_states

        setup = SimSetup(12, profile, running, 512, 1052, "sharegpt", lengths="noisy:50", duration=120.0)
        sampled = saturated_states(setup, saturation_qps, states, running=running, waiting=waiting)
        result["saturated"] = {"qps": saturation_qps, **dataclasses.asdict(time_states(setup, sampled))}
    if process:
        with (
            tempfile.TemporaryDirectory(prefix="blockctl-bench-") as tmp,
            local_instance(Path(tmp), profile=profile) as inst,
        ):
            result["process"] = asyncio.run(
                measure_agent_process(
                    inst.agent_url, inst.auth(), inst.agent_pid, inflight=running + waiting, predictions=200
                )
            )
    result["targets"] = {"p50_us": SPEED_TARGET_US, "rss_mb": RSS_TARGET_MB,
                         "saturated_p50_us": SATURATED_P50_US, "saturated_p99_us": SATURATED_P99_US}
    if json_out:
        print_json(result)
        return
    rows = [
        ("predictions", str(speed.predictions)),
        ("view (running / waiting)", f"{speed.running} / {speed.waiting}"),
        ("p50 µs", _fmt(speed.p50_us)),
        ("p99 µs", _fmt(speed.p99_us)),
        ("mean µs", _fmt(speed.mean_us)),
        ("view-building p50 µs", _fmt(speed.view_p50_us)),
        ("online learning CPU µs per streamed token", _fmt(result["online_learning"]["learning_us_per_token"])),
    ]
    if "process" in result:
        p = result["process"]
        rows += [
            ("agent RSS MB", _fmt(p["agent_rss_mb"])),
            ("HTTP /predict p50 ms", _fmt(p["http_predict_p50_ms"])),
            ("HTTP /predict p99 ms", _fmt(p["http_predict_p99_ms"])),
        ]
    sat = result.get("saturated")
    if sat is not None:
        rows += [
            (f"saturated states ({sat['qps']:g} QPS offered)", str(sat["states"])),
            ("… meeting a preemption", str(sat["preempting"])),
            ("… what-if p50 / p99 CPU µs", f"{_fmt(sat['p50_us'])} / {_fmt(sat['p99_us'])}"),
            ("… preempting ones p50 / p99 µs", f"{_fmt(sat['preempting_p50_us'])} / {_fmt(sat['preempting_p99_us'])}"),
        ]
    console.print(metric_table(f"predictor speed ({profile})", rows))
    _verdict(
        speed.p50_us, SPEED_TARGET_US, f"p50 {speed.p50_us:.0f} µs per prediction", f"target ≤ {SPEED_TARGET_US:.0f} µs"
    )
    if sat is not None:
        _verdict(sat["p50_us"], SATURATED_P50_US, f"saturated p50 {sat['p50_us']:.0f} µs",
                 f"target ≤ {SATURATED_P50_US:.0f} µs")
        _verdict(sat["p99_us"], SATURATED_P99_US, f"saturated p99 {sat['p99_us']:.0f} µs",
                 f"target ≤ {SATURATED_P99_US:.0f} µs")
    rss = result.get("process", {}).get("agent_rss_mb")
    if rss is not None:
        _verdict(rss, RSS_TARGET_MB, f"agent RSS {rss:.0f} MB", f"target ≤ {RSS_TARGET_MB:.0f} MB")


@handle_errors
def accuracy(
    requests: int = typer.Option(300, help="Requests to send."),
    qps: float = typer.Option(4.0, help="Mean arrival rate (Poisson)."),
    lengths: str = typer.Option(
        "oracle", help="Predicted output lengths: oracle, noisy:PCT, fixed:N or tagger:DIR (the latter two as "
        "distributions, as the router sends them; tagger:DIR on prompts it never trained on)."),
    workload: str = typer.Option("synthetic-sharegpt", help="Workload spec (see blockctl.bench.workloads)."),
    profile: str = typer.Option("h100/llama-2-7b", help="Step-time profile of the emulator and the agent."),
    seed: int = typer.Option(0, help="Seed of workload, arrivals, length noise and emulator."),
    virtual: bool = typer.Option(
        False,
        "--virtual",
        help="Replay in virtual time (engine model with the profile's noise + the agent's core, no processes): "
        "the predictor's own error, free of host load and HTTP overhead.",
    ),
    endpoint: str = typer.Option(
        "",
        "--endpoint",
        help="URL of a running agent in front of any engine: closed-loop load through it (or --open-loop), no "
        "emulator started (--requests, --concurrency, --seed apply).",
    ),
    max_num_seqs: int | None = typer.Option(None, "--max-num-seqs", min=1,
                                            help="The emulated engine's setting (default: the profile's, 256)."),
    max_num_batched_tokens: int | None = typer.Option(None, "--max-num-batched-tokens", min=1,
                                                      help="The emulated engine's setting (default 2048)."),
    caching: bool = typer.Option(True, "--enable-prefix-caching/--no-enable-prefix-caching",
                                 help="The emulated engine's prefix cache (vLLM's default: on); off, prompts that "
                                      "share prefixes are all computed: the same traffic with nothing shared."),
    concurrency: str = typer.Option("2-8", help="With --endpoint: requests in flight, LO-HI, redrawn every 10."),
    open_loop: bool = typer.Option(False, "--open-loop",
                                   help="With --endpoint: Poisson arrivals at --qps instead of the closed loop."),
    api_key: str = typer.Option("", envvar="BLOCKCTL_API_KEY", help="With --endpoint: the agent's bearer token."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Predicted vs actual E2E and TTFT of requests through a live agent (an emulated instance, or --endpoint)."""
    if endpoint:
        from blockctl.cli.bench_endpoint import endpoint_accuracy

        endpoint_accuracy(endpoint, requests, concurrency, api_key, seed, json_out, qps if open_loop else None)
        return
    from blockctl.bench.sim.lengths import held_out_workload, parse_lengths, predicted_dists, predicted_lengths
    from blockctl.bench.workloads import arrival_times, load_workload
    from blockctl_agents.predictor.bench_accuracy import drive, emulator_lag, summarize
    from blockctl_agents.predictor.launch import local_instance

    spec = parse_lengths(lengths)
    workload, note = held_out_workload(workload, spec)
    if note and not json_out:
        err_console.print(f"[dim]{note}[/dim]")
    items = load_workload(workload, num_requests=requests, seed=seed)
    prompts = [i.prompt for i in items]
    true, histories = [i.output_tokens for i in items], [i.replies for i in items]
    predicted = predicted_lengths(spec, true, prompts, seed=seed, histories=histories)
    dists = predicted_dists(spec, predicted, prompts, true_lengths=true, seed=seed, histories=histories)
    offsets = arrival_times("poisson", len(items), qps=qps, seed=seed)
    reqs = [(i.prompt_tokens, i.output_tokens, p) for i, p in zip(items, predicted, strict=True)]
    times = [float(o) for o in offsets]
    lag: dict[str, float | None] = {}
    split: dict[str, Any] | None = None
    engine_settings = {k: v for k, v in (("max_num_seqs", max_num_seqs),
                                         ("max_num_batched_tokens", max_num_batched_tokens)) if v is not None}
    if virtual:
        from blockctl.engine.profile import load_profile
        from blockctl_agents.predictor.bench_virtual import run_virtual

        prof = load_profile(profile)
        config = prof.engine_defaults(**engine_settings)
        hashes = None
        if caching and any(i.token_ids is not None for i in items):  # shared prefixes: cached, vLLM's default
            from blockctl.engine.prefixcache import block_hashes

            bs = config.block_size
            hashes = [None if i.token_ids is None else block_hashes(list(i.token_ids), bs) for i in items]
        outcomes, core = run_virtual(prof, reqs, times, seed=seed, hashes=hashes, dists=dists, config=config)
        # the decode's error at dispatch, and the agent's model given the batches each request ran in: the
        # difference is the traffic after dispatch (bench_endpoint's docstring)
        split = {"agent": core.errors.decode.summary(), "given_batches": core.errors.decode_given_batches.summary()}
    else:
        flags = tuple(a for k, v in engine_settings.items() for a in (f"--{k.replace('_', '-')}", str(v)))
        flags += () if caching else ("--no-enable-prefix-caching",)
        with (
            tempfile.TemporaryDirectory(prefix="blockctl-bench-") as tmp,
            local_instance(Path(tmp), profile=profile, seed=seed, engine_args=flags) as inst,
        ):
            outcomes = asyncio.run(drive(inst.agent_url, inst.auth(), reqs, times, dists))
            lag = emulator_lag(httpx.get(f"{inst.engine_url}/metrics", timeout=10).text)
    result = {
        "mode": "virtual" if virtual else "real-time",
        "profile": profile,
        "workload": workload,
        "lengths": str(spec),
        "qps": qps,
        "prefix_caching": caching,
        **summarize(outcomes),
        **lag,
        "decode_split": split,
        "target_e2e_mape_pct": E2E_MAPE_TARGET_PCT,
    }
    if json_out:
        print_json(result)
        return
    e2e, ttft = result["e2e"], result["ttft"]
    assert isinstance(e2e, dict) and isinstance(ttft, dict)
    rows = [
        ("requests (completed / failed)", f"{result['completed']} / {result['failed']}"),
        ("mean running at dispatch", _fmt(result["mean_running_at_dispatch"])),
        ("E2E MAPE %", _fmt(e2e["mape_pct"])),
        ("E2E median APE %", _fmt(e2e["mdape_pct"])),
        ("E2E bias %", _fmt(e2e["bias_pct"])),
        ("TTFT MAPE %", _fmt(ttft["mape_pct"])),
        ("TTFT median APE %", _fmt(ttft["mdape_pct"])),
    ]
    if split is not None:
        rows += [("decode MAPE % at dispatch", _fmt(split["agent"]["mape_pct"])),
                 ("decode MAPE % given the batches", _fmt(split["given_batches"]["mape_pct"]))]
    late = lag.get("emulator_late_fraction")
    if late is not None:
        rows.append(("emulator lateness %", _fmt(100 * late)))
    mode = "virtual time" if virtual else "real time"
    off = "" if caching else ", prefix caching off"
    console.print(metric_table(f"prediction accuracy ({mode}, {workload}, {spec}, {qps:g} req/s{off})", rows))
    _verdict(
        e2e["mape_pct"],
        E2E_MAPE_TARGET_PCT,
        f"E2E MAPE {_fmt(e2e['mape_pct'])} %",
        f"target ≤ {E2E_MAPE_TARGET_PCT:g} % with oracle lengths",
    )
    if late is not None and late > LATE_WARN:
        err_console.print(
            f"[yellow]![/yellow] the emulator ran {late:.0%} behind its step times: this host is too busy for "
            "real-time emulation and its lag dominates the error; try: blockctl bench accuracy --virtual"
        )


def register(group: typer.Typer) -> None:
    group.command("predictor")(predictor)
    group.command("accuracy")(accuracy)
