"""`gperceiver info STORE`: what a genotype store holds."""

from __future__ import annotations

import argparse
import json

from gperceiver.cli.convert import add_scheduler


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="summarise a genotype store",
        description="Samples, variants, contigs, ploidy, alleles, missing rate and the "
        "allele frequency spectrum of a genotype store.",
    )
    p.add_argument("store", metavar="STORE", help="genotype store (Zarr)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_scheduler(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gperceiver.info import format_info, store_info

    info = store_info(args.store)
    print(json.dumps(info) if args.json else format_info(info))
