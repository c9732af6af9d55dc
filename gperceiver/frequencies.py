"""Allele frequencies and missingness of a store's calls, computed out of core with Dask."""

from __future__ import annotations

import dask.array as da
import numpy as np


def allele_counts(call_genotype: da.Array, n_alleles: int) -> da.Array:
    """(variants, alleles) int64 counts of each allele over non-missing copies."""
    return da.stack(
        [(call_genotype == a).sum(axis=(1, 2), dtype=np.int64) for a in range(n_alleles)],
        axis=1,
    )


def allele_frequency(call_genotype: da.Array, n_alleles: int) -> da.Array:
    """(variants, alleles) float32 frequencies; NaN where a variant has no call at all."""
    counts = allele_counts(call_genotype, n_alleles)
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts / da.where(total == 0, np.nan, total)).astype(np.float32)


def missing_rate(call_genotype: da.Array) -> da.Array:
    """Share of missing copies (-1) among all non-padded copies (padding is -2)."""
    missing = (call_genotype == -1).sum(dtype=np.int64)
    present = (call_genotype >= -1).sum(dtype=np.int64)
    return missing / present
