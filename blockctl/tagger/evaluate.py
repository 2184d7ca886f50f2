"""Score taggers and the two baselines on the same held-out split of one data source."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import cache, partial
from pathlib import Path
from typing import Any

from blockctl.errors import TaggerError
from blockctl.tagger import dataset as ds
from blockctl.tagger.baselines import MedianBaseline, NgramBaseline
from blockctl.tagger.calibration import interval_coverage
from blockctl.tagger.metrics import length_metrics


def _row(name: str, kind: str, predict: Callable[[list[str]], list[int]], test: Sequence[ds.Example]) -> dict[str, Any]:
    prompts = [e.prompt for e in test]
    t0 = time.perf_counter()
    preds = predict(prompts)
    ms = (time.perf_counter() - t0) * 1000.0 / len(prompts)
    metrics = length_metrics(preds, [e.output_tokens for e in test]).as_dict()
    return {"name": name, "kind": kind, "metrics": metrics, "ms_per_prompt": ms}


def evaluate(
    model_dirs: Sequence[str], source: str, *, split: str = "test", tokenizer_dir: str | None = None
) -> dict[str, Any]:
    """Rows for predict-the-median, the n-gram ridge model (both fit on the train split) and each tagger.

    Taggers are scored as they are; the split is the same hash rule they were trained with, so the test
    split of a source is held out from any tagger trained on that source.
    """
    if split not in ("test", "val"):
        raise TaggerError(f"--split must be test or val, not {split!r}")
    examples = ds.load_examples(source, tokenizer_dir=tokenizer_dir)
    parts = ds.split_examples(examples)
    held_out = parts["test"] if split == "test" else parts["val"]
    if not parts["train"] or not held_out:
        raise TaggerError(
            f"{source}: need examples in both the train and the {split} split "
            f"(have {len(parts['train'])} and {len(held_out)})"
        )
    rows = [
        _row("median", "baseline", MedianBaseline.fit(parts["train"]).predict, held_out),
        _row("ngram-ridge", "baseline", NgramBaseline.fit(parts["train"]).predict, held_out),
    ]
    intervals: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    if model_dirs:
        from blockctl.tagger.predict import Tagger

        names = [Path(d).name or str(d) for d in model_dirs]
        # read once, and only for a tagger with a history table
        dialogues = cache(partial(ds.load_dialogues, source, tokenizer_dir=tokenizer_dir))
        for name, model_dir in zip(names, model_dirs, strict=True):
            tagger = Tagger(model_dir)
            label = name if names.count(name) == 1 else str(model_dir)
            rows.append(_row(label, "tagger", partial(tagger.predict, calibrated=False), held_out))
            if tagger.calibration is not None:  # the mean lengths routing uses: larger, so a worse MAE
                rows.append(_row(f"{label} (mean)", "tagger", tagger.predict, held_out))
                raw = tagger.predict([e.prompt for e in held_out], calibrated=False)
                cover = interval_coverage(tagger.calibration, raw, [e.output_tokens for e in held_out])
                if cover is not None:  # the calibrated distribution's P10–P90 on prompts it never saw
                    intervals.append({"name": label, **cover})
            scored = _history_row(label, model_dir, dialogues, split)
            if scored is not None:
                history.append(scored)
    return {
        "data": source,
        "split": split,
        "n": len(held_out),
        "dataset_sha256": ds.dataset_sha256(examples),
        "train_examples": len(parts["train"]),
        "rows": rows,
        "intervals": intervals,
        "history": history,
    }


def _history_row(label: str, model_dir: str, dialogues: Callable[[], dict[ds.Split, list[list[int]]] | None],
                 split: str) -> dict[str, Any] | None:
    """The tagger's reply-history table scored on the later turns of the split's conversations (None without
    a table or conversations): what the router is told for a chat with earlier replies."""
    from blockctl.predict.history import ReplyHistory
    from blockctl.tagger.config import read_config

    table = ReplyHistory.from_dict(read_config(model_dir).history)
    parts = dialogues() if table is not None else None
    if table is None or parts is None:
        return None
    told, true, inside = [], [], 0
    for replies in parts[split]:  # type: ignore[index]
        for k in range(1, len(replies)):
            d = table.dist(replies[:k])
            assert d is not None
            told.append(round(d.mean))
            true.append(replies[k])
            inside += d.quantile(0.1) <= replies[k] <= d.quantile(0.9)
    if not true:
        return None
    return {"name": label, "turns": len(true), "metrics": length_metrics(told, true).as_dict(),
            "coverage": inside / len(true)}
