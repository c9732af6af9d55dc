"""`gperceiver predict RUN_DIR|CKPT STORE`: predictions for every sample of a store."""

from __future__ import annotations

import argparse
import sys

from gperceiver.cli.training import add_memory_flag, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predict every sample of a store with a finetuned model",
        description="Predict every block for every sample of STORE (e.g. new genotypes "
        "without phenotypes) with the model of a `gperceiver fit` run (its folder: best.ckpt "
        "is used) or a checkpoint. The store must hold the model's variants, in order. "
        "Writes a TSV: name block predicted [prob_0 prob_1 ...].",
        epilog="example:\n  gperceiver predict fit_cv0 new_lines.zarr -o predictions.tsv",
    )
    p.add_argument("model", metavar="RUN_DIR|CKPT", help="a fit run folder or checkpoint")
    p.add_argument("store", metavar="STORE", help="genotype store (Zarr)")
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="TSV to write (default: standard output)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per batch")
    add_memory_flag(p, "the batches (smaller when a batch would not fit)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gperceiver.atomic import check_writable
    from gperceiver.outputs import print_predictions
    from gperceiver.predict import predict

    if args.output is not None:
        check_writable(args.output, args.force)
    preds = predict(args.model, args.store, args.output, batch_size=args.batch_size,
                    force=args.force, progress=show_progress(args.quiet), memory=args.memory)
    if args.output is None:
        print_predictions(preds, sys.stdout)
    else:
        print(f"wrote {args.output}", file=sys.stderr)
