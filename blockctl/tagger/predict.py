"""Batch inference with a saved tagger, and ``predict_lengths`` with an on-disk cache for the simulator."""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from blockctl.tagger._deps import torch
from blockctl.tagger.dataset import prompt_sha256
from blockctl.tagger.model import LengthRegressor, TaggerConfig, load, to_tokens


def encode(tokenizer: Any, prompts: Sequence[str], max_length: int) -> dict[str, Any]:
    """Tokenize (head of each prompt, padded to the longest) plus the log-character feature."""
    batch = tokenizer(
        list(prompts), truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    chars = torch.tensor([math.log1p(len(p)) for p in prompts], dtype=torch.float32)
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "log_prompt_chars": chars,
    }


def predict_log(
    model: LengthRegressor, tokenizer: Any, prompts: Sequence[str], max_length: int, batch_size: int = 32
) -> list[float]:
    """log(1 + tokens) per prompt; prompts are batched by length so padding stays small."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = [0.0] * len(prompts)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            preds = model(**encode(tokenizer, [prompts[i] for i in idx], max_length))
            for i, v in zip(idx, preds.tolist(), strict=True):
                out[i] = float(v)
    model.train(was_training)
    return out


class Tagger:
    """A loaded tagger: ``predict(prompts) -> tokens``. Blocking (torch); call it off the event loop."""

    def __init__(self, model_dir: str | Path, *, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.model, self.tokenizer, self.config = load(model_dir)
        self.model_dir = Path(model_dir)

    @property
    def fingerprint(self) -> str:
        return self.config.fingerprint

    def predict(self, prompts: Sequence[str], batch_size: int = 32) -> list[int]:
        logs = predict_log(self.model, self.tokenizer, prompts, self.config.max_length, batch_size)
        return [to_tokens(v) for v in logs]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "blockctl" / "tagger"


def predict_lengths(
    model_dir: str | Path, prompts: Sequence[str], *, cache_dir: str | Path | None = None
) -> list[int]:
    """Predicted output tokens for each prompt, cached on disk by (model fingerprint, prompt sha256).

    The cache is one SQLite file in ``cache_dir`` (default ``$XDG_CACHE_HOME/blockctl/tagger``); only
    prompts not cached yet are run through the model, and the model is not loaded when all are cached.
    """
    from blockctl.tagger.model import read_config

    config: TaggerConfig = read_config(model_dir)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    hashes = [prompt_sha256(p) for p in prompts]
    with closing(sqlite3.connect(root / "lengths.sqlite3")) as conn, conn as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS lengths"
            " (model TEXT, prompt TEXT, tokens INTEGER, PRIMARY KEY (model, prompt))"
        )
        known: dict[str, int] = {}
        unique = sorted(set(hashes))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT prompt, tokens FROM lengths WHERE model = ? AND prompt IN ({marks})",
                [config.fingerprint, *chunk],
            )
            known.update((str(h), int(n)) for h, n in rows)
        todo = {h: p for h, p in zip(hashes, prompts, strict=True) if h not in known}
        if todo:
            tagger = Tagger(model_dir)
            fresh = tagger.predict(list(todo.values()))
            known.update(zip(todo.keys(), fresh, strict=True))
            db.executemany(
                "INSERT OR REPLACE INTO lengths VALUES (?, ?, ?)",
                [(config.fingerprint, h, n) for h, n in zip(todo.keys(), fresh, strict=True)],
            )
    return [known[h] for h in hashes]
