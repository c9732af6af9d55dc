"""`gperceiver plot RUN_DIR|EMB.zarr|STORE`: pictures (PNG) of a run, an embedding or a store."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="draw PNG pictures of a run folder, an embedding or a genotype store",
        description="Draw what fits PATH. A run folder (metrics.csv, predictions.tsv): "
        "learning curves and observed vs predicted per block, written into the folder. "
        "An embeddings Zarr (gperceiver embed): PCA of the sample embeddings, coloured by "
        "one phenotype block or by sample labels. A genotype store: allele frequency "
        "spectrum and missingness per variant and per sample. A store's or an "
        "embedding's pictures are written next to it, named after it. Prints the paths.",
        epilog="examples:\n  gperceiver plot runs/fit1\n"
        "  gperceiver plot emb.zarr --phenos phenos.tsv --block 1\n"
        "  gperceiver plot panel.zarr -o pictures/",
    )
    p.add_argument("path", metavar="PATH", help="run folder, embeddings Zarr or genotype store")
    p.add_argument("-o", "--output", metavar="DIR", default=None,
                   help="folder for the PNGs (created if missing) [next to PATH / in RUN_DIR]")
    colour = p.add_mutually_exclusive_group()
    colour.add_argument("--phenos", metavar="FILE", default=None,
                        help="embedding PCA: colour by the response of one block of this "
                        "phenotype TSV (name response block [cv])")
    colour.add_argument("--labels", metavar="FILE", default=None,
                        help="embedding PCA: colour by the label of this TSV (name label)")
    p.add_argument("--block", default=None, metavar="K",
                   help="phenotype block (number or name) to colour by, with --phenos [the "
                   "first]")
    fold = p.add_mutually_exclusive_group()
    fold.add_argument("--cv", type=int, default=None, metavar="K",
                      help="run folder: highlight the rows of fold K as validation "
                      "[the fold recorded in RUN_DIR/metrics.json]")
    fold.add_argument("--test-fold", type=int, default=None, metavar="K",
                      help="run folder: highlight the rows of fold K as the test fold "
                      "(fit/baseline --test-fold) [the fold recorded in RUN_DIR/metrics.json]")
    p.add_argument("--force", action="store_true", help="replace existing PNGs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gperceiver.errors import UsageError
    from gperceiver.plots import plot_path

    if args.block is not None and args.phenos is None:
        raise UsageError("--block needs --phenos")
    written = plot_path(
        args.path, args.output, phenos=args.phenos,
        block=args.block, labels=args.labels, cv=args.cv, test_fold=args.test_fold,
        force=args.force,
    )
    for path in written:
        print(path)
