"""`gperceiver filter STORE -o OUT`: quality control and subsets, as plink's --maf/--geno."""

from __future__ import annotations

import argparse
import sys

from gperceiver.cli.convert import add_scheduler


def add_filters(p: argparse.ArgumentParser) -> None:
    """The filter flags `filter` applies and `info` counts."""
    g = p.add_argument_group(
        "filters", "applied in this order, each to what the previous kept: --keep/--remove, "
        "--contigs/--region, --min-call-rate, --max-missing, --maf")
    g.add_argument("--maf", type=float, metavar="X",
                   help="drop variants whose minor allele frequency (1 - the major allele's) "
                   "is below X (plink --maf)")
    g.add_argument("--max-missing", type=float, metavar="X",
                   help="drop variants missing in more than a share X of calls (plink --geno)")
    g.add_argument("--min-call-rate", type=float, metavar="X",
                   help="drop samples called at less than a share X of the variants "
                   "(plink --mind 1-X)")
    g.add_argument("--keep", metavar="FILE",
                   help="keep only the samples named in FILE (one per line, or plink's "
                   "'FID IID')")
    g.add_argument("--remove", metavar="FILE", help="drop the samples named in FILE")
    g.add_argument("--contigs", metavar="A,B", type=lambda s: tuple(s.split(",")),
                   help="keep variants on these contigs")
    g.add_argument("--region", metavar="CHR:START-END",
                   help="keep variants in these regions: CHR, CHR:START-END or CHR:START-, "
                   "comma-separated, 1-based and inclusive, in the store's variant_position "
                   "({CHR} for a name with ':'), as bcftools -r; with --contigs, both apply")


def filters_of(args: argparse.Namespace):
    from gperceiver.store.qc import Filters

    return Filters(maf=args.maf, max_missing=args.max_missing,
                   min_call_rate=args.min_call_rate, keep=args.keep, remove=args.remove,
                   contigs=args.contigs, region=args.region)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "filter",
        help="drop rare or badly called variants, or samples, into a new store",
        description="Write the samples and variants of STORE that pass the filters as a "
        "new store, streamed chunk by chunk (any panel size), with the same chunks and "
        "allele frequencies recomputed; it appears only when complete. `gperceiver info "
        "STORE` with the same flags counts what they would drop, writing nothing.",
        epilog="examples:\n  gperceiver filter panel.zarr -o qc.zarr --maf 0.01 "
        "--max-missing 0.1 --min-call-rate 0.9\n"
        "  gperceiver filter panel.zarr -o chr1.zarr --region chr1:1-5000000 --keep lines.txt",
    )
    p.add_argument("store", metavar="STORE", help="genotype store (Zarr)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="store to write")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    add_filters(p)
    add_scheduler(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gperceiver.store.qc import filter_store

    out, selection = filter_store(args.store, args.output, filters_of(args), force=args.force,
                                  progress=not args.quiet)
    print(f"wrote {out}: {selection.summary()}", file=sys.stderr)
