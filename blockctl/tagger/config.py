"""A saved tagger's config.json (TaggerConfig) and the checks that need neither torch nor transformers."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blockctl.errors import TaggerError

INSTALL_HINT = "pip install 'blockctl[tagger]'"
FORMAT = "blockctl-tagger/1"
LABEL_TRANSFORM = "log1p"  # the head predicts log(1 + output tokens)


@dataclass(frozen=True, slots=True)
class TaggerConfig:
    base: str  # the encoder it was fine-tuned from (path as given)
    max_length: int  # prompt tokens the encoder sees (head of the prompt)
    num_layers: int  # encoder layers kept from the base
    head_hidden: int = 256
    format: str = FORMAT
    label_transform: str = LABEL_TRANSFORM
    pooling: str = "mean+log_prompt_chars"
    fingerprint: str = ""  # sha256 of model.safetensors, set on save; keys prediction caches
    data: dict[str, Any] = field(default_factory=dict)  # provenance: source, sha256, counts, split rule
    training: dict[str, Any] = field(default_factory=dict)  # hyper-parameters used
    calibration: dict[str, Any] = field(default_factory=dict)  # typical → mean tokens (calibration.py); {}: none
    history: dict[str, Any] = field(default_factory=dict)  # earlier replies → next reply (predict/history.py)


def read_config(model_dir: str | Path) -> TaggerConfig:
    path = Path(model_dir) / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TaggerError(
            f"{path}: cannot read ({exc.strerror}); is {model_dir} a tagger directory?",
            hint="blockctl train-tagger --data sharegpt --out DIR",
        ) from exc
    except json.JSONDecodeError as exc:
        raise TaggerError(f"{path}: invalid JSON: {exc.msg}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise TaggerError(f"{path}: not a blockctl tagger config (format {FORMAT!r} expected)")
    try:
        return TaggerConfig(**raw)
    except TypeError as exc:
        raise TaggerError(f"{path}: {exc}") from None


def write_config(model_dir: str | Path, config: TaggerConfig) -> None:
    path = Path(model_dir) / "config.json"
    path.write_text(json.dumps(asdict(config), indent=2) + "\n", encoding="utf-8")


def require_runtime() -> None:
    """TaggerError naming the extra when torch or transformers is missing (checked without importing)."""
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise TaggerError(f"the length tagger needs {' and '.join(missing)}", hint=INSTALL_HINT)
