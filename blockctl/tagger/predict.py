"""Batch inference with a saved tagger (blocking: torch); ``cache.predict_lengths`` wraps it with a disk cache."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blockctl.tagger._deps import torch
from blockctl.tagger.model import LengthRegressor, load, to_tokens


def encode(tokenizer: Any, prompts: Sequence[str], max_length: int) -> dict[str, Any]:
    """Tokenize (head of each prompt, padded to the longest) plus the log-character feature."""
    batch = tokenizer(list(prompts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
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
