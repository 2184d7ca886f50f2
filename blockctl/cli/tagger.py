"""`blockctl train-tagger` and `blockctl tagger eval|predict`: train, compare and try length taggers."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from blockctl.cli.ui import console, handle_errors, ok, print_json

tagger_app = typer.Typer(help="Response-length taggers: evaluate against baselines, predict.", no_args_is_help=True)

DATA_HELP = "sharegpt | a ShareGPT .json | a .jsonl of {prompt, output_tokens} | log:PATH (a scheduler request log)"


@handle_errors
def train_tagger(
    data: str = typer.Option("sharegpt", "--data", help=DATA_HELP),
    out: Path = typer.Option(..., "--out", help="Directory to write the trained tagger to."),
    base: str | None = typer.Option(None, "--base", help="Local HF encoder dir [default: bundled MiniLM]."),
    epochs: int = typer.Option(3, "--epochs", min=1),
    max_length: int = typer.Option(32, "--max-length", min=8, help="Prompt tokens the encoder sees."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    lr: float = typer.Option(1e-4, "--lr", help="Learning rate of the fine-tuned encoder layers."),
    train_layers: int = typer.Option(2, "--train-layers", min=0, help="Top encoder layers to fine-tune."),
    num_layers: int = typer.Option(1, "--num-layers", min=0, help="Keep the first N base layers (0: all)."),
    max_train: int = typer.Option(0, "--max-train", min=0, help="Train examples used (0: all)."),
    max_val: int = typer.Option(600, "--max-val", min=0, help="Validation examples used (0: all)."),
    patience: int = typer.Option(2, "--patience", min=1),
    seed: int = typer.Option(0, "--seed"),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help="HF tokenizer dir counting reply tokens."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads [default: torch's]."),
    no_test: bool = typer.Option(False, "--no-test", help="Skip the test-split evaluation at the end."),
) -> None:
    """Fine-tune a small text encoder to predict response length (log tokens) from the prompt."""
    from blockctl.tagger._deps import torch
    from blockctl.tagger.train import Progress as TrainProgress
    from blockctl.tagger.train import TrainSpec, train

    if threads is not None:
        torch.set_num_threads(threads)
    spec = TrainSpec(
        source=data,
        base=base,
        max_length=max_length,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        train_layers=train_layers,
        num_layers=num_layers or None,
        max_train=max_train or None,
        max_val=max_val or None,
        patience=patience,
        seed=seed,
        tokenizer_dir=tokenizer,
        evaluate_test=not no_test,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("loading data", total=None)

        def show(p: TrainProgress) -> None:
            if p.total_steps:
                desc = f"epoch {p.epoch} loss {p.loss:.3f}" if p.loss else "training"
                if p.val_mae is not None:
                    desc = f"epoch {p.epoch} val MAE {p.val_mae:.1f} tok"
                    console.log(f"step {p.step}/{p.total_steps}: validation MAE {p.val_mae:.1f} tokens")
                bar.update(task, total=p.total_steps, completed=p.step, description=p.note or desc)
            else:
                bar.update(task, description=p.note)

        result = train(spec, out, show)
    m = result.metrics
    minutes = result.seconds / 60
    ok(f"tagger written to {out} in {minutes:.1f} min (best validation MAE {m['best_val_mae']:.1f})")
    if "test" in m:
        t = m["test"]
        console.print(
            f"  test split: MAE {t['mae']:.1f}, median AE {t['median_ae']:.1f}, Kendall τ {t['kendall_tau']:.3f}"
        )
    console.print(f"  [dim]next:[/dim] blockctl tagger eval --model {out} --data {data}")


def eval_table(report: dict[str, Any]) -> Table:
    """The ``tagger eval`` report as a table that fits 80 columns."""
    data, split = report["data"], report["split"]
    table = Table(
        title=f"{data} · {split} split · {report['n']} requests",
        caption="±50/±100: share within that many tokens; τ, ρ: rank correlations; ms: per prompt",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    columns = ("predictor", "MAE", "vs.med", "MAPE%", "MedAE", "±50", "±100", "τ", "ρ", "ms")
    for col in columns:
        table.add_column(col, justify="left" if col == "predictor" else "right", no_wrap=True)
    median_mae = report["rows"][0]["metrics"]["mae"]

    def corr(value: float) -> str:
        return "—" if math.isnan(value) else f"{value:.3f}"

    for row in report["rows"]:
        m = row["metrics"]
        table.add_row(
            row["name"],
            f"{m['mae']:.1f}",
            f"{(m['mae'] / median_mae - 1) * 100:+.0f}%",
            f"{m['mape']:.0f}",
            f"{m['median_ae']:.0f}",
            f"{m['acc50']:.2f}",
            f"{m['acc100']:.2f}",
            corr(m["kendall_tau"]),
            corr(m["spearman_rho"]),
            f"{row['ms_per_prompt']:.1f}",
        )
    return table


@tagger_app.command("eval")
@handle_errors
def eval_cmd(
    model: list[Path] = typer.Option([], "--model", help="Tagger dir; repeat to compare (e.g. old vs new)."),
    data: str = typer.Option("sharegpt", "--data", help=DATA_HELP),
    split: str = typer.Option("test", "--split", help="Which split to score: test | val."),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help="HF tokenizer dir counting reply tokens."),
    threads: int | None = typer.Option(None, "--threads", min=1),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Score taggers on a held-out split side by side with predict-the-median and an n-gram ridge model."""
    from blockctl.tagger.evaluate import evaluate

    if threads is not None:
        from blockctl.tagger._deps import torch

        torch.set_num_threads(threads)
    report = evaluate([str(m) for m in model], data, split=split, tokenizer_dir=tokenizer)
    if json_out:
        print_json(report)
        return
    console.print(eval_table(report))
    for cover in report["intervals"]:
        console.print(f"{cover['name']}: {cover['coverage'] * 100:.1f} % of the {report['split']} split's true lengths "
                      f"inside the calibrated P10–P90 interval (median width {cover['median_width']:.0f} tokens)")
    for h in report["history"]:
        m = h["metrics"]
        console.print(f"{h['name']}: reply history on the {h['turns']} later turns of the {report['split']} split's "
                      f"conversations: Kendall τ {m['kendall_tau']:.3f}, MAE {m['mae']:.1f}, "
                      f"{h['coverage'] * 100:.1f} % inside its P10–P90")


@tagger_app.command("calibrate")
@handle_errors
def calibrate_cmd(
    model: Path = typer.Option(..., "--model", help="Tagger dir to (re)calibrate in place."),
    data: str = typer.Option("sharegpt", "--data", help=DATA_HELP),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help="HF tokenizer dir counting reply tokens."),
) -> None:
    """Fit the map from the tagger's typical length to the mean length routing uses, on DATA's validation split,
    and the reply-history table (a chat's earlier replies → its next reply) on DATA's train-split conversations."""
    from blockctl.tagger.config import read_config
    from blockctl.tagger.train import calibrate

    calib = calibrate(model, data, tokenizer_dir=tokenizer)
    pairs = ", ".join(f"≤{e}→{m:.0f}" for e, m in zip(calib.edges, calib.means, strict=False))
    ok(f"{model}: calibrated on {data} ({pairs}, else {calib.means[-1]:.0f})")
    turns = read_config(model).history.get("turns")
    ok(f"{model}: reply history fitted on {turns} later conversation turns" if turns else
       f"{model}: no reply history ({data} has no multi-turn conversations)")


@tagger_app.command("predict")
@handle_errors
def predict_cmd(
    model: Path = typer.Option(..., "--model", help="Tagger dir."),
    prompt: list[str] = typer.Argument(..., help="Prompt text(s)."),
) -> None:
    """Predict the response length of prompts given on the command line (prints JSON)."""
    from blockctl.tagger.predict import Tagger

    t0 = time.perf_counter()
    tagger = Tagger(model)
    preds = tagger.predict(prompt, calibrated=False)
    result: dict[str, Any] = {"model": str(model), "predicted_output_tokens": preds}
    if tagger.calibration is not None:
        result["mean_output_tokens"] = [tagger.calibration(n) for n in preds]  # what routing uses
    print_json({**result, "seconds": time.perf_counter() - t0})


def register(app: typer.Typer) -> None:
    app.command("train-tagger")(train_tagger)
    app.add_typer(tagger_app, name="tagger")
