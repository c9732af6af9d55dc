"""A store's summary: sizes, ploidy, alleles, missingness, allele frequency spectrum."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from gperceiver.store import open_store, schema
from gperceiver.store.frequencies import minor_allele_frequency, missing_rate
from gperceiver.store.qc import Filters, select


def store_info(path: str | os.PathLike, filters: Filters | None = None) -> dict[str, Any]:
    """Summarise the store at `path`; genotypes are read chunk by chunk with Dask. With
    `filters`, also what each would drop (`filters` in the result)."""
    ds = open_store(path)
    dropped = None
    if filters is not None and filters.active:
        selection = select(ds, filters, where=path, allow_empty=True)
        dropped = {"kept_samples": int(selection.samples.sum()),
                   "kept_variants": int(selection.variants.sum()),
                   "dropped": {flag: {what: n} for flag, (n, what) in selection.dropped.items()},
                   "summary": selection.summary()}
    maf = minor_allele_frequency(ds["variant_allele_frequency"].values)
    polymorphic = maf > 0
    miss = float(missing_rate(ds["call_genotype"].data).compute())
    contigs = ds["contig_id"].values
    per_contig = np.bincount(ds["variant_contig"].values, minlength=len(contigs))
    return {
        "path": str(path),
        "samples": int(ds.sizes[schema.SAMPLES]),
        "variants": int(ds.sizes[schema.VARIANTS]),
        "contigs": {str(c): int(n) for c, n in zip(contigs, per_contig, strict=True)},
        "ploidy": int(ds.sizes[schema.PLOIDY]),
        "alleles": int(ds.sizes[schema.ALLELES]),
        "missing_rate": miss,
        "chunks": {
            "variants": int(ds["call_genotype"].data.chunksize[0]),
            "samples": int(ds["call_genotype"].data.chunksize[1]),
        },
        "allele_frequency": {
            "polymorphic_variants": int(polymorphic.sum()),
            "monomorphic_variants": int((~polymorphic).sum()),
            "maf_mean": float(np.mean(maf)) if maf.size else float("nan"),
            "maf_median": float(np.median(maf)) if maf.size else float("nan"),
            "maf_histogram": {
                f"{lo:.2f}-{hi:.2f}": int(n)
                for lo, hi, n in zip(
                    np.linspace(0, 0.5, 6)[:-1],
                    np.linspace(0, 0.5, 6)[1:],
                    np.histogram(maf, bins=np.linspace(0, 0.5, 6))[0],
                    strict=True,
                )
            },
        },
        "source": ds.attrs.get("source", "unknown"),
        "converter_version": ds.attrs.get("converter_version", "unknown"),
        **({"filters": dropped} if dropped is not None else {}),
    }


def format_info(info: dict[str, Any]) -> str:
    """The summary as aligned text for a terminal."""
    af = info["allele_frequency"]
    contigs = info["contigs"]
    shown = ", ".join(f"{c} ({n})" for c, n in list(contigs.items())[:8])
    if len(contigs) > 8:
        shown += f", ... {len(contigs) - 8} more"
    rows = [
        ("store", info["path"]),
        ("samples", f"{info['samples']:,}"),
        ("variants", f"{info['variants']:,}"),
        ("contigs", f"{len(contigs)}: {shown}"),
        ("ploidy", info["ploidy"]),
        ("alleles", info["alleles"]),
        ("missing rate", f"{info['missing_rate']:.4%}"),
        ("chunks", f"{info['chunks']['variants']} variants x {info['chunks']['samples']} samples"),
        (
            "polymorphic",
            f"{af['polymorphic_variants']:,} ({af['monomorphic_variants']:,} monomorphic)",
        ),
        ("MAF mean/median", f"{af['maf_mean']:.4f} / {af['maf_median']:.4f}"),
        ("MAF histogram", "  ".join(f"{k}: {v}" for k, v in af["maf_histogram"].items())),
        ("source", f"{info['source']} (converter {info['converter_version']})"),
    ]
    if "filters" in info:
        rows.append(("filters", info["filters"]["summary"]))
    return "\n".join(f"{k:>16}  {v}" for k, v in rows)
