"""Open a genotype store as a lazy, validated `xarray.Dataset`."""

from __future__ import annotations

import os

import xarray as xr

from gperceiver import schema
from gperceiver.errors import InputFormatError, InputNotFoundError


def _exists(path: str) -> bool:
    if "://" in path and not path.startswith("file://"):
        return True  # remote: let the open itself report
    local = path.removeprefix("file://")
    return os.path.exists(local)


def open_store(path: str | os.PathLike, *, validate: bool = True) -> xr.Dataset:
    """Open the genotype store at `path` lazily (Dask-backed) and check its schema.

    Genotypes are never loaded: each variable is a Dask array over the store's
    chunks. Raises `InputNotFoundError` or `InputFormatError` with one clear line.
    """
    path = os.fspath(path)
    if not _exists(path):
        raise InputNotFoundError(f"{path}: no such genotype store")
    try:
        ds = xr.open_zarr(
            path, mask_and_scale=False, decode_times=False, concat_characters=False
        )
    except (FileNotFoundError, KeyError, ValueError, TypeError) as e:
        raise InputFormatError(path, f"not a readable Zarr genotype store ({e})") from None
    except PermissionError:
        raise InputNotFoundError(f"{path}: permission denied") from None
    if validate:
        try:
            schema.validate(ds, where=path)
        except schema.SchemaError as e:
            raise InputFormatError(path, str(e).removeprefix(f"{path}: ")) from None
    return ds


def store_ploidy(ds: xr.Dataset) -> int:
    return int(ds.sizes[schema.PLOIDY])


def store_n_alleles(ds: xr.Dataset) -> int:
    return int(ds.sizes[schema.ALLELES])
