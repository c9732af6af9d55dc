"""gperceiver: Perceiver-style genomic prediction from chunked Zarr genotype stores.

Importing the package is light: xarray, Dask and torch load on first use, so
`gperceiver --help` answers at once.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "embed": "gperceiver.embedding",
    "gen_allele_decoder": "gperceiver.preprocessing",
    "open_store": "gperceiver.store.read",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gperceiver' has no attribute {name!r}")
