"""Tiny genotype stores with structure a model can learn, written with the real writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gperceiver.store import schema
from gperceiver.store.write import create_store, finish_store


@pytest.fixture(autouse=False)
def one_torch_thread():
    """Torch on one thread: on a loaded 2-core machine, spinning OpenMP threads of
    concurrent processes slow tiny models down twentyfold."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the same for CLI subprocesses


def founder_store(path: Path, *, n_samples: int = 64, n_variants: int = 48, ploidy: int = 2,
                  n_alleles: int = 2, n_founders: int = 4, missing: float = 0.0,
                  padded_samples: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write a store whose samples are copies of a few founder genotypes.

    A masked locus is then predictable from the others (which founder is it?).
    `missing`: fraction of copies set to -1; `padded_samples`: that many samples get
    their last copy padded (-2, mixed ploidy). Returns the calls (V, S, P) written
    and the same calls before any were hidden.
    """
    rng = np.random.default_rng(seed)
    founders = rng.integers(0, n_alleles, size=(n_founders, n_variants, ploidy))
    which = rng.integers(0, n_founders, size=n_samples)
    calls = np.sort(founders[which], axis=-1).transpose(1, 0, 2).astype(np.int8)
    if padded_samples:
        calls[:, :padded_samples, -1] = schema.FILL
    truth = calls.copy()
    if missing:
        hide = (rng.random(calls.shape) < missing) & (calls != schema.FILL)
        calls[hide] = schema.MISSING
    n_contigs = 3
    contig = np.sort(rng.integers(0, n_contigs, size=n_variants))
    position = np.concatenate(
        [np.arange((contig == c).sum()) * 1000 + 1 for c in range(n_contigs)])
    out = create_store(
        path, sample_id=np.array([f"s{i}" for i in range(n_samples)]),
        variant_id=np.array([f"v{i}" for i in range(n_variants)]),
        contig_id=np.array([f"chr{c + 1}" for c in range(n_contigs)]),
        variant_contig=contig, variant_position=position, ploidy=ploidy,
        n_alleles=n_alleles, samples_chunk=16, variants_chunk=32,
    )
    out[:] = calls
    finish_store(path)
    return calls, truth
