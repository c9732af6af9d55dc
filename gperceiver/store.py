"""Open a genotype store as a lazy, validated `xarray.Dataset`."""

from __future__ import annotations

import os
from typing import Any

import dask.array as da
import xarray as xr
import zarr

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
    return _checked(ds, path)


class CheckedReader:
    """Array-like over a zarr array whose read errors name the store, variable and region.

    A corrupted or missing chunk otherwise surfaces deep inside Dask as a bare codec
    error; wrapped, it becomes one `InputFormatError` line the user can act on.
    """

    def __init__(self, array: zarr.Array, path: str, name: str):
        self.array, self.path, self.name = array, path, name
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.array[key]
        except Exception as e:  # noqa: BLE001 - any codec/IO fault of a chunk read
            region = ", ".join(
                f"{k.start or 0}:{k.stop}" if isinstance(k, slice) else str(k)
                for k in (key if isinstance(key, tuple) else (key,))
            )
            raise InputFormatError(
                self.path,
                f"variable '{self.name}' cannot be read at [{region}]: a chunk is corrupt "
                f"or missing ({type(e).__name__}: {e})",
            ) from None


def _checked(ds: xr.Dataset, path: str) -> xr.Dataset:
    """Swap each variable's Dask array for one reading through `CheckedReader`."""
    try:
        group = zarr.open_group(path, mode="r")
    except Exception:  # noqa: BLE001 - exotic stores keep xarray's own reader
        return ds
    for name, var in ds.variables.items():
        if name not in group or not isinstance(var.data, da.Array):
            continue
        arr = group[name]
        if arr.dtype.kind not in "iufb":  # strings: xarray decodes them; keep its reader
            continue
        reader = CheckedReader(arr, path, name)
        ds[name] = var.copy(data=da.from_array(reader, chunks=var.data.chunks, lock=False,
                                               name=f"{name}-{path}-checked"))
    return ds


def store_ploidy(ds: xr.Dataset) -> int:
    return int(ds.sizes[schema.PLOIDY])


def store_n_alleles(ds: xr.Dataset) -> int:
    return int(ds.sizes[schema.ALLELES])
