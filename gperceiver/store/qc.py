"""Quality control and subsets of a genotype store, as plink's --maf/--geno/--mind/--keep.

`select` decides, from counts streamed chunk by chunk with Dask, which samples
and variants pass the filters; `Selection.view` applies it to a lazy Dataset
(nothing is read or written), and `filter_store` writes the selection as a new
store, atomically, with its allele frequencies recomputed.

Filters apply in a fixed order, each to what the previous ones kept: samples
named by --keep/--remove; variants outside --contigs/--region; samples below
--min-call-rate (over the kept variants); variants above --max-missing, then
below --maf (both over the kept samples).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

from gperceiver.errors import InputFormatError, Note, UsageError
from gperceiver.inputs import open_binary
from gperceiver.progress import DaskProgress, progress_bar
from gperceiver.store import schema
from gperceiver.store.frequencies import TOLERANCE, allele_counts, minor_allele_frequency


@dataclass(frozen=True)
class Filters:
    """What to drop; None leaves that filter off."""

    maf: float | None = None  # drop variants whose minor allele frequency is below
    max_missing: float | None = None  # drop variants missing in more than this share
    min_call_rate: float | None = None  # drop samples called at less than this share
    keep: str | os.PathLike | None = None  # file of sample names to keep
    remove: str | os.PathLike | None = None  # file of sample names to drop
    contigs: tuple[str, ...] | None = None  # keep variants on these contigs
    region: str | None = None  # keep variants in CHR[:START-END][,...] (store positions)

    def __post_init__(self) -> None:
        for name, top in (("maf", 0.5), ("max_missing", 1), ("min_call_rate", 1)):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= top:
                raise UsageError(f"--{name.replace('_', '-')} must be within 0..{top}, "
                                 f"got {value}")

    @property
    def active(self) -> bool:
        return any(v is not None for v in vars(self).values())


@dataclass
class Selection:
    """Which store samples and variants pass, and how many each filter dropped."""

    samples: np.ndarray  # bool, one per store sample
    variants: np.ndarray  # bool, one per store variant
    dropped: dict[str, tuple[int, str]] = field(default_factory=dict)  # flag -> (n, what)

    def view(self, ds: xr.Dataset) -> xr.Dataset:
        """`ds` lazily cut to the selection (its allele frequencies are the store's)."""
        return ds.isel(samples=np.flatnonzero(self.samples),
                       variants=np.flatnonzero(self.variants))

    def summary(self) -> str:
        """One line: what is kept, and what each filter dropped."""
        kept = (f"kept {int(self.variants.sum()):,} of {len(self.variants):,} variants and "
                f"{int(self.samples.sum()):,} of {len(self.samples):,} samples")
        drops = [f"{n:,} {what if n != 1 else what[:-1]} by {flag}"
                 for flag, (n, what) in self.dropped.items()]
        return kept + (f" (dropped {', '.join(drops)})" if drops else "")


def select(ds: xr.Dataset, filters: Filters, *, where: object = "store",
           progress: bool = False, allow_empty: bool = False) -> Selection:
    """Apply `filters` to the store `ds`; genotypes are read chunk by chunk (Dask), with
    a progress bar when `progress`. A selection without samples or variants is refused
    unless `allow_empty` (counting, as `info` does)."""
    samples = np.ones(ds.sizes[schema.SAMPLES], dtype=bool)
    variants = np.ones(ds.sizes[schema.VARIANTS], dtype=bool)
    dropped: dict[str, tuple[int, str]] = {}

    def drop(flag: str, mask: np.ndarray, keep: np.ndarray, what: str) -> None:
        n = int((mask & ~keep).sum())
        mask &= keep
        dropped[flag] = (n, what)

    names = np.asarray(ds["sample_id"].values, dtype=object)
    if filters.keep is not None:
        drop("--keep", samples, np.isin(names, _names(filters.keep, names)), "samples")
    if filters.remove is not None:
        drop("--remove", samples, ~np.isin(names, _names(filters.remove, names)), "samples")
    contigs = np.asarray(ds["contig_id"].values, dtype=object)
    contig = np.asarray(ds["variant_contig"].values)
    if filters.contigs is not None:
        drop("--contigs", variants, np.isin(contig, _contig_numbers(filters.contigs, contigs)),
             "variants")
    if filters.region is not None:
        position = np.asarray(ds["variant_position"].values)
        drop("--region", variants, _in_regions(filters.region, contigs, contig, position),
             "variants")
    calls = ds["call_genotype"].data
    if filters.min_call_rate is not None:
        part = calls[np.flatnonzero(variants)] if not variants.all() else calls
        with DaskProgress("call rates", progress):
            called, present = da.compute((part >= 0).sum(axis=(0, 2)),
                                         (part >= -1).sum(axis=(0, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(present > 0, called / np.maximum(present, 1), 0.0)
        drop("--min-call-rate", samples, rate >= filters.min_call_rate - TOLERANCE, "samples")
    if not samples.any() and not allow_empty:
        raise UsageError(f"{where}: the filters drop every sample")
    if filters.max_missing is not None or filters.maf is not None:
        with DaskProgress("variant statistics", progress):
            missing, frequency = _variant_statistics(calls, samples, ds.sizes[schema.ALLELES])
        if filters.max_missing is not None:
            drop("--max-missing", variants, missing <= filters.max_missing + TOLERANCE,
                 "variants")
        if filters.maf is not None:
            minor = minor_allele_frequency(frequency)
            drop("--maf", variants, minor >= filters.maf - TOLERANCE, "variants")
    if not variants.any() and not allow_empty:
        raise UsageError(f"{where}: the filters drop every variant")
    return Selection(samples, variants, dropped)


def _variant_statistics(calls: da.Array, samples: np.ndarray,
                        n_alleles: int) -> tuple[np.ndarray, np.ndarray]:
    """Per variant, over the kept samples: the share of missing copies, and allele
    frequencies over called copies (NaN where none is called)."""
    part = calls[:, np.flatnonzero(samples)] if not samples.all() else calls
    missing = (part == schema.MISSING).sum(axis=(1, 2), dtype=np.int64)
    present = (part >= schema.MISSING).sum(axis=(1, 2), dtype=np.int64)
    counts, missing, present = da.compute(allele_counts(part, n_alleles), missing, present)
    called = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(present > 0, missing / np.maximum(present, 1), 1.0)
        frequency = np.where(called > 0, counts / np.maximum(called, 1), np.nan)
    return share, frequency


def _names(path: str | os.PathLike, known: np.ndarray) -> np.ndarray:
    """Sample names from a --keep/--remove file: one per line, or plink's `FID IID`
    (the last column is taken unless the whole line is a sample's name); blank and
    `#` lines are skipped, and so is a byte-order mark. Names not in the store are
    reported in a note; an empty file names nobody."""
    path = Path(path)
    with open_binary(path, "a file of sample names") as f:
        raw = f.read()
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise InputFormatError(path, "not a text file of sample names") from None
    lines = [line.strip() for line in text.removeprefix("\ufeff").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    # a whole line is a name when it is one (names may hold spaces), else plink's FID IID
    known_names = set(known.tolist())
    names = [line if line in known_names else line.split()[-1] for line in lines]
    unknown = sorted(set(names) - known_names)
    if unknown:
        shown = ", ".join(f"'{n}'" for n in unknown[:3])
        warnings.warn(f"{path}: {len(unknown)} name(s) are not samples of the store: {shown}"
                      + (" ..." if len(unknown) > 3 else ""), Note, stacklevel=3)
    return np.asarray(names, dtype=object)


def _listed_contigs(contigs: np.ndarray) -> str:
    return f"it has {', '.join(map(str, contigs[:8]))}{' ...' if len(contigs) > 8 else ''}"


def _contig_numbers(names: tuple[str, ...], contigs: np.ndarray) -> np.ndarray:
    unknown = [n for n in names if n not in set(contigs)]
    if unknown:
        raise UsageError(f"--contigs: '{unknown[0]}' is not a contig of the store "
                         f"({_listed_contigs(contigs)})")
    return np.flatnonzero(np.isin(contigs, list(names)))


REGION = re.compile(r"^(?:\{(?P<braced>[^}]+)\}|(?P<contig>[^:]+))"
                    r"(?::(?P<start>\d*)(?:-(?P<end>\d*))?)?$")


def _in_regions(regions: str, contigs: np.ndarray, contig: np.ndarray,
                position: np.ndarray) -> np.ndarray:
    """Variants inside any of `CHR`, `CHR:START-END`, `CHR:START-` (1-based, inclusive,
    as bcftools' -r; comma-separated), in the store's `variant_position` units."""
    keep = np.zeros(len(contig), dtype=bool)
    names = set(contigs.tolist())
    for region in regions.split(","):
        region = region.strip()
        match = REGION.match(region) if region not in names else REGION.match(f"{{{region}}}")
        name = match and (match["braced"] or match["contig"])
        if match is not None and name not in names:
            hint = ("; regions are comma-separated, so no thousands separators"
                    if "," in regions else "")
            raise UsageError(f"--region: '{region}': '{name}' is not a contig of the store "
                             f"({_listed_contigs(contigs)}{hint})")
        if match is None:
            raise UsageError(f"--region: '{region}' is not CHR, CHR:START-END or CHR:START- "
                             "with CHR a contig of the store ({CHR} when it holds a ':'; "
                             "regions are comma-separated, so no thousands separators)")
        start = int(match["start"]) if match["start"] else 1
        end = int(match["end"]) if match["end"] else np.iinfo(np.int64).max
        if match["start"] and match["end"] is None:
            end = start  # CHR:POS is one position, as bcftools reads it
        if end < start:
            raise UsageError(f"--region: '{region}' ends before it starts")
        number = int(np.flatnonzero(contigs == name)[0])
        keep |= (contig == number) & (position >= start) & (position <= end)
    return keep


def filter_store(store: str | os.PathLike, output: str | os.PathLike, filters: Filters, *,
                 force: bool = False, progress: bool = True) -> tuple[Path, Selection]:
    """Write the samples and variants of `store` that pass `filters` as a new store at
    `output` (same chunks, frequencies recomputed); it appears only when complete."""
    from gperceiver.atomic import atomic_output
    from gperceiver.store import open_store
    from gperceiver.store.write import create_store, finish_store

    if not filters.active:
        raise UsageError("no filter given (--maf, --max-missing, --min-call-rate, --keep, "
                         "--remove, --contigs or --region)")
    ds = open_store(store)
    selection = select(ds, filters, where=store, progress=progress)
    view = selection.view(ds)
    calls = ds["call_genotype"].data
    v_chunk, s_chunk = (int(c) for c in calls.chunksize[:2])
    position = ds["variant_position"]
    output = Path(output)
    with atomic_output(output, force) as tmp:
        out = create_store(
            tmp, sample_id=view["sample_id"].values, variant_id=view["variant_id"].values,
            contig_id=ds["contig_id"].values, variant_contig=view["variant_contig"].values,
            variant_position=view["variant_position"].values,
            variant_allele=view["variant_allele"].values, position_attrs=position.attrs,
            ploidy=ds.sizes[schema.PLOIDY], n_alleles=ds.sizes[schema.ALLELES],
            samples_chunk=s_chunk, variants_chunk=v_chunk,
            attrs={**{k: v for k, v in ds.attrs.items() if k not in ("converter_version",)},
                   "filtered_from": os.fspath(store),
                   "filters": {k: (os.fspath(v) if isinstance(v, os.PathLike) else v)
                               for k, v in vars(filters).items() if v is not None}},
        )
        _copy_calls(view["call_genotype"].data, out, progress)
        finish_store(tmp, store)
    return output, selection


def _copy_calls(calls: da.Array, out, progress: bool) -> None:
    """Stream the selected calls into `out`, one output chunk at a time (memory: a
    chunk, whatever the panel's size)."""
    v_step, s_step = out.chunks[:2]
    n_variants, n_samples = calls.shape[:2]
    bar = progress_bar(n_variants, "filter", "variant", progress)
    for start in range(0, n_variants, v_step):
        stop = min(start + v_step, n_variants)
        for lo in range(0, n_samples, s_step):
            hi = min(lo + s_step, n_samples)
            out[start:stop, lo:hi] = calls[start:stop, lo:hi].compute()
        bar.update(stop - start)
    bar.close()
