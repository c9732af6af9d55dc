"""A VCF Zarr (VCZ) store made by bio2zarr -> our genotype store.

bio2zarr writes VCZ with its own chunks (10,000 samples per chunk by default),
"." for missing variant IDs and no allele frequencies; the store layer's
`finish_vcz` turns such a store, in place, into one that `gperceiver.open_store`
accepts. Here: bio2zarr's failures as one-line errors, conversion through a local
folder for object storage, and VCZ input itself. `convert_vcz` copies
an existing VCZ first, rechunking it when its chunks are bad for training (which
reads whole sample chunks). Every other VCZ field (INFO/FORMAT, filters, phasing)
is kept, so the result is still a VCZ that sgkit and bio2zarr read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import zarr

from gperceiver.atomic import atomic_output, check_writable, is_url
from gperceiver.errors import InputFormatError, InputNotFoundError, SystemFailure, UsageError
from gperceiver.progress import progress_bar
from gperceiver.store import schema
from gperceiver.store.write import (
    ZARR_FORMAT,
    copy_array,
    dims_of,
    dtype_of,
    finish_vcz,
)


@contextlib.contextmanager
def bio2zarr_errors(
    where: object, convert: tuple[type[BaseException], ...] = (ValueError, KeyError, IndexError)
) -> Iterator[None]:
    """Turn bio2zarr's failures into one-line errors: a dead worker is a system failure,
    an unreadable or unconvertible input an input-format error; a full disk stays an OSError."""
    try:
        yield
    except BrokenProcessPool:
        raise SystemFailure(
            f"{where}: a bio2zarr worker process died (out of memory? try fewer --workers)"
        ) from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENOMEM):
            raise
        raise InputFormatError(where, f"bio2zarr cannot read it ({one_line(e)})") from None
    except convert as e:
        raise InputFormatError(where, f"bio2zarr cannot convert it ({one_line(e)})") from None


def one_line(e: BaseException) -> str:
    """An exception as 'Type: first line of its message'."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def via_local(output: str, force: bool, convert: Callable[[Path], object],
              temp_dir: str | os.PathLike | None = None) -> str:
    """Convert into a local temporary store, then move it to the URL `output` atomically.

    bio2zarr writes local folders; object storage gets the finished store in one
    atomic remote move (see gperceiver.atomic), never a half-written one.
    """
    import fsspec

    check_writable(output, force)
    with tempfile.TemporaryDirectory(prefix=".gperceiver-", dir=temp_dir) as tmp:
        local = Path(tmp) / "store.zarr"
        convert(local)
        with atomic_output(output, force) as remote:
            fs, root = fsspec.core.url_to_fs(str(remote))
            fs.put(str(local), root, recursive=True)
    return output


def local_output(output: str | os.PathLike, force: bool) -> Path:
    """The checked local output path; bio2zarr writes local folders only."""
    if is_url(output):
        raise UsageError(
            f"{os.fspath(output)}: VCF, PLINK and VCZ input convert to a local store; "
            "copy it to object storage afterwards"
        )
    return Path(check_writable(output, force))


# ---------------------------------------------------------------- an existing VCZ


def open_vcz(path: str | os.PathLike) -> zarr.Group:
    """Open a VCZ (folder or .zip, zarr v2 or v3) read-only, with one-line errors."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such VCF Zarr store")
    try:
        if path.suffix == ".zip":
            store = zarr.storage.ZipStore(path, mode="r")
            return zarr.open_group(store, mode="r")
        return zarr.open_group(path, mode="r")
    except PermissionError:
        raise InputNotFoundError(f"{path}: permission denied") from None
    except (FileNotFoundError, ValueError, TypeError, KeyError, OSError) as e:
        raise InputFormatError(path, f"not a readable VCF Zarr store ({e})") from None


def training_chunks(
    calls: zarr.Array, samples_chunk: int | None, variants_chunk: int | None
) -> tuple[int, int] | None:
    """(variants, samples) chunks to rechunk to, or None when the store's are fine.

    Chunks are changed when asked for explicitly, or when a samples chunk is larger
    than `schema.MAX_TRAINING_SAMPLES_CHUNK`.
    """
    have_v, have_s = int(calls.chunks[0]), int(calls.chunks[1])
    want_v = variants_chunk if variants_chunk is not None else have_v
    want_s = samples_chunk if samples_chunk is not None else have_s
    if want_s > schema.MAX_TRAINING_SAMPLES_CHUNK and samples_chunk is None:
        want_s = schema.DEFAULT_SAMPLES_CHUNK
        if variants_chunk is None:
            want_v = max(have_v, schema.DEFAULT_VARIANTS_CHUNK)
    want_v = min(want_v, calls.shape[0]) or 1
    want_s = min(want_s, calls.shape[1]) or 1
    if (want_v, want_s) == (min(have_v, calls.shape[0]), min(have_s, calls.shape[1])):
        return None
    return want_v, want_s


def convert_vcz(
    vcz: str | os.PathLike,
    output: str | os.PathLike,
    *,
    samples_chunk: int | None = None,
    variants_chunk: int | None = None,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Turn an existing VCF Zarr store into a genotype store at `output`.

    The input is never changed. Chunks change only when asked for or when bad for
    training (see `training_chunks`); otherwise a zarr v2 folder is copied file by file.
    """
    if is_url(output):
        return via_local(os.fspath(output), force, lambda local: convert_vcz(
            vcz, local, samples_chunk=samples_chunk, variants_chunk=variants_chunk,
            workers=workers, progress=progress))
    for n in (samples_chunk, variants_chunk, workers):
        if n is not None and n < 1:
            raise UsageError("--samples-chunk, --variants-chunk and --workers must be >= 1")
    if is_url(vcz):
        raise UsageError(f"{os.fspath(vcz)}: give a local VCF Zarr store")
    src_path, output = Path(vcz), local_output(output, force)
    src = open_vcz(src_path)
    if "call_genotype" not in src:
        raise InputFormatError(src_path, "no call_genotype array (the VCF had no GT field?)")
    calls = src["call_genotype"]
    if calls.ndim != 3 or dims_of(calls)[:2] != [schema.VARIANTS, schema.SAMPLES]:
        raise InputFormatError(src_path, "call_genotype is not (variants, samples, ploidy)")
    if calls.dtype.kind != "i":
        raise InputFormatError(src_path, f"call_genotype is {calls.dtype}, expected integers")
    rechunk = training_chunks(calls, samples_chunk, variants_chunk)
    plain_copy = (
        rechunk is None
        and src_path.is_dir()
        and calls.metadata.zarr_format == ZARR_FORMAT
        and calls.dtype == dtype_of("call_genotype")
    )
    with atomic_output(output, force) as tmp:
        if plain_copy:
            shutil.copytree(src_path, tmp)
        else:
            _copy_group(src, tmp, rechunk, workers, progress)
        finish_vcz(tmp, source="vcz", where=src_path, attrs={"vcz_input": src_path.name})
    return output


def _copy_group(
    src: zarr.Group, dest_path: Path, rechunk: tuple[int, int] | None, workers: int, progress: bool
) -> None:
    """Copy every array of `src` into a new zarr v2 group, rechunked when asked."""
    genotypes = dtype_of("call_genotype")
    if "call_genotype" in src and src["call_genotype"].dtype != genotypes:
        calls = da.from_zarr(src["call_genotype"])
        low, high = dask.compute(calls.min(), calls.max())
        top = np.iinfo(genotypes).max
        if high > top or low < schema.FILL:
            raise InputFormatError(
                src.store_path,
                f"call_genotype values {low}..{high} do not fit {genotypes} ({schema.FILL}..{top})"
            )
    chunks_of = {} if rechunk is None else {schema.VARIANTS: rechunk[0], schema.SAMPLES: rechunk[1]}
    dest = zarr.open_group(dest_path, mode="w", zarr_format=ZARR_FORMAT)
    dest.attrs.update(src.attrs.asdict())
    names = sorted(name for name, _ in src.arrays())
    if progress and rechunk is not None:  # said unless --quiet, even without a terminal
        have = src["call_genotype"].chunks
        why = (f"its {have[1]:,} samples per chunk would make every training read "
               f"decompress them all (at most {schema.MAX_TRAINING_SAMPLES_CHUNK} suit the loader)"
               if have[1] > schema.MAX_TRAINING_SAMPLES_CHUNK and rechunk[1] != have[1]
               else "as asked")
        print(f"rechunking to {rechunk[0]} variants x {rechunk[1]} samples per chunk: {why}",
              file=sys.stderr)
    bar = progress_bar(len(names), "copy", "array", progress)
    with dask.config.set(scheduler="threads", num_workers=workers):
        for name in names:
            copy_array(src[name], dest, name, chunks_of)
            bar.update()
    bar.close()
