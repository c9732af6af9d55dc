"""`gperceiver info STORE`: what a genotype store holds."""

from __future__ import annotations

import argparse
import json

from gperceiver.cli.convert import add_scheduler
from gperceiver.cli.filter import add_filters, filters_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="summarise a genotype store",
        description="Samples, variants, contigs, ploidy, alleles, missing rate and the "
        "allele frequency spectrum of a genotype store. With filter flags, also how many "
        "samples and variants each filter would drop (nothing is written; `gperceiver "
        "filter` applies them).",
        epilog="example:\n  gperceiver info panel.zarr --maf 0.05 --max-missing 0.1",
    )
    p.add_argument("store", metavar="STORE", help="genotype store (Zarr)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_scheduler(p)
    add_filters(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gperceiver.store.info import format_info, store_info

    info = store_info(args.store, filters_of(args))
    print(json.dumps(info) if args.json else format_info(info))
