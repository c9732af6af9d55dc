"""The store layer: every read and write of a genotype store, and its schema.

- `schema`: every variable of the genotype store, the embedding store and the
  prediction dataset, declared once (dims, dtype);
- `read`: opening a store as an indexed lazy `xarray.Dataset` (or a `StoreView`,
  opened once and passed down), checked chunk reads;
- `write`: creating, finishing, conforming and upgrading a store;
- `frequencies`: allele counts, frequencies and missing rates (Dask);
- `chunk_writer`: rows that arrive in order, written a whole chunk at a time.
- `qc`: filters (MAF, missingness, samples, regions) as lazy selections or a new store;
- `info`: the summary `gperceiver info` prints.

`from gperceiver.store import open_store` and the other public names below load
their module on first use, so importing `gperceiver.store.schema` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module of the store layer that defines it
_EXPORTS = {
    **dict.fromkeys(
        ("open_store", "open_view", "store_name", "view_indices", "input_positions",
         "labelled", "variant_ids", "CheckedReader", "LocalChunks", "unreadable",
         "LABELS", "CONTIG_NAME", "StoreView", "Store", "resolve"),
        "gperceiver.store.read"),
    **dict.fromkeys(("create_store", "finish_store", "conform", "upgrade_store"),
                    "gperceiver.store.write"),
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gperceiver.store' has no attribute {name!r}")
