"""Open a genotype store as a lazy, validated `xarray.Dataset`."""

from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from gperceiver.errors import InputFormatError, InputNotFoundError, UsageError
from gperceiver.store import schema
from gperceiver.store.frequencies import allele_frequency


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
    ds = _derived(ds)
    if validate:
        try:
            schema.validate(ds, where=path)
        except schema.SchemaError as e:
            raise InputFormatError(path, str(e).removeprefix(f"{path}: ")) from None
    return labelled(_checked(ds, path))


def _derived(ds: xr.Dataset) -> xr.Dataset:
    """What a VCF Zarr store written by bio2zarr lacks, derived so it trains as it is:
    allele frequencies (lazily, with Dask) and unique variant IDs (`variant_ids`)."""
    needed = ("call_genotype", "contig_id", "variant_contig", "variant_position",
              "variant_allele")
    if not all(name in ds for name in needed):
        return ds  # the schema check names what is missing
    if "variant_allele_frequency" not in ds:
        frequency = allele_frequency(ds["call_genotype"].data, ds.sizes[schema.ALLELES])
        ds = ds.assign(variant_allele_frequency=((schema.VARIANTS, schema.ALLELES), frequency))
    ids = np.asarray(ds["variant_id"].values, dtype=object) if "variant_id" in ds else None
    if ids is None or len(set(ids.tolist())) < len(ids) or "." in ids or "" in ids:
        ids = variant_ids(ids, ds["contig_id"].values, ds["variant_contig"].values,
                          ds["variant_position"].values, ds["variant_allele"].values)
    return ds.assign(variant_id=(schema.VARIANTS, ids))  # loaded: `labelled` reads it once


def variant_ids(ids: np.ndarray | None, contig_id: np.ndarray, variant_contig: np.ndarray,
                position: np.ndarray, alleles: np.ndarray) -> np.ndarray:
    """Variant IDs with every missing ('.', '') or repeated one made `CHROM:POS:REF:ALT`
    (all of them when `ids` is None); a name still taken gets `:2`, `:3`, ... appended."""
    n = len(position)
    ids = np.full(n, "", dtype=object) if ids is None else np.asarray(ids, dtype=object).copy()
    seen: set[str] = set()
    replace = np.zeros(n, dtype=bool)
    for i, name in enumerate(ids):
        if name in ("", ".") or name in seen:
            replace[i] = True
        else:
            seen.add(name)
    contigs = np.asarray(contig_id, dtype=object)
    for i in np.flatnonzero(replace):
        labels = [str(a) for a in alleles[i] if a != ""] or ["."]
        name = (f"{contigs[variant_contig[i]]}:{position[i]}:{labels[0]}:"
                f"{','.join(labels[1:]) or '.'}")
        candidate, k = name, 1
        while candidate in seen:
            k += 1
            candidate = f"{name}:{k}"
        seen.add(candidate)
        ids[i] = candidate
    return ids


# Dimension coordinates open_store adds, so that `ds.sel(samples=NAME)` works; they
# are views of sample_id, variant_id and contig_id and are never written to a store.
LABELS = {schema.SAMPLES: "sample_id", schema.VARIANTS: "variant_id",
          schema.CONTIGS: "contig_id"}
CONTIG_NAME = "variant_contig_name"  # each variant's contig name, indexed


def labelled(ds: xr.Dataset) -> xr.Dataset:
    """`ds` with its labels loaded as coordinates and indexed.

    `ds.sel(samples="A1")`, `ds.sel(variants="rs123")` and
    `ds.sel(variant_contig_name="chr2")` select by name; the per-variant labels
    (`variant_contig`, `variant_position`) are numpy, so boolean selections such as
    `ds.sel(variants=ds.variant_contig == 0)` work; strings are Python `str` (dtype
    object, as sgkit expects), which `.astype(str)` and pandas take.
    """
    strings = {name: (ds[name].dims, np.asarray(ds[name].values, dtype=object),
                      ds[name].attrs)
               for name in ("sample_id", "variant_id", "contig_id", "variant_allele")}
    ds = ds.assign(strings)
    for name in ("variant_contig", "variant_position"):
        ds[name] = ds[name].load()
    contigs = strings["contig_id"][1]
    ds = ds.set_coords([*strings, "variant_contig", "variant_position"])
    ds = ds.assign_coords(
        {dim: (dim, strings[name][1]) for dim, name in LABELS.items()}
        | {CONTIG_NAME: (schema.VARIANTS, contigs[np.asarray(ds["variant_contig"].values)])})
    return ds.set_xindex(CONTIG_NAME)


class CheckedReader:
    """Array-like over a zarr array whose read errors name the store, variable and region.

    A corrupted or missing chunk otherwise surfaces deep inside Dask as a bare codec
    error; wrapped, it becomes one `InputFormatError` line the user can act on.
    """

    def __init__(self, array: zarr.Array, path: str, name: str):
        self.array, self.path, self.name = array, path, name
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.folder = _chunk_folder(array) if array.attrs.get(schema.EVERY_CHUNK) else None

    def __getitem__(self, key: Any) -> Any:
        region = ", ".join(
            f"{k.start or 0}:{k.stop}" if isinstance(k, slice) else str(k)
            for k in (key if isinstance(key, tuple) else (key,))
        )
        if self.folder is not None:
            self._check_chunks(key, region)
        try:
            return self.array[key]
        except Exception as e:  # noqa: BLE001 - any codec/IO fault of a chunk read
            raise unreadable(self.path, self.name, region, "a chunk is corrupt or missing "
                             f"({type(e).__name__}: {e})") from None

    def _check_chunks(self, key: Any, region: str) -> None:
        """Refuse a read that touches an absent chunk of an array written whole."""
        keys = key if isinstance(key, tuple) else (key,)
        ranges = []
        for dim, (n, c) in enumerate(zip(self.shape, self.array.chunks, strict=True)):
            k = keys[dim] if dim < len(keys) else slice(None)
            if not isinstance(k, slice):
                return  # a point or fancy read: zarr reads it as it can
            start, stop, _ = k.indices(n)
            ranges.append(range(start // c, max(start // c, (stop - 1) // c) + 1))
        separator = self.array.metadata.dimension_separator or "."
        for index in itertools.product(*ranges):
            key = separator.join(map(str, index))
            if not os.path.exists(os.path.join(self.folder, key)):
                raise unreadable(self.path, self.name, region, f"chunk {key} is missing")


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
        self.compressor = meta.compressor
        self.every_chunk = bool(array.attrs.get(schema.EVERY_CHUNK))
        self.fill = 0 if meta.fill_value is None else meta.fill_value  # zarr reads None as 0
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
            if self.every_chunk:
                raise unreadable(self.path, self.name, _span(starts, stops),
                                 f"chunk {key} is missing") from None
            self.buffer.fill(self.fill)  # an absent chunk holds the fill value
        except Exception as e:  # noqa: BLE001 - any codec/IO fault of a chunk read
            raise unreadable(self.path, self.name, _span(starts, stops),
                             "a chunk is corrupt or missing "
                             f"({type(e).__name__}: {e})") from None
        return self.buffer[tuple(slice(0, b - a) for a, b in zip(starts, stops, strict=True))]


def _span(starts: list[int], stops: list[int]) -> str:
    return ", ".join(f"{a}:{b}" for a, b in zip(starts, stops, strict=True))


def unreadable(path: str, name: str, region: str, problem: str) -> InputFormatError:
    """The one-line error for a region of a store variable that cannot be read."""
    return InputFormatError(path, f"variable '{name}' cannot be read at [{region}]: {problem}")


def _chunk_folder(array: zarr.Array) -> str | None:
    """The local folder holding a zarr v2 array's chunk files, or None (remote, v3)."""
    root = getattr(array.store, "root", None)
    if root is None or array.metadata.zarr_format != 2:
        return None
    folder = os.path.join(str(root), array.path)
    return folder if os.path.isdir(folder) else None


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


@dataclass(frozen=True)
class StoreView:
    """A store, or a selection of one, opened once.

    `ds` is what it shows, `full` the whole store, `samples`/`variants` where the
    shown ones sit in it (None: all of them), `path` the store's location and `name`
    how messages name it. Commands that read a store several times (fit: the
    marker path, two loaders, prediction) `resolve` it once and pass this down;
    every function that takes a store path or Dataset takes one.
    """

    ds: xr.Dataset
    full: xr.Dataset
    samples: np.ndarray | None
    variants: np.ndarray | None
    path: str
    name: str


Store = str | os.PathLike | xr.Dataset | StoreView  # what a store argument may be


def resolve(store: Store) -> StoreView:
    """`store` opened (a path), checked as a selection of a store (a Dataset), or as
    it is (a StoreView)."""
    if isinstance(store, StoreView):
        return store
    if isinstance(store, xr.Dataset):
        full, samples, variants = view_indices(store)
        return StoreView(store, full, samples, variants, str(full.encoding["source"]),
                         store_name(store))
    ds = open_store(store)
    return StoreView(ds, ds, None, None, os.fspath(store), os.fspath(store))


def open_view(store: Store) -> xr.Dataset:
    """The Dataset for a store path (`open_store`), or what a Dataset or StoreView shows:
    a store opened by `open_store`, or a selection of it (`ds.isel(...)`)."""
    if isinstance(store, str | os.PathLike):
        return open_store(store)
    return resolve(store).ds


def store_name(store: Store) -> str:
    """How messages and metrics name a store path or a selection of a store."""
    if isinstance(store, str | os.PathLike):
        return os.fspath(store)
    if isinstance(store, StoreView):
        return store.name
    return (f"{store.encoding.get('source')} (a selection: {store.sizes[schema.SAMPLES]:,} "
            f"samples x {store.sizes[schema.VARIANTS]:,} variants)")  # of a Dataset


def view_indices(ds: xr.Dataset) -> tuple[xr.Dataset, np.ndarray | None, np.ndarray | None]:
    """(the whole store, opened; store sample indices; store variant indices) of a
    selection made on a Dataset from `open_store`; None where it keeps every sample
    or variant.

    Samples and variants must keep the store's order (the model's loci and the rows of
    what is written follow it), as a boolean mask, a slice or sorted indices do.
    """
    path = ds.encoding.get("source")
    if path is None:
        raise UsageError("give a store path, or a Dataset from gperceiver.open_store (or a "
                         "selection of one): this Dataset names no store")
    for dim in (schema.SAMPLES, schema.VARIANTS):
        if dim not in ds.dims:
            raise UsageError(f"{path}: the selection dropped the '{dim}' dimension (select "
                             f"with a list or a slice, e.g. ds.isel({dim}=[3]), to keep it)")
        if ds.sizes[dim] == 0:
            raise UsageError(f"{path}: the selection holds no {dim}")
    full = open_store(path)
    found = []
    for dim in (schema.SAMPLES, schema.VARIANTS):
        labels = ds.indexes[dim]
        if labels.equals(full.indexes[dim]):
            found.append(None)
            continue
        index = full.indexes[dim].get_indexer(labels)
        if (index < 0).any():
            raise UsageError(f"{path}: {dim[:-1]} '{labels[int(np.argmax(index < 0))]}' of the "
                             "selection is not in the store")
        found.append(index.astype(np.int64))
    for dim, index in zip((schema.SAMPLES, schema.VARIANTS), found, strict=True):
        if index is not None and (np.diff(index) <= 0).any():
            raise UsageError(f"{path}: select {dim} in store order (a boolean mask, a slice "
                             "or sorted indices)")
    return full, found[0], found[1]


def input_positions(ds: xr.Dataset) -> np.ndarray:
    """Positions in the input's own units: `variant_position` undone of the `scale` and
    `offset` a converter applied to make cM or Mb positions VCF's integers."""
    position = ds["variant_position"]
    scale, offset = position.attrs.get("scale", 1), position.attrs.get("offset", 0)
    return (np.asarray(position.values, np.float64) - offset) / scale
