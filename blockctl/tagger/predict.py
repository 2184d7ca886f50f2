"""Batch inference with a saved tagger (blocking: torch); ``cache.predict_lengths`` wraps it with a disk cache."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blockctl.tagger._deps import torch
from blockctl.tagger.calibration import Calibration
from blockctl.tagger.lean import Forward, verified
from blockctl.tagger.model import LengthRegressor, load, to_tokens

CHARS_PER_TOKEN = 24  # text kept per token the encoder sees, before tokenizing (see ``head``)


def head(prompt: str, max_length: int) -> str:
    """The prompt cut at a whitespace boundary near ``max_length * CHARS_PER_TOKEN`` characters.

    Tokenizing all of a 30,000-character prompt to keep its first 32 tokens costs milliseconds online.
    Words are split at whitespace before sub-word tokenization, so the tokens before the cut are the
    full text's; ``encode`` re-tokenizes the full text whenever a cut head fills fewer than
    ``max_length`` tokens (the cut might then have dropped some).
    """
    limit = max_length * CHARS_PER_TOKEN
    if len(prompt) <= limit:
        return prompt
    cut = max((prompt.rfind(ws, 0, limit) for ws in (" ", "\n", "\t")), default=-1)
    return prompt[:cut] if cut > 0 else prompt


def encode(tokenizer: Any, prompts: Sequence[str], max_length: int) -> dict[str, Any]:
    """Tokenize (head of each prompt, padded to the longest) plus the log-character feature."""
    texts = [head(p, max_length) for p in prompts]
    batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    filled = batch["attention_mask"].sum(1).tolist()
    if any(len(t) < len(p) and n < max_length for t, p, n in zip(texts, prompts, filled, strict=True)):
        batch = tokenizer(list(prompts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    chars = torch.tensor([math.log1p(len(p)) for p in prompts], dtype=torch.float32)
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "log_prompt_chars": chars,
    }


def predict_log(
    model: LengthRegressor,
    tokenizer: Any,
    prompts: Sequence[str],
    max_length: int,
    batch_size: int = 32,
    forward: Forward | None = None,
) -> list[float]:
    """log(1 + tokens) per prompt; prompts are batched by length so padding stays small.

    ``forward`` computes the model's output faster (see ``lean``); the model is switched to eval mode
    and back only when it is training, because that walk over its modules costs about a millisecond.
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = [0.0] * len(prompts)
    was_training = model.training
    if was_training:
        model.eval()
    run = forward or model
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            preds = run(**encode(tokenizer, [prompts[i] for i in idx], max_length))
            for i, v in zip(idx, preds.tolist(), strict=True):
                out[i] = float(v)
    if was_training:
        model.train()
    return out


class Tagger:
    """A loaded tagger: ``predict(prompts) -> tokens``. Blocking (torch); call it off the event loop.

    ``path`` says how it computes: "lean" (``lean.verified`` accepted the fast forward) or "module".
    ``predict`` returns calibrated mean lengths when the directory has a calibration (see calibration.py).
    """

    def __init__(self, model_dir: str | Path, *, threads: int | None = None, lean: bool = True) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.model, self.tokenizer, self.config = load(model_dir)
        self.model_dir = Path(model_dir)
        self._forward: Forward | None = None
        self.path = "module"
        self.calibration = Calibration.from_dict(self.config.calibration)
        if lean:
            self._forward, self.path = verified(self.model, self.tokenizer, self.config.max_length)

    @property
    def fingerprint(self) -> str:
        return self.config.fingerprint

    def predict(self, prompts: Sequence[str], batch_size: int = 32, *, calibrated: bool = True) -> list[int]:
        """Predicted output tokens: the mean for prompts like each (calibrated), else the typical reply."""
        logs = predict_log(self.model, self.tokenizer, prompts, self.config.max_length, batch_size, self._forward)
        tokens = [to_tokens(v) for v in logs]
        if calibrated and self.calibration is not None:
            return [self.calibration(t) for t in tokens]
        return tokens
