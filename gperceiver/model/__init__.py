"""The Perceiver model: its config, embeddings, encoder, Perceiver IO decoders, heads.

Names load on first use: `gperceiver.model.config` (read by the params, which every
command parses) must not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module of the model that defines it
_EXPORTS = {
    "GPerceiver": "gperceiver.model.perceiver",
    "FinetuneHead": "gperceiver.model.heads",
    "head_loss": "gperceiver.model.heads",
    "head_predict": "gperceiver.model.heads",
    "OBJECTIVES": "gperceiver.model.heads",
    "ModelConfig": "gperceiver.model.config",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gperceiver.model' has no attribute {name!r}")
