"""A PLINK 1 fileset (.bed/.bim/.fam) -> the genotype store, through bio2zarr.

bio2zarr reads the fileset into VCZ: allele 0 is the .bim's second allele (A2,
usually the reference), allele 1 its first (A1), and call_genotype counts A1
copies; missing calls are -1. The three files are checked first so that a bad
fileset ends in one line naming the file; the VCZ is then finished in place by
`gperceiver.store.write.finish_vcz` (unique variant IDs, frequencies, attributes, validation).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from gperceiver.atomic import atomic_output, is_url
from gperceiver.converters.vcz import bio2zarr_errors, local_output, via_local
from gperceiver.errors import InputFormatError, InputNotFoundError, UsageError
from gperceiver.progress import shown as show_progress
from gperceiver.store import schema
from gperceiver.store.write import ZARR_FORMAT, finish_vcz

BED_MAGIC = b"\x6c\x1b\x01"  # variant-major .bed
SUFFIXES = (".bed", ".bim", ".fam")


def fileset(prefix: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(.bed, .bim, .fam) of `prefix` (given with or without one of those suffixes)."""
    text = os.fspath(prefix)
    for suffix in SUFFIXES:
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    paths = tuple(Path(text + s) for s in SUFFIXES)
    for path in paths:
        if not path.is_file():
            raise InputNotFoundError(f"{path}: no such file (PLINK prefix {text})")
        if not os.access(path, os.R_OK):
            raise InputNotFoundError(f"{path}: permission denied")
    return paths  # type: ignore[return-value]


def _table(path: Path, reader) -> pd.DataFrame:
    try:
        table = reader(path)
    except pd.errors.EmptyDataError:
        raise InputFormatError(path, "empty file") from None
    except (ValueError, pd.errors.ParserError) as e:
        raise InputFormatError(path, f"not a PLINK table ({str(e).splitlines()[0]})") from None
    if table.isna().any().any():
        row = int(table.isna().any(axis=1).to_numpy().argmax())
        raise InputFormatError(path, "missing column(s): expected 6", line=row + 1)
    return table


def check_fileset(bed: Path, bim: Path, fam: Path) -> tuple[int, int]:
    """Refuse a fileset bio2zarr would misread; return (variants, samples)."""
    from bio2zarr import plink as b2z_plink

    samples = _table(fam, b2z_plink.read_fam)
    variants = _table(bim, b2z_plink.read_bim)
    ids = samples["individual_id"].astype(str)
    repeated = ids.duplicated()
    if repeated.any():
        row = int(repeated.to_numpy().argmax())
        raise InputFormatError(fam, f"duplicate sample ID '{ids[row]}'", line=row + 1, column=2)
    n_samples, n_variants = len(samples), len(variants)
    with open(bed, "rb") as f:
        magic = f.read(3)
    if magic != BED_MAGIC:
        raise InputFormatError(bed, "not a variant-major PLINK 1 .bed file (bad magic bytes)")
    expected = 3 + n_variants * ((n_samples + 3) // 4)
    size = bed.stat().st_size
    if size != expected:
        raise InputFormatError(
            bed,
            f"has {size} bytes; {n_variants} variants (.bim) x {n_samples} samples (.fam) "
            f"need {expected}",
        )
    return n_variants, n_samples


def convert_plink(
    prefix: str | os.PathLike,
    output: str | os.PathLike,
    *,
    samples_chunk: int = schema.DEFAULT_SAMPLES_CHUNK,
    variants_chunk: int = schema.DEFAULT_VARIANTS_CHUNK,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Convert the PLINK fileset `prefix`.bed/.bim/.fam into a genotype store."""
    if is_url(output):
        return via_local(os.fspath(output), force, lambda local: convert_plink(
            prefix, local, samples_chunk=samples_chunk, variants_chunk=variants_chunk,
            workers=workers, progress=progress))
    if samples_chunk < 1 or variants_chunk < 1 or workers < 1:
        raise UsageError("--samples-chunk, --variants-chunk and --workers must be >= 1")
    bed, bim, fam = fileset(prefix)
    output = local_output(output, force)
    check_fileset(bed, bim, fam)
    from bio2zarr import plink as b2z_plink

    where = bed.with_suffix("")
    with atomic_output(output, force) as tmp:
        with bio2zarr_errors(where):
            b2z_plink.convert(
                str(where),
                tmp,
                variants_chunk_size=variants_chunk,
                samples_chunk_size=samples_chunk,
                worker_processes=0 if workers == 1 else workers,
                show_progress=show_progress(progress),
                zarr_format=ZARR_FORMAT,
            )
        finish_vcz(tmp, source="plink", where=where, attrs={"plink_prefix": where.name})
    return output
