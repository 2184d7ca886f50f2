"""``predict_lengths``/``predict_raw``: a tagger's predictions for many prompts, cached on disk (used by the
simulator)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from blockctl.tagger.calibration import Calibration
from blockctl.tagger.config import TaggerConfig, read_config
from blockctl.tagger.dataset import prompt_sha256


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "blockctl" / "tagger"


def predict_lengths(model_dir: str | Path, prompts: Sequence[str], *, cache_dir: str | Path | None = None) -> list[int]:
    """Predicted output tokens for each prompt (the calibrated mean when the tagger has a calibration),
    from :func:`predict_raw`'s cache."""
    raw = predict_raw(model_dir, prompts, cache_dir=cache_dir)
    calibration = Calibration.from_dict(read_config(model_dir).calibration)
    return raw if calibration is None else [calibration(n) for n in raw]


def predict_raw(model_dir: str | Path, prompts: Sequence[str], *, cache_dir: str | Path | None = None) -> list[int]:
    """The tagger's own (typical, uncalibrated) prediction for each prompt, cached on disk by (model
    fingerprint, prompt sha256).

    The cache is one SQLite file in ``cache_dir`` (default ``$XDG_CACHE_HOME/blockctl/tagger``); only
    prompts not cached yet are run through the model, and the model is not loaded when all are cached.
    """
    config: TaggerConfig = read_config(model_dir)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    hashes = [prompt_sha256(p) for p in prompts]
    with closing(sqlite3.connect(root / "lengths.sqlite3")) as conn, conn as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS lengths (model TEXT, prompt TEXT, tokens INTEGER, PRIMARY KEY (model, prompt))"
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
            from blockctl.tagger.predict import Tagger

            tagger = Tagger(model_dir)
            fresh = tagger.predict(list(todo.values()), calibrated=False)
            known.update(zip(todo.keys(), fresh, strict=True))
            db.executemany(
                "INSERT OR REPLACE INTO lengths VALUES (?, ?, ?)",
                [(config.fingerprint, h, n) for h, n in zip(todo.keys(), fresh, strict=True)],
            )
    return [known[h] for h in hashes]
