"""The one place torch and transformers are imported, so a missing ``blockctl[tagger]`` reads clearly."""

from __future__ import annotations

from blockctl.errors import TaggerError
from blockctl.tagger.config import INSTALL_HINT

try:
    import torch
    import transformers
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise TaggerError(
        f"the length tagger needs torch and transformers ({exc.name} is not installed)", hint=INSTALL_HINT
    ) from exc

__all__ = ["INSTALL_HINT", "nn", "torch", "transformers"]
