"""The tagger network (encoder → mean pool ⊕ log prompt chars → MLP → log(1 + tokens)) and its on-disk form.

A saved tagger directory is self-describing and needs nothing else to load:
  config.json         TaggerConfig (base, max_length, label transform, layers, fingerprint, data provenance)
  model.safetensors   every weight (encoder and head)
  encoder/            the encoder's HF config (architecture only)
  tokenizer/          the encoder's tokenizer
  metrics.json        training history and final validation/test metrics (written by ``train``)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from blockctl.errors import TaggerError
from blockctl.tagger._deps import nn, torch, transformers
from blockctl.tagger.config import FORMAT, TaggerConfig, read_config, write_config

__all__ = ["FORMAT", "LengthRegressor", "TaggerConfig", "load", "load_base", "read_config", "save"]


class LengthRegressor(nn.Module):  # type: ignore[misc]
    """Predicts log(1 + output tokens); log(1 + prompt characters) is a feature beside the pooled text.

    The character count covers the whole prompt, also the part cut off at ``max_length``.
    """

    def __init__(self, encoder: Any, head_hidden: int) -> None:
        super().__init__()
        self.encoder = encoder
        width = int(encoder.config.hidden_size)
        self.head = nn.Sequential(
            nn.Linear(width + 1, head_hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(head_hidden, 1)
        )

    def start_at(self, log_value: float) -> None:
        """Make the untrained head predict ``log_value`` (e.g. the training median) for every prompt."""
        last: Any = self.head[len(self.head) - 1]
        with torch.no_grad():
            last.weight.mul_(0.01)
            last.bias.fill_(log_value)

    def forward(self, input_ids: Any, attention_mask: Any, log_prompt_chars: Any) -> Any:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        features = torch.cat([pooled, (log_prompt_chars / 8.0).unsqueeze(-1)], dim=-1)
        return self.head(features).squeeze(-1)


def to_tokens(log_pred: float) -> int:
    """Inverse label transform, rounded, at least 1 token."""
    return max(1, round(math.expm1(max(0.0, log_pred))))


def quiet() -> None:
    """Silence transformers' load reports and progress bars (e.g. the unused pooler is expected)."""
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def load_base(base: str | Path, num_layers: int | None) -> tuple[LengthRegressor, Any, int]:
    """A fresh regressor on a local HF encoder dir (first ``num_layers`` layers), tokenizer, layers."""
    path = Path(base)
    if not path.is_dir():
        raise TaggerError(f"{base}: not a directory (the base must be a local Hugging Face encoder directory)")
    quiet()
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
        total = int(getattr(config, "num_hidden_layers", 0))
        if num_layers is not None and total and num_layers < total:
            config.num_hidden_layers = num_layers
        encoder = transformers.AutoModel.from_pretrained(
            str(path), config=config, local_files_only=True, add_pooling_layer=False
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise TaggerError(f"{base}: cannot load a Hugging Face encoder from it: {exc}") from exc
    return LengthRegressor(encoder, 256), tokenizer, int(encoder.config.num_hidden_layers)


def freeze_lower(model: LengthRegressor, train_layers: int) -> int:
    """Freeze embeddings and all but the top ``train_layers`` encoder layers; returns trainable parameters.

    Autograd then never records the frozen part, so training costs a forward pass there and nothing more.
    ``train_layers`` >= the number of layers fine-tunes everything.
    """
    layers = int(model.encoder.config.num_hidden_layers)
    if train_layers < layers:
        prefixes = tuple(f"encoder.layer.{i}." for i in range(layers - train_layers, layers))
        names = [name for name, _ in model.encoder.named_parameters()]
        if train_layers > 0 and not any(n.startswith(prefixes) for n in names):
            raise TaggerError(
                "partial fine-tuning needs a BERT-style encoder (encoder.layer.N parameters)",
                hint=f"use --train-layers {layers} to fine-tune every layer",
            )
        for name, param in model.encoder.named_parameters():
            param.requires_grad = name.startswith(prefixes)
    return sum(int(p.numel()) for p in model.parameters() if p.requires_grad)


def save(model: LengthRegressor, tokenizer: Any, config: TaggerConfig, out: Path) -> TaggerConfig:
    """Write the tagger directory; returns the config with its fingerprint filled in."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    weights = out / "model.safetensors"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"format": FORMAT})
    model.encoder.config.save_pretrained(str(out / "encoder"))
    tokenizer.save_pretrained(str(out / "tokenizer"))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    final = TaggerConfig(**{**asdict(config), "fingerprint": digest})
    write_config(out, final)
    return final


def load(model_dir: str | Path) -> tuple[LengthRegressor, Any, TaggerConfig]:
    """Load a saved tagger for inference (eval mode)."""
    from safetensors.torch import load_file

    root = Path(model_dir)
    config = read_config(root)
    quiet()
    try:
        enc_config = transformers.AutoConfig.from_pretrained(str(root / "encoder"), local_files_only=True)
        encoder = transformers.AutoModel.from_config(  # type: ignore[no-untyped-call]
            enc_config, add_pooling_layer=False
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(root / "tokenizer"), local_files_only=True)
        model = LengthRegressor(encoder, config.head_hidden)
        model.load_state_dict(load_file(str(root / "model.safetensors")))
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        raise TaggerError(f"{root}: cannot load the tagger: {exc}") from exc
    model.eval()
    return model, tokenizer, config
