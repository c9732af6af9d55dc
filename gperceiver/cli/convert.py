"""`gperceiver convert tsv|...`: input files -> a genotype store."""

from __future__ import annotations

import argparse
import os
import sys

from gperceiver.inputs import CODINGS
from gperceiver.store import schema


def add_scheduler(p: argparse.ArgumentParser) -> None:
    """--scheduler: run the Dask parts (frequencies, statistics) on a cluster."""
    p.add_argument(
        "--scheduler", metavar="ADDRESS", default=None,
        help="Dask distributed scheduler address (e.g. tcp://host:8786) for the Dask parts; "
        "default: Dask's configured scheduler (local threads)",
    )


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
    add_scheduler(p)
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
        description="Convert marker TSVs. MARKERS: header 'name' then one column per "
        "marker, one row per genotype; cells are codes into the allele decoder (the original "
        "tool's coding), or with --coding dosage 0..ploidy copies of the alternate allele, "
        "or with --coding rrblup -1/0/1 (NA, NaN, '.' or empty: missing). CHROMS: columns "
        "'chr marker pos' (pos int or float). '.gz' is accepted. Variants are stored in "
        "contig order of first appearance, then by position. Without --coding, a table "
        "that looks like dosages (many 0s, which the decoder reads as missing, and no code "
        "above the ploidy) is refused.",
        epilog="examples:\n  gperceiver convert tsv --markers markers.tsv.gz "
        "--chroms chroms.tsv -o panel.zarr\n"
        "  gperceiver convert tsv --markers dosages.tsv --chroms chroms.tsv --coding dosage "
        "-o panel.zarr\n"
        "  gperceiver convert tsv --markers inbreds01.tsv --chroms chroms.tsv --coding dosage "
        "--ploidy 1 -o panel.zarr   # BGLR's 0/1 of inbred lines",
    )
    tsv.add_argument("--markers", required=True, metavar="FILE", help="markers TSV (or .gz)")
    tsv.add_argument("--chroms", required=True, metavar="FILE", help="chroms TSV (or .gz)")
    tsv.add_argument("--ploidy", type=int, default=None, help="copies per genotype [2]")
    tsv.add_argument("--coding", choices=CODINGS, default=None,
                     help="what the cells are: decoder codes (the original's), dosage "
                     "(0..ploidy alternate copies) or rrblup (-1/0/1) [decoder, refusing "
                     "dosage-like tables]")
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

    vcf = formats.add_parser(
        "vcf",
        help="VCF/BCF files (bgzipped, plain gzip or uncompressed), through bio2zarr",
        description="Convert VCF/BCF files (same samples, e.g. one per chromosome) with "
        "bio2zarr's vcf2zarr. Every allele of a multi-allelic site is kept; mixed ploidy is "
        "padded with -2; missing calls are -1. A file without a .tbi/.csi index, or not "
        "bgzipped, is indexed/recompressed in a temporary folder; your files are not touched.",
        epilog="example:\n  gperceiver convert vcf chr1.vcf.gz chr2.vcf.gz -o panel.zarr",
    )
    vcf.add_argument("inputs", nargs="+", metavar="VCF", help="VCF/BCF file(s)")
    add_store_output(vcf)
    add_workers(vcf)
    vcf.add_argument(
        "--temp-dir", metavar="DIR", default=None,
        help="folder for bio2zarr's intermediate files (default: beside the output)",
    )
    vcf.set_defaults(func=run_vcf)

    plink = formats.add_parser(
        "plink",
        help="a PLINK 1 .bed/.bim/.fam fileset, through bio2zarr",
        description="Convert a PLINK 1 fileset with bio2zarr. Allele 0 is the .bim's A2, "
        "allele 1 its A1; missing calls are -1.",
        epilog="example:\n  gperceiver convert plink data/panel -o panel.zarr",
    )
    plink.add_argument("prefix", metavar="PREFIX", help="fileset prefix (PREFIX.bed etc.)")
    add_store_output(plink)
    add_workers(plink)
    plink.set_defaults(func=run_plink)

    vcz = formats.add_parser(
        "vcz",
        help="a VCF Zarr store made by bio2zarr (vcf2zarr, plink2zarr, tskit2zarr)",
        description="Copy a VCF Zarr store into a genotype store: adds allele frequencies, "
        "unique variant IDs and store attributes; rechunks when asked with --samples-chunk/"
        "--variants-chunk or when its samples chunk exceeds 512 (bad for training, which "
        "reads whole sample chunks). The input is not changed.",
        epilog="example:\n  gperceiver convert vcz cohort.vcz -o panel.zarr",
    )
    vcz.add_argument("vcz", metavar="VCZ", help="VCF Zarr store (folder or .zip)")
    add_store_output(vcz)
    add_workers(vcz)
    vcz.set_defaults(func=run_vcz, samples_chunk=None, variants_chunk=None)


def run_tsv(args: argparse.Namespace) -> None:
    from gperceiver.converters.tsv import convert_tsv

    out = convert_tsv(
        args.markers, args.chroms, args.output,
        ploidy=args.ploidy, nalleles=args.nalleles, decoder_file=args.decoder,
        coding=args.coding, samples_chunk=args.samples_chunk, variants_chunk=args.variants_chunk,
        force=args.force, progress=not args.quiet,
    )
    if not args.quiet:
        print(f"wrote {out}", file=sys.stderr)


def default_workers() -> int:
    """The CPUs this process may use, at most 8 (each bio2zarr worker holds its own buffers)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def add_workers(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers", type=int, default=default_workers(), metavar="N",
        help="parallel worker processes (1: all in this process)",
    )


def _done(args: argparse.Namespace, out) -> None:
    if not args.quiet:
        print(f"wrote {out}", file=sys.stderr)


def run_vcf(args: argparse.Namespace) -> None:
    from gperceiver.converters.vcf import convert_vcf

    _done(args, convert_vcf(
        args.inputs, args.output,
        samples_chunk=args.samples_chunk, variants_chunk=args.variants_chunk,
        workers=args.workers, temp_dir=args.temp_dir, force=args.force, progress=not args.quiet,
    ))


def run_plink(args: argparse.Namespace) -> None:
    from gperceiver.converters.plink import convert_plink

    _done(args, convert_plink(
        args.prefix, args.output,
        samples_chunk=args.samples_chunk, variants_chunk=args.variants_chunk,
        workers=args.workers, force=args.force, progress=not args.quiet,
    ))


def run_vcz(args: argparse.Namespace) -> None:
    from gperceiver.converters.vcz import convert_vcz

    _done(args, convert_vcz(
        args.vcz, args.output,
        samples_chunk=args.samples_chunk, variants_chunk=args.variants_chunk,
        workers=args.workers, force=args.force, progress=not args.quiet,
    ))
