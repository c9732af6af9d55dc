"""`gperceiver upgrade STORE`: a store from an earlier version, brought up to date in place."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upgrade",
        help="bring a store written by an earlier gperceiver up to date, in place",
        description="Rewrite a genotype store's metadata in place so that plain xarray and "
        "sgkit read it as they read bio2zarr's stores: call_genotype int8 with -1 missing "
        "(no zarr fill value), integer variant_position (cM/Mb positions scaled, the scale "
        "kept as attributes), string labels as bio2zarr writes them, allele labels A/B/... "
        "where the source named none. Genotypes are not rewritten; a store already up to "
        "date is left as it is.",
        epilog="example:\n  gperceiver upgrade panel.zarr",
    )
    p.add_argument("store", metavar="STORE", help="genotype store (Zarr) to upgrade")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gperceiver.store.write import upgrade_store

    changed = upgrade_store(args.store)
    print(f"{args.store}: " + ("; ".join(changed) if changed else "already up to date"))
