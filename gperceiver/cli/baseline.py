"""`gperceiver baseline STORE PHENOS`: GBLUP predictions and metrics, for a side-by-side."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        help="GBLUP baseline (VanRaden G, REML) with fit's output files",
        description="Fit GBLUP block by block on the training rows of PHENOS (rows whose cv "
        "differs from --cv) and predict every sample of STORE. G is built out of core from "
        "the store; the variance ratio is estimated by REML. Writes DIR/predictions.tsv and "
        "DIR/metrics.json (Pearson r and RMSE per block on the validation rows), the same "
        "files as `gperceiver fit`.",
        epilog="examples:\n  gperceiver baseline panel.zarr phenos.tsv --cv 0 -o gblup_cv0\n"
        "  gperceiver baseline panel.zarr phenos.tsv --test-fold 0 -o gblup_test0",
    )
    p.add_argument("store", metavar="STORE", help="genotype store (Zarr)")
    p.add_argument(
        "phenotypes", metavar="PHENOS",
        help="phenotype TSV: name response block [cv], other columns ignored",
    )
    held = p.add_mutually_exclusive_group()
    held.add_argument(
        "--cv", type=int, default=None, metavar="K",
        help="validation fold: rows with cv == K are held out and reported as "
        "'validation' (default: none)",
    )
    held.add_argument(
        "--test-fold", type=int, default=None, metavar="K",
        help="the same fold held out, reported as 'test', as `fit --test-fold K` reports "
        "it (GBLUP chooses nothing on held-out rows: both are leak-free)",
    )
    p.add_argument(
        "-o", "--output", default=None, metavar="DIR",
        help="output folder [baseline, baseline_cvK with --cv, baseline_testK with "
        "--test-fold]",
    )
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gperceiver.atomic import check_writable

    out = args.output or (f"baseline_cv{args.cv}" if args.cv is not None else
                          f"baseline_test{args.test_fold}" if args.test_fold is not None
                          else "baseline")
    check_writable(out, args.force)  # before the slow imports and work
    from gperceiver.baseline import baseline

    path, metrics = baseline(args.store, args.phenotypes, out, cv=args.cv, force=args.force,
                             test_fold=args.test_fold)
    which = next((k for k in ("test", "validation") if metrics[k]), "train")
    shown = metrics[which]
    label = {"test": f"test (fold {args.test_fold})", "validation": "validation",
             "train": "training (no --cv)"}[which]
    print(f"GBLUP {label} rows, per block:")
    for block, m in shown["blocks"].items():
        fit = metrics["fit"][block]
        lam = f"{fit['lam']:.3g}" if fit else "(not fitted)"
        print(f"  block {block}: n={m['n']} r={m['pearson_r']:.3f} rmse={m['rmse']:.3f} "
              f"lambda={lam}")
    print(f"  mean r={shown['mean']['pearson_r']:.3f}")
    print(f"wrote {path}", file=sys.stderr)
