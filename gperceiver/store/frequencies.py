"""Allele counts, frequencies and missing rates of a store's calls, out of core with Dask."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import xarray as xr

from gperceiver.store import schema


def allele_counts(call_genotype: da.Array, n_alleles: int) -> da.Array:
    """(variants, alleles) int64 counts of each allele over non-missing copies."""
    return da.stack(
        [(call_genotype == a).sum(axis=(1, 2), dtype=np.int64) for a in range(n_alleles)],
        axis=1,
    )


def allele_frequency(call_genotype: da.Array, n_alleles: int) -> da.Array:
    """(variants, alleles) frequencies, of the declared dtype (float32); NaN where a variant
    has no call at all."""
    counts = allele_counts(call_genotype, n_alleles)
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frequency = counts / da.where(total == 0, np.nan, total)
    return frequency.astype(schema.VARIABLES["variant_allele_frequency"].dtype)


def minor_allele_frequency(frequency: np.ndarray) -> np.ndarray:
    """Per variant, 1 - the most frequent allele's frequency (plink 2's MAF, also for
    multi-allelic sites); 0 where nothing was called."""
    with np.errstate(invalid="ignore"):
        major = np.max(np.nan_to_num(np.asarray(frequency, np.float64), nan=-1.0), axis=1)
    return np.where(major >= 0, 1.0 - major, 0.0) if major.size else major


# A frequency computed from counts, compared with a threshold: k/n equal to X in exact
# arithmetic must pass `>= X` (1 - 0.9 is 0.09999999999999998 in floating point).
TOLERANCE = 1e-9


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
