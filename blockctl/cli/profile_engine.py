"""`blockctl profile engine`: profile a running OpenAI-compatible engine through its API (black box)."""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from blockctl.cli.profile_run import _out_path
from blockctl.cli.ui import console, handle_errors, ok, print_json
from blockctl.engine.profile import GpuSpec, write_profile
from blockctl.engine.shape import KNOWN_GPUS
from blockctl.errors import ConfigError


def register(group: typer.Typer) -> None:
    @group.command("engine")
    @handle_errors
    def engine_cmd(
        endpoint: str = typer.Option(..., "--endpoint", help="Base URL of the engine (its /v1/completions)."),
        out: str = typer.Option(..., "--out", help="Profile name (saved in the user profile dir) or a .json path."),
        model: str = typer.Option(
            "", "--model", help="Shape: built-in name or a directory with config.json (default: the served id)."
        ),
        gpu: str = typer.Option("engine", "--gpu", help="Device name recorded in the profile."),
        gpu_memory_gib: float = typer.Option(
            0.0, help="Device memory (GiB) for KV-block defaults; 0: known GPUs' size, else 80."
        ),
        max_batch: int = typer.Option(8, min=1, help="Largest decode batch driven (≤ the engine's max_num_seqs)."),
        decode_steps: int = typer.Option(160, min=8, help="Output tokens of each decode-heavy stream."),
        repeats: int = typer.Option(3, min=1, help="Runs of each decode-heavy batch (pooled)."),
        api_key: str = typer.Option("", envvar="BLOCKCTL_API_KEY", help="Bearer token of the endpoint, if any."),
        seed: int | None = typer.Option(
            None, help="Seed of the random prompt token ids (default: fresh ids every run; a repeated seed's "
            "prompts are served from a warm engine's prefix cache)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the fit as JSON."),
    ) -> None:
        """Measure a running engine's steps from token timestamps of controlled batches; fit the step model."""
        from blockctl_agents.profiler.endpoint_run import EnginePlan, profile_endpoint
        from blockctl_agents.profiler.shape import resolve

        path = _out_path(out)
        name = path.stem if out.endswith(".json") else out
        memory = int((gpu_memory_gib or KNOWN_GPUS.get(gpu, 80 * 2**30) / 2**30) * 2**30)
        if memory <= 0:
            raise ConfigError("must be > 0", key="--gpu-memory-gib")
        shape_hint = model or None
        plan = EnginePlan(max_batch=max_batch, decode_steps=decode_steps, repeats=repeats)

        def progress(what: str) -> None:
            if not as_json:
                console.print(f"  {what}")

        doc = asyncio.run(
            profile_endpoint(endpoint, name, GpuSpec(gpu, memory), shape_hint, plan, progress,
                             api_key=api_key or None, seed=seed, resolve_shape=resolve)
        )
        write_profile(doc, path)
        fit: dict[str, Any] = doc["fit"]
        cv = fit.get("cv", {})
        if as_json:
            print_json({"profile": str(path), "rows": len(doc["rows"]), "seconds": doc["measurement"]["seconds"],
                        "fit": fit})
            return
        ok(f"measured {len(doc['rows'])} engine steps at {endpoint} in {doc['measurement']['seconds']} s → {path}")
        if "kfold_mape_pct" in cv:
            worst = max(cv.get("leave_one_region_out_mape_pct", {}).values(), default=float("nan"))
            ok(f"step-time model: {cv['kfold_mape_pct']:.1f} % MAPE ({cv.get('kfold_k', 5)}-fold cross-validated), "
               f"{worst:.1f} % on the worst held-out region")
        heavy = doc["measurement"]["prefill_heavy"]
        ok(f"prefill-heavy: {heavy['steps_found']} of {heavy['injected']} injected prefills lined up with a step")
        ok(f"per request: {fit['request_overhead_ms']:.1f} ms before the first token beyond its prefill step, "
           f"{fit['request_tail_ms']:.1f} ms after the last")
