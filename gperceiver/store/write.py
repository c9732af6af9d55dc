"""Create a genotype store, fill its calls, then finish it: frequencies, metadata, checks.

Every writer goes create_store -> write calls -> finish_store, inside
`gperceiver.atomic.atomic_output`, so the store appears only when complete; a VCZ
that bio2zarr wrote is finished in place by `finish_vcz`. Each variable is written
with the dtype `schema.VARIABLES` declares (`dtype_of`).
`conform` gives a store the dtypes and fill values bio2zarr writes, so plain
`xarray.open_zarr` and sgkit read it as they read bio2zarr's own stores; it also
upgrades stores written by earlier versions, in place (`gperceiver upgrade`).
"""

from __future__ import annotations

import json
import os
import shutil
import string
from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import fsspec
import fsspec.implementations.local
import numcodecs
import numpy as np
import xarray as xr
import zarr

from gperceiver.errors import InputFormatError
from gperceiver.store import schema
from gperceiver.store.frequencies import allele_frequency
from gperceiver.store.read import open_store, variant_ids

ZARR_FORMAT = 2  # what bio2zarr writes by default; read by every zarr/xarray/sgkit version
GENOTYPE_COMPRESSOR = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)
LABEL_COMPRESSOR = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
FLOAT_COMPRESSOR = numcodecs.Blosc(cname="zstd", clevel=3)  # embeddings and other floats


def dtype_of(name: str) -> np.dtype:
    """The dtype a store variable is written with: its declaration in `schema.VARIABLES`."""
    return np.dtype(schema.VARIABLES[name].dtype)


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
    position_attrs: Mapping[str, Any] | None = None,
    samples_chunk: int = schema.DEFAULT_SAMPLES_CHUNK,
    variants_chunk: int = schema.DEFAULT_VARIANTS_CHUNK,
    attrs: Mapping[str, Any] | None = None,
) -> zarr.Array:
    """Write the store's labels and an empty `call_genotype`; return that array to fill.

    Positions become VCF's integers (`integer_positions`); `position_attrs` carries the
    `scale` and `offset` of a store the positions were taken from (impute, filter).
    """
    n_variants, n_samples = len(variant_id), len(sample_id)
    if variant_allele is None:
        variant_allele = np.tile(allele_labels(n_alleles), (n_variants, 1))
    variant_position, made = integer_positions(np.asarray(variant_position))
    position_attrs = made or dict(position_attrs or {})
    labels = xr.Dataset(
        {
            "sample_id": (schema.SAMPLES, np.asarray(sample_id, dtype=object)),
            "variant_id": (schema.VARIANTS, np.asarray(variant_id, dtype=object)),
            "contig_id": (schema.CONTIGS, np.asarray(contig_id, dtype=object)),
            "variant_contig": (schema.VARIANTS,
                               np.asarray(variant_contig, dtype=dtype_of("variant_contig"))),
            "variant_position": (schema.VARIANTS, variant_position, position_attrs),
            "variant_allele": (
                (schema.VARIANTS, schema.ALLELES),
                np.asarray(variant_allele, dtype=object),
            ),
        },
        attrs={
            "ploidy": int(ploidy),
            "n_alleles": int(n_alleles),
            "converter_version": schema.CONVERTER_VERSION,
            "format_version": schema.FORMAT_VERSION,
            **(attrs or {}),
        },
    )
    v_chunk, s_chunk = min(variants_chunk, n_variants) or 1, min(samples_chunk, n_samples) or 1
    labels.to_zarr(path, mode="w", zarr_format=ZARR_FORMAT, consolidated=False,
                   encoding=label_chunks(labels, v_chunk, s_chunk))
    group = zarr.open_group(path, mode="a", zarr_format=ZARR_FORMAT)
    calls = group.create_array(
        "call_genotype",
        shape=(n_variants, n_samples, ploidy),
        chunks=(min(variants_chunk, n_variants), min(samples_chunk, n_samples), ploidy),
        dtype=dtype_of("call_genotype"),
        compressors=GENOTYPE_COMPRESSOR,
        fill_value=None,  # as bio2zarr: -1 and -2 are data, not a mask
        # every chunk reaches the disk, even all 0/0 ones, so that a lost chunk is
        # an error (schema.EVERY_CHUNK) and not a silent run of 0/0 calls
        config={"write_empty_chunks": True},
        attributes={"_ARRAY_DIMENSIONS": list(schema.VARIABLES["call_genotype"].dims),
                    schema.EVERY_CHUNK: True},
    )
    return calls


def finish_store(path: str | os.PathLike, where: object = None,
                 sample_id: Sequence[str] | None = None) -> xr.Dataset:
    """Compute allele frequencies from the written calls, consolidate, validate.

    `sample_id`: the samples' names, when they were known only once the calls were
    written (a TSV's rows).

    The frequencies run on Dask's current scheduler: threads by default, or a
    distributed cluster when a `dask.distributed.Client` is active (`--scheduler`).
    In the same pass, an allele index beyond the store's alleles (a VCF's `0/7` with
    one ALT) is refused, naming `where` (the user's input) or else the store.
    """
    path = os.fspath(path)
    group = zarr.open_group(path, mode="a", zarr_format=ZARR_FORMAT)
    if sample_id is not None:
        group["sample_id"][:] = np.asarray(sample_id, dtype=object)
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
        dtype=dtype_of("variant_allele_frequency"),
        compressors=LABEL_COMPRESSOR,
        fill_value=np.nan,
        overwrite=True,
    )
    out.attrs["_ARRAY_DIMENSIONS"] = list(schema.VARIABLES["variant_allele_frequency"].dims)
    out[:] = freq
    conform(path)
    ds = xr.open_zarr(path, mask_and_scale=False, concat_characters=False)
    return schema.validate(ds, where=str(path))


def label_chunks(labels: xr.Dataset, variants_chunk: int, samples_chunk: int) -> dict:
    """Zarr encodings giving every label array the genotypes' variant and sample chunks,
    as VCF Zarr readers (vcztools) require."""
    size = {schema.VARIANTS: variants_chunk, schema.SAMPLES: samples_chunk}
    return {name: {"chunks": tuple(size.get(d, labels.sizes[d]) or 1 for d in var.dims)}
            for name, var in labels.variables.items()}


def allele_labels(n_alleles: int) -> np.ndarray:
    """Labels for alleles a source does not name (integer-coded TSVs): "A", "B", ...
    in code order, as genotyping arrays label their two alleles, so that a VCF
    written from the store (`vcztools view`) has a REF and an ALT."""
    letters = string.ascii_uppercase
    return np.array([letters[a % 26] * (1 + a // 26) for a in range(n_alleles)], dtype=object)


def integer_positions(position: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Positions as VCF Zarr has them (1-based integers), and attributes that say how.

    Whole numbers >= 1 (base pairs) are kept. Others (cM or Mb from a map file, or
    a 0) become `round(position x scale) + offset`: scale 10^6 for fractional
    positions (Mb -> bp), else 1; offset 0, or what lifts the smallest to 1. The
    attributes `scale` and `offset` give the input back as `(variant_position -
    offset) / scale`. Order and spacing within a contig are kept, which is all the
    model's position features use.
    """
    position = np.asarray(position)
    whole = position.dtype.kind in "iu" or bool(np.all(position == np.round(position)))
    if whole and (position.size == 0 or position.min() >= 1):
        return _narrowest(position.astype(np.int64)), {}
    scale = 1 if whole else 1_000_000
    scaled = np.round(position.astype(np.float64) * scale).astype(np.int64)
    offset = max(0, 1 - int(scaled.min())) if scaled.size else 0
    attrs = {"scale": scale, "offset": offset,
             "description": "position = (variant_position - offset) / scale in the input's "
                            "units"}
    return _narrowest(scaled + offset), attrs


def _narrowest(position: np.ndarray) -> np.ndarray:
    """The declared dtype (int32, as bio2zarr writes positions), int64 where a value does
    not fit."""
    dtype = dtype_of("variant_position")
    if position.size == 0 or position.max() <= np.iinfo(dtype).max:
        return position.astype(dtype)
    return position


# ---------------------------------------------------------------- VCF Zarr conventions

# String arrays bio2zarr writes with fill value "" (xarray reads them as Python
# strings, dtype object); variant_allele keeps none, as "" pads missing alleles.
EMPTY_FILLED = ("sample_id", "contig_id", "variant_id")


def conform(path: str | os.PathLike) -> list[str]:
    """Give the zarr v2 store at `path` bio2zarr's dtypes, fill values, label chunks and
    region index; return what changed, one phrase each (empty when it conformed).

    Integer and boolean arrays carry no fill value (a fill value of -1 makes xarray
    and sgkit mask missing calls into float NaN); a chunk that was never written
    because it held only the old fill value is written out first, so no value
    changes. Fractional positions become integers (`integer_positions`); string
    labels get bio2zarr's fill values. The consolidated metadata is dropped first
    and written last; in between each array is replaced whole (`_replace_array`)
    and each metadata file in one write, so the store reads correctly after every
    step, should one fail.
    """
    path = os.fspath(path)
    fs, root = fsspec.core.url_to_fs(path)
    if fs.exists(f"{root}/.zmetadata"):
        fs.rm(f"{root}/.zmetadata")
    group = zarr.open_group(path, mode="r+", zarr_format=ZARR_FORMAT, use_consolidated=False)
    changed = []
    position = group["variant_position"] if "variant_position" in group else None
    if position is not None and position.dtype.kind == "f":
        values, attrs = integer_positions(position[:])
        _replace_array(group, fs, root, "variant_position", values, chunks=position.chunks,
                       attributes={**position.attrs.asdict(), **attrs})
        changed.append(f"variant_position {position.dtype} -> {values.dtype}")
    alleles = group["variant_allele"] if "variant_allele" in group else None
    if alleles is not None and alleles.size and not any(np.asarray(alleles[:]).ravel() != ""):
        alleles[:] = np.tile(allele_labels(alleles.shape[1]), (alleles.shape[0], 1))
        changed.append("variant_allele labelled " + "/".join(allele_labels(alleles.shape[1])))
    changed += _rechunk_labels(group, fs, root)
    changed += _region_index(path, group)
    calls = group["call_genotype"]
    if not calls.attrs.get(schema.EVERY_CHUNK):
        if _write_absent_chunks(calls, fs, f"{root}/call_genotype"):
            changed.append("call_genotype: chunks held only as the fill value written")
        calls.attrs[schema.EVERY_CHUNK] = True
    for name, array in group.arrays():
        meta = array.metadata
        kind = array.dtype.kind
        if kind in "iub" and meta.fill_value is not None:
            _write_absent_chunks(array, fs, f"{root}/{name}")
            _set_fill(fs, f"{root}/{name}", None)
            changed.append(f"{name} fill value {meta.fill_value} -> none")
        elif kind in "OUT" and name in EMPTY_FILLED and meta.fill_value != "":
            _set_fill(fs, f"{root}/{name}", "")
            changed.append(f"{name} fill value {meta.fill_value!r} -> ''")
    zarr.consolidate_metadata(path)
    return changed


def _region_index(path: str, group: zarr.Group) -> list[str]:
    """bio2zarr's `region_index` (what vcztools' -r/-t need), built by bio2zarr itself
    from `variant_length` (the REF allele's length, 1 where it has no label), which is
    made when missing. Rebuilt every time: a rechunked copy's old index is stale."""
    changed = []
    position = group["variant_position"]
    if "variant_length" not in group:
        ref = np.asarray(group["variant_allele"][:, 0], dtype=object)
        length = np.array([max(1, len(str(a))) for a in ref], dtype=dtype_of("variant_length"))
        array = group.create_array(
            "variant_length", shape=length.shape, chunks=position.chunks, dtype=length.dtype,
            compressors=LABEL_COMPRESSOR, fill_value=None,
            attributes={"_ARRAY_DIMENSIONS": [schema.VARIANTS],
                        "description": "length of the REF allele"})
        array[:] = length
        changed.append("variant_length written")
    if "region_index" not in group:
        changed.append("region_index written (vcztools -r)")
    else:
        del group["region_index"]
    from bio2zarr.vcz import VcfZarrIndexer

    VcfZarrIndexer(path).create_index()
    return changed


def _replace_array(group: zarr.Group, fs, root: str, name: str, values: np.ndarray, *,
                   chunks: tuple[int, ...], attributes: Mapping[str, Any],
                   **create: Any) -> None:
    """Write `values` as array `name` beside the old one, then swap the folders (on a
    local disk the old array is gone only once the new one is complete)."""
    create.setdefault("compressors", LABEL_COMPRESSOR)
    create.setdefault("fill_value", None)
    fresh = group.create_array(f"{name}.new", shape=values.shape, chunks=chunks,
                               dtype=values.dtype, attributes=dict(attributes),
                               overwrite=True, **create)
    fresh[:] = values
    old, new, aside = f"{root}/{name}", f"{root}/{name}.new", f"{root}/{name}.old"
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        os.replace(old, aside)
        os.replace(new, old)
        shutil.rmtree(aside)
    else:
        fs.rm(old, recursive=True)
        fs.mv(new, old, recursive=True)


def _rechunk_labels(group: zarr.Group, fs, root: str) -> list[str]:
    """Rewrite 1-d and 2-d label arrays whose variant or sample chunks differ from the
    genotypes' (earlier versions wrote each label array as one chunk)."""
    calls = group["call_genotype"]
    size = {schema.VARIANTS: calls.chunks[0], schema.SAMPLES: calls.chunks[1]}
    changed = []
    for name, array in list(group.arrays()):
        dims = array.attrs.get("_ARRAY_DIMENSIONS", [])
        if name.startswith("call_") or array.ndim > 2 or not set(dims) & set(size):
            continue
        want = tuple(min(size.get(d, n), n) or 1 for d, n in zip(dims, array.shape, strict=True))
        if tuple(array.chunks) == want:
            continue
        meta = array.metadata
        _replace_array(group, fs, root, name, array[:], chunks=want,
                       attributes=array.attrs.asdict(), compressors=meta.compressor,
                       filters=meta.filters, fill_value=meta.fill_value)
        changed.append(f"{name} rechunked to {want[0]}")
    return changed


def _write_absent_chunks(array: zarr.Array, fs, folder: str) -> int:
    """Write every chunk that exists only as the fill value (zarr reads no fill value as
    0), so that value stays whatever the fill value becomes; return how many."""
    fill = array.metadata.fill_value if array.metadata.fill_value is not None else 0
    separator = array.metadata.dimension_separator or "."
    grid = [-(-n // c) for n, c in zip(array.shape, array.chunks, strict=True)]
    present = {name.rsplit("/", 1)[-1] for name in fs.ls(folder, detail=False)}
    absent = [index for index in np.ndindex(*grid)
              if separator.join(map(str, index)) not in present]
    writable = array.with_config({"write_empty_chunks": True})
    for index in absent:
        region = tuple(slice(i * c, min(n, (i + 1) * c))
                       for i, c, n in zip(index, array.chunks, array.shape, strict=True))
        writable[region] = np.full([s.stop - s.start for s in region], fill, array.dtype)
    return len(absent)


def _set_fill(fs, folder: str, fill: object) -> None:
    """Replace the fill value in the `.zarray` in `folder`, in one write (atomic, by
    rename, on a local disk; one PUT on object storage)."""
    meta_path = f"{folder}/.zarray"
    with fs.open(meta_path) as f:
        meta = json.load(f)
    meta["fill_value"] = fill
    text = json.dumps(meta, indent=4)
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        tmp = meta_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, meta_path)
    else:
        fs.pipe_file(meta_path, text.encode())


def upgrade_store(path: str | os.PathLike) -> list[str]:
    """Bring a genotype store written by an earlier gperceiver to today's conventions,
    in place (`conform`); return what changed. The store must open as a store."""
    path = os.fspath(path)
    open_store(path)  # refuses what is not a genotype store, in one line
    if zarr.open_group(path, mode="r").metadata.zarr_format != ZARR_FORMAT:
        raise InputFormatError(path, "a zarr v3 store: `gperceiver convert vcz` rewrites it")
    changed = conform(path)
    if changed:
        zarr.open_group(path, mode="r+").attrs["converter_version"] = schema.CONVERTER_VERSION
        zarr.consolidate_metadata(path)
    return changed



# ---------------------------------------------------------------- a VCZ from bio2zarr

# VCZ fields our schema needs before frequencies are added.
NEEDED = [v for v in schema.VARIABLES.values()
          if v.required and v.name not in ("variant_allele_frequency", "variant_id")]


def finish_vcz(
    path: str | os.PathLike,
    *,
    source: str,
    where: object,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Make the zarr v2 VCZ at `path` (written by bio2zarr, or copied) a valid genotype
    store, in place: declared genotype dtype, unique variant IDs, the store attributes,
    then `finish_store`.

    `where` names the user's input in error messages (the VCF, the PLINK prefix).
    """
    group = zarr.open_group(path, mode="a", zarr_format=ZARR_FORMAT, use_consolidated=False)
    fs, root = fsspec.core.url_to_fs(os.fspath(path))
    if fs.exists(f"{root}/.zmetadata"):  # stale: it would hide the arrays changed below
        fs.rm(f"{root}/.zmetadata")
    if "call_genotype" not in group:
        raise InputFormatError(where, "no genotypes (no GT field, or no samples)")
    for var in NEEDED:
        if var.name not in group:
            raise InputFormatError(where, f"VCF Zarr variable '{var.name}' is missing")
    calls = group["call_genotype"]
    if calls.dtype != dtype_of("call_genotype"):
        raise InputFormatError(
            where, f"genotypes are {calls.dtype}: an allele index above "
            f"{np.iinfo(dtype_of('call_genotype')).max} does not fit "
            f"{dtype_of('call_genotype')}")
    if calls.shape[1] == 0:
        raise InputFormatError(where, "no samples")
    if calls.shape[0] == 0:
        raise InputFormatError(where, "no variants")
    ids = unique_variant_ids(group)
    if "variant_id" not in group:  # tskit2zarr writes none
        group.create_array("variant_id", shape=ids.shape, chunks=group["variant_position"].chunks,
                           dtype=str, compressors=LABEL_COMPRESSOR,
                           attributes={"_ARRAY_DIMENSIONS": [schema.VARIANTS]})
    group["variant_id"][:] = ids
    _widen(group, "variant_contig")
    _widen(group, "variant_position")
    group.attrs.update(
        {
            "ploidy": int(calls.shape[2]),
            "n_alleles": int(group["variant_allele"].shape[1]),
            "source": source,
            "vcz_source": str(group.attrs.get("source", "")),
            "converter_version": schema.CONVERTER_VERSION,
            "format_version": schema.FORMAT_VERSION,
            **(attrs or {}),
        }
    )
    finish_store(path, where)


def _widen(group: zarr.Group, name: str) -> None:
    """Rewrite a 1-d integer array that bio2zarr made as narrow as its values (int8...)
    with its declared dtype, so arithmetic on it cannot overflow."""
    array, dtype = group[name], dtype_of(name)
    if array.dtype.kind not in "iu" or array.dtype.itemsize >= dtype.itemsize:
        return
    values = array[:].astype(dtype)
    attrs = array.attrs.asdict()
    wide = group.create_array(
        name, shape=array.shape, chunks=array.chunks, dtype=dtype,
        compressors=LABEL_COMPRESSOR, attributes=attrs, overwrite=True,
    )
    wide[:] = values


def unique_variant_ids(group: zarr.Group) -> np.ndarray:
    """The group's variant IDs with missing or repeated ones made (`read.variant_ids`)."""
    ids = np.asarray(group["variant_id"][:], dtype=object) if "variant_id" in group else None
    return variant_ids(ids, group["contig_id"][:], group["variant_contig"][:],
                       group["variant_position"][:], group["variant_allele"][:])


def dims_of(array: zarr.Array) -> list[str]:
    """An array's dimension names, from zarr v3 metadata or the v2 xarray attribute."""
    names = getattr(array.metadata, "dimension_names", None)
    if names:
        return list(names)
    return list(array.attrs.get("_ARRAY_DIMENSIONS", []))


def copy_array(
    src: zarr.Array, dest: zarr.Group, name: str, chunks_of: Mapping[str, int]
) -> None:
    """Copy one array into the v2 group `dest`, with new chunks along the named dims."""
    dims = dims_of(src)
    if len(dims) != src.ndim:
        raise InputFormatError(src.store_path, f"array '{name}' has no dimension names")
    sizes = zip(dims, src.chunks, src.shape, strict=True)
    chunks = tuple(max(1, min(chunks_of.get(d, c), n)) for d, c, n in sizes)
    attrs = {k: v for k, v in src.attrs.asdict().items() if k != "_ARRAY_DIMENSIONS"}
    attrs["_ARRAY_DIMENSIONS"] = dims
    is_str = src.dtype.kind in "UOT"
    genotypes = dtype_of("call_genotype")
    dtype = genotypes if name == "call_genotype" else (str if is_str else src.dtype)
    out = dest.create_array(
        name,
        shape=src.shape,
        chunks=chunks,
        dtype=dtype,
        compressors=GENOTYPE_COMPRESSOR if name.startswith("call_genotype") else LABEL_COMPRESSOR,
        fill_value=None if is_str else src.fill_value,
        attributes=attrs,
    )
    if src.size == 0:
        return
    data = da.from_zarr(src).rechunk(chunks)
    if name == "call_genotype" and src.dtype != genotypes:
        data = data.astype(genotypes)
    da.store(data, out, lock=False)
