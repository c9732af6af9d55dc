"""Allele counts, frequencies and missing rates of a store's calls, out of core with Dask."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import xarray as xr

from gperceiver import schema


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


def missingness(ds: xr.Dataset) -> xr.Dataset:
    """Per-variant and per-sample missing rates, computed lazily (Dask) in one pass.

    A rate is the share of missing copies (-1) among the non-padded copies (padding
    is -2, mixed ploidy); NaN where nothing was called at all.
    """
    gt = ds["call_genotype"].data
    if not isinstance(gt, da.Array):
        gt = da.from_array(np.asarray(gt))
    missing = gt == schema.MISSING
    present = gt >= schema.MISSING
    sums = [
        missing.sum(axis=(1, 2), dtype=np.int64), present.sum(axis=(1, 2), dtype=np.int64),
        missing.sum(axis=(0, 2), dtype=np.int64), present.sum(axis=(0, 2), dtype=np.int64),
    ]
    with dask.config.set(scheduler="threads"):
        vm, vp, sm, sp = dask.compute(*sums)
    with np.errstate(invalid="ignore", divide="ignore"):
        return xr.Dataset({
            "variant_missing_rate": ((schema.VARIANTS,), vm / np.where(vp == 0, np.nan, vp)),
            "sample_missing_rate": ((schema.SAMPLES,), sm / np.where(sp == 0, np.nan, sp)),
        })
