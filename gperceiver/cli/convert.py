"""`gperceiver convert tsv|...`: input files -> a genotype store."""

from __future__ import annotations

import argparse
import sys

from gperceiver import schema


def add_store_output(p: argparse.ArgumentParser) -> None:
    """Flags every converter shares: output, chunking, --force, --quiet."""
    p.add_argument("-o", "--output", required=True, metavar="STORE", help="store to write")
    p.add_argument(
        "--samples-chunk", type=int, default=schema.DEFAULT_SAMPLES_CHUNK, metavar="N",
        help="samples per chunk (training reads whole sample chunks)",
    )
    p.add_argument(
        "--variants-chunk", type=int, default=schema.DEFAULT_VARIANTS_CHUNK, metavar="N",
        help="variants per chunk",
    )
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    convert = sub.add_parser(
        "convert",
        help="convert TSV, VCF/BCF, PLINK or VCF Zarr input into a genotype store",
        description="Convert genotypes into a chunked Zarr genotype store (VCF Zarr names). "
        "The store appears only when complete and validated.",
    )
    formats = convert.add_subparsers(dest="format", metavar="FORMAT", required=True)

    tsv = formats.add_parser(
        "tsv",
        help="the original tool's integer-coded markers.tsv + chroms.tsv",
        description="Convert the original tool's integer-coded TSVs. MARKERS: header 'name' "
        "then one column per marker, one row per genotype, cells are codes into the allele "
        "decoder. CHROMS: columns 'chr marker pos' (pos int or float). '.gz' is accepted. "
        "Variants are stored in contig order of first appearance, then by position.",
        epilog="example:\n  gperceiver convert tsv --markers markers.tsv.gz "
        "--chroms chroms.tsv -o panel.zarr",
    )
    tsv.add_argument("--markers", required=True, metavar="FILE", help="markers TSV (or .gz)")
    tsv.add_argument("--chroms", required=True, metavar="FILE", help="chroms TSV (or .gz)")
    tsv.add_argument("--ploidy", type=int, default=None, help="copies per genotype [2]")
    group = tsv.add_mutually_exclusive_group()
    group.add_argument(
        "--nalleles", type=int, default=None,
        help="allele numbers per copy including 0 = missing, as in gen_allele_decoder [3]",
    )
    group.add_argument(
        "--decoder", metavar="FILE.json", default=None,
        help="JSON list: code k -> list of allele numbers (0 = missing)",
    )
    add_store_output(tsv)
    tsv.set_defaults(func=run_tsv)


def run_tsv(args: argparse.Namespace) -> None:
    from converters.tsv import convert_tsv

    out = convert_tsv(
        args.markers, args.chroms, args.output,
        ploidy=args.ploidy, nalleles=args.nalleles, decoder_file=args.decoder,
        samples_chunk=args.samples_chunk, variants_chunk=args.variants_chunk,
        force=args.force, progress=not args.quiet,
    )
    if not args.quiet:
        print(f"wrote {out}", file=sys.stderr)
