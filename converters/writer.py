"""Create a genotype store, fill its calls, then finish it: frequencies, metadata, checks.

Every converter goes create_store -> write calls -> finish_store, inside
`gperceiver.atomic.atomic_output`, so the store appears only when complete.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dask.array as da
import numcodecs
import numpy as np
import xarray as xr
import zarr

from converters import CONVERTER_VERSION
from converters.frequencies import allele_frequency
from gperceiver import schema
from gperceiver.errors import InputFormatError

ZARR_FORMAT = 2  # what bio2zarr writes by default; read by every zarr/xarray/sgkit version
GENOTYPE_COMPRESSOR = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)


def create_store(
    path: str | os.PathLike,
    *,
    sample_id: np.ndarray,
    variant_id: np.ndarray,
    contig_id: np.ndarray,
    variant_contig: np.ndarray,
    variant_position: np.ndarray,
    ploidy: int,
    n_alleles: int,
    variant_allele: np.ndarray | None = None,
    samples_chunk: int = schema.DEFAULT_SAMPLES_CHUNK,
    variants_chunk: int = schema.DEFAULT_VARIANTS_CHUNK,
    attrs: Mapping[str, Any] | None = None,
) -> zarr.Array:
    """Write the store's labels and an empty `call_genotype`; return that array to fill."""
    n_variants, n_samples = len(variant_id), len(sample_id)
    if variant_allele is None:
        variant_allele = np.full((n_variants, n_alleles), "", dtype=object)
    labels = xr.Dataset(
        {
            "sample_id": (schema.SAMPLES, np.asarray(sample_id, dtype=object)),
            "variant_id": (schema.VARIANTS, np.asarray(variant_id, dtype=object)),
            "contig_id": (schema.CONTIGS, np.asarray(contig_id, dtype=object)),
            "variant_contig": (schema.VARIANTS, np.asarray(variant_contig, dtype=np.int32)),
            "variant_position": (schema.VARIANTS, np.asarray(variant_position)),
            "variant_allele": (
                (schema.VARIANTS, schema.ALLELES),
                np.asarray(variant_allele, dtype=object),
            ),
        },
        attrs={
            "ploidy": int(ploidy),
            "n_alleles": int(n_alleles),
            "converter_version": CONVERTER_VERSION,
            "format_version": schema.FORMAT_VERSION,
            **(attrs or {}),
        },
    )
    labels.to_zarr(path, mode="w", zarr_format=ZARR_FORMAT, consolidated=False)
    group = zarr.open_group(path, mode="a", zarr_format=ZARR_FORMAT)
    calls = group.create_array(
        "call_genotype",
        shape=(n_variants, n_samples, ploidy),
        chunks=(min(variants_chunk, n_variants), min(samples_chunk, n_samples), ploidy),
        dtype="int8",
        compressors=GENOTYPE_COMPRESSOR,
        fill_value=schema.MISSING,
    )
    calls.attrs["_ARRAY_DIMENSIONS"] = list(schema.VARIABLES["call_genotype"].dims)
    return calls


def finish_store(path: str | os.PathLike, where: object = None) -> xr.Dataset:
    """Compute allele frequencies from the written calls, consolidate, validate.

    The frequencies run on Dask's current scheduler: threads by default, or a
    distributed cluster when a `dask.distributed.Client` is active (`--scheduler`).
    In the same pass, an allele index beyond the store's alleles (a VCF's `0/7` with
    one ALT) is refused, naming `where` (the user's input) or else the store.
    """
    path = os.fspath(path)
    group = zarr.open_group(path, mode="a", zarr_format=ZARR_FORMAT)
    n_alleles = int(group.attrs["n_alleles"])
    calls = da.from_zarr(path, component="call_genotype")
    freq, high = da.compute(allele_frequency(calls, n_alleles), calls.max())
    if high >= n_alleles:
        first = int(np.argmax(calls.max(axis=(1, 2)).compute() >= n_alleles))
        raise InputFormatError(
            where if where is not None else path,
            f"variant {first + 1} ('{group['variant_id'][first]}') has allele index {high}; "
            f"the alleles are 0..{n_alleles - 1}")
    out = group.create_array(
        "variant_allele_frequency",
        shape=freq.shape,
        chunks=(calls.chunksize[0], n_alleles),
        dtype="float32",
        compressors=numcodecs.Blosc(cname="zstd", clevel=5),
        fill_value=np.nan,
        overwrite=True,
    )
    out.attrs["_ARRAY_DIMENSIONS"] = list(schema.VARIABLES["variant_allele_frequency"].dims)
    out[:] = freq
    zarr.consolidate_metadata(path)
    ds = xr.open_zarr(path, mask_and_scale=False, concat_characters=False)
    return schema.validate(ds, where=str(path))
