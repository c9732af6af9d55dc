"""Open a genotype store as a lazy, validated `xarray.Dataset`."""

from __future__ import annotations

import os
import warnings
from typing import Any

import dask.array as da
import numpy as np
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
        with warnings.catch_warnings():
            # a store without consolidated metadata (written by hand, or damaged) opens
            # all the same; the schema check below says what is wrong with it, if anything
            warnings.filterwarnings("ignore", message="Failed to open Zarr store with "
                                    "consolidated metadata", category=RuntimeWarning)
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


class LocalChunks:
    """Whole chunks of a local Zarr v2 array, decoded by the array's own compressor
    straight into one reused buffer.

    This is the same decoding zarr does, without its asynchronous machinery (a
    thread hand-off per chunk and a fresh buffer each time), which costs the
    loader's hot path about a third more CPU than decompression itself. `open`
    returns None for anything else (remote stores, filters, Fortran order); read
    those through `CheckedReader`. Faults name the variable and region likewise.
    """

    def __init__(self, array: zarr.Array, folder: str, path: str, name: str):
        meta = array.metadata
        self.compressor, self.fill = meta.compressor, meta.fill_value
        self.separator = meta.dimension_separator or "."
        self.folder, self.path, self.name = folder, path, name
        self.shape, self.chunks = array.shape, array.chunks
        self.buffer = np.empty(self.chunks, dtype=array.dtype)
        self.raw = bytearray()  # the compressed bytes of the last chunk read

    @classmethod
    def open(cls, array: zarr.Array, path: str, name: str) -> LocalChunks | None:
        meta, store = array.metadata, array.store
        root = getattr(store, "root", None)
        if (meta.zarr_format != 2 or meta.filters or meta.order != "C" or root is None
                or meta.compressor is None or not hasattr(meta.compressor, "decode")
                or not os.path.isdir(os.path.join(str(root), array.path))):
            return None
        return cls(array, os.path.join(str(root), array.path), path, name)

    def __getitem__(self, chunk: tuple[int, ...]) -> np.ndarray:
        """The chunk at grid position `chunk`, cut to the array's edge (a view of
        the reused buffer: copy what you keep before the next read)."""
        key = self.separator.join(str(c) for c in chunk)
        starts = [c * n for c, n in zip(chunk, self.chunks, strict=True)]
        stops = [min(s + n, size) for s, n, size in zip(starts, self.chunks, self.shape,
                                                         strict=True)]
        try:
            with open(os.path.join(self.folder, key), "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if len(self.raw) < size:
                    self.raw = bytearray(size)
                data = memoryview(self.raw)[:size]
                f.readinto(data)
                self.compressor.decode(data, out=self.buffer)
        except FileNotFoundError:
            self.buffer.fill(self.fill)  # an absent chunk holds the fill value
        except Exception as e:  # noqa: BLE001 - any codec/IO fault of a chunk read
            region = ", ".join(f"{a}:{b}" for a, b in zip(starts, stops, strict=True))
            raise InputFormatError(
                self.path,
                f"variable '{self.name}' cannot be read at [{region}]: a chunk is corrupt "
                f"or missing ({type(e).__name__}: {e})",
            ) from None
        return self.buffer[tuple(slice(0, b - a) for a, b in zip(starts, stops, strict=True))]


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
