"""`blockctl profile list|show|predict|import`: the step-time profiles and what their fitted models say."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from blockctl.cli.ui import console, handle_errors, ok, print_json
from blockctl.engine.fit import predict_rows, row_shape
from blockctl.engine.profile import (
    Profile,
    convert_measured_file,
    list_profiles,
    load_profile,
    profile_from_document,
    user_profiles_dir,
    write_profile,
)
from blockctl.engine.shape import KNOWN_MODELS
from blockctl.errors import ConfigError

STEP_KEYS = ("prefill_tokens", "prefill_cached", "decode_batch", "decode_context")


def _cv(prof: Profile) -> dict[str, Any]:
    cv = prof.fit.get("cv", {})
    return cv if isinstance(cv, dict) else {}


def _summary(prof: Profile) -> dict[str, Any]:
    cfg = prof.engine_defaults()
    cv = _cv(prof)
    loro = cv.get("leave_one_region_out_mape_pct", {})
    return {
        "name": prof.name,
        "gpu": prof.gpu.name,
        "model": prof.shape.name,
        "rows": len(prof.rows),
        "kfold_mape_pct": cv.get("kfold_mape_pct"),
        "loro_max_mape_pct": max(loro.values()) if loro else None,
        "kv_blocks": cfg.num_gpu_blocks,
        "source": prof.source,
    }


def _pct(v: Any) -> str:
    return f"{v:.1f} %" if isinstance(v, (int, float)) else "–"


def parse_steps(text: str, source: str) -> list[tuple[int, int, int, int]]:
    """A JSON list of step shapes; errors name the file, the index and the key."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc}", source=source) from None
    if not isinstance(doc, list):
        raise ConfigError("expected a JSON list of step shapes", source=source)
    steps = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise ConfigError("expected an object", source=source, key=f"[{i}]")
        values = []
        for key in STEP_KEYS:
            v = item.get(key, 0)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"must be an integer >= 0, got {v!r}", source=source, key=f"[{i}].{key}")
            values.append(v)
        if values[0] == 0 and values[2] == 0:
            raise ConfigError("a step needs prefill_tokens or decode_batch > 0", source=source, key=f"[{i}]")
        steps.append((values[0], values[1], values[2], values[3]))
    return steps


def register(group: typer.Typer) -> None:
    @group.command("list")
    @handle_errors
    def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """The profiles shipped with blockctl and measured on this machine, with their fit error."""
        rows = [_summary(load_profile(n)) for n in list_profiles()]
        if as_json:
            print_json(rows)
            return
        table = Table(title="step-time profiles (model error on held-out measured steps)")
        table.add_column("name", no_wrap=True)
        table.add_column("GPU")
        table.add_column("model", no_wrap=True)
        for col in ("rows", "5-fold CV", "worst region", "KV blocks"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(r["name"], r["gpu"], r["model"], str(r["rows"]), _pct(r["kfold_mape_pct"]),
                          _pct(r["loro_max_mape_pct"]), str(r["kv_blocks"]))
        console.print(table)

    @group.command("show")
    @handle_errors
    def show_cmd(
        name: str = typer.Argument(..., help="Profile name (blockctl profile list) or a .json path."),
        rows: bool = typer.Option(False, "--rows", help="Also list every measured row with the model's error."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """A profile's GPU, model shape, provenance, fitted model and cross-validated error."""
        prof = load_profile(name)
        cfg = prof.engine_defaults()
        pred = predict_rows(prof.model.params, prof.rows)
        if as_json:
            print_json({
                **_summary(prof), "shape": prof.shape.to_dict(), "gpu_memory_bytes": prof.gpu.memory_bytes,
                "measurement": prof.measurement, "fit": prof.fit,
                "engine_defaults": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                "rows": [{**r.to_dict(), "model_ms": round(p, 4)} for r, p in zip(prof.rows, pred, strict=True)]
                if rows else len(prof.rows),
            })
            return
        s = prof.shape
        console.print(f"[bold]{prof.name}[/bold]  ({prof.source})")
        console.print(f"  GPU        {prof.gpu.name}, {prof.gpu.memory_bytes / 2**30:.1f} GiB")
        console.print(f"  model      {s.name}: hidden {s.hidden_size}, {s.num_layers} layers, {s.num_heads} heads "
                      f"({s.num_kv_heads} KV), MLP {s.intermediate_size}, vocab {s.vocab_size}, {s.dtype}, "
                      f"{s.param_count() / 1e9:.2f} B params")
        m = prof.measurement
        console.print(f"  measured   {m.get('method', '?')}; torch {m.get('torch', '?')}")
        if m.get("source_file"):
            console.print(f"  source     {m['source_file']} (sha256 {str(m.get('source_sha256', ''))[:16]}…)")
        console.print(f"  engine     {cfg.num_gpu_blocks} KV blocks of {cfg.block_size} tokens at "
                      f"gpu_memory_utilization 0.9; max_num_seqs {cfg.max_num_seqs}, "
                      f"max_num_batched_tokens {cfg.max_num_batched_tokens}, max_model_len {cfg.max_model_len}")
        console.print(f"  overhead   {prof.model.overhead_ms} ms per step (engine CPU, added by the engine model)")
        console.print(f"  noise      {100 * prof.model.rel_noise:.2f} % relative spread of a step's time")
        table = Table(title=f"fitted model ({prof.fit.get('form', '?')})")
        table.add_column("parameter")
        table.add_column("value", justify="right")
        for k, v in prof.model.params.to_dict().items():
            table.add_row(k, f"{v:.5g}")
        console.print(table)
        cv = _cv(prof)
        err = Table(title=f"{len(prof.rows)} measured rows: error of the model (MAPE)")
        err.add_column("held out")
        err.add_column("MAPE", justify="right")
        err.add_row("none (training error)", _pct(prof.fit.get("train_mape_pct")))
        err.add_row(f"{cv.get('kfold_k', 5)}-fold cross-validation", _pct(cv.get("kfold_mape_pct")))
        for region, v in cv.get("leave_one_region_out_mape_pct", {}).items():
            err.add_row(f"region {region}", _pct(v))
        console.print(err)
        if rows:
            t = Table(title="rows (ms)")
            for col in (*STEP_KEYS, "median", "min", "max", "model", "error"):
                t.add_column(col, justify="right")
            for r, p in zip(prof.rows, pred, strict=True):
                t.add_row(str(r.prefill_tokens), str(r.prefill_cached), str(r.decode_batch), str(r.decode_context),
                          f"{r.ms_median:.3f}", f"{r.ms_min:.3f}", f"{r.ms_max:.3f}", f"{p:.3f}",
                          f"{100 * (p - r.ms_median) / r.ms_median:+.1f} %")
            console.print(t)

    @group.command("predict")
    @handle_errors
    def predict_cmd(
        name: str = typer.Argument(..., help="Profile name or a .json path."),
        steps: str = typer.Option(..., "--steps", help="JSON list of {prefill_tokens, prefill_cached, "
                                  "decode_batch, decode_context} (decode_context per sequence); - for stdin."),
        with_overhead: bool = typer.Option(False, "--with-overhead",
                                           help="Add the engine's per-step overhead (the rows have none)."),
    ) -> None:
        """Predicted milliseconds of each step, same order: GPU time comparable to the measured rows."""
        prof = load_profile(name)
        if steps == "-":
            text, source = sys.stdin.read(), "<stdin>"
        else:
            try:
                text, source = Path(steps).read_text(), steps
            except OSError as exc:
                raise ConfigError(f"cannot read: {exc.strerror}", source=steps) from None
        extra = prof.model.overhead_ms if with_overhead else 0.0
        out = [round(prof.model.gpu_ms(row_shape(*s)) + extra, 4) for s in parse_steps(text, source)]
        sys.stdout.write(json.dumps(out) + "\n")

    @group.command("import")
    @handle_errors
    def import_cmd(
        measurements: Path = typer.Argument(..., help="A measured grid: {'info': {...}, 'rows': [...]}."),
        name: str = typer.Option(..., "--name", help="Profile name, e.g. h100/llama-2-7b."),
        model: str = typer.Option(..., "--model", help=f"Model shape: {', '.join(KNOWN_MODELS)}."),
        out: Path | None = typer.Option(None, "--out", help="Output .json (default: the user profile dir)."),
    ) -> None:
        """Convert measured step rows into a profile: fit the model and cross-validate it."""
        if not name or ".." in name or name.startswith("/"):
            raise ConfigError(f"{name!r} is not a profile name like h100/my-model", key="--name")
        doc = convert_measured_file(measurements, name=name, model=model)
        path = out or user_profiles_dir() / f"{name}.json"
        write_profile(doc, path)
        prof = profile_from_document(doc, source=str(path))
        ok(f"{name}: {len(prof.rows)} rows, {_pct(_cv(prof).get('kfold_mape_pct'))} 5-fold CV error → {path}")
