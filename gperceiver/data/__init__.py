"""Streaming data: the store loader (`loader`), which samples each rank and worker
reads (`sharding`), target-locus sampling (`sampling`), the batch contract's task
builders (`tasks`), phenotype tables (`phenotypes`), the worker-to-trainer hand-off
(`handoff`), the compiled numba kernels of all of them (`kernels`) and the vector
intrinsics those kernels need (`simd`).

`make_loader` and `GenotypeDataset` are importable from here; torch is imported
only when they are first used, so `gperceiver.data.phenotypes` stays light.
"""

from __future__ import annotations

__all__ = ["GenotypeDataset", "make_loader"]


def __getattr__(name: str):
    if name in __all__:
        from gperceiver.data import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'gperceiver.data' has no attribute {name!r}")
