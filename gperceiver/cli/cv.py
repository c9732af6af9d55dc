"""`gperceiver cv STORE PHENOS -o DIR`: leak-free cross-validation of every method."""

from __future__ import annotations

import argparse
import sys


def _ints(text: str) -> list[int]:
    """Comma-separated integers; argparse turns the refusal into its one-line usage error."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got '{text}'") from None


def register(sub: argparse._SubParsersAction) -> None:
    from gperceiver.crossval import METHODS

    p = sub.add_parser(
        "cv",
        help="leak-free cross-validation: every fold, GBLUP and gperceiver on the same rows",
        description="For each fold K of PHENOS' cv column, train every method without fold "
        "K's phenotypes and measure it on them. gperceiver's early stopping and every choice "
        "it makes use a seeded val_fraction of the other folds' lines, never fold K; GBLUP "
        "fits on the other folds. Writes DIR/cv_results.tsv (per method, fold and block: n, "
        "Pearson r, RMSE, CPU seconds), DIR/cv_summary.json, DIR/cv_r.png (one dot per fold) "
        "and each run under DIR/runs/; prints the mean r per block and method. Method "
        "'linear' is gperceiver's linear marker-effect path alone, from the same runs.",
        epilog="examples:\n  gperceiver cv panel.zarr phenos.tsv -o cv\n"
        "  gperceiver cv panel.zarr phenos.tsv -o cv --folds 0,1 --jobs 2 --epochs 5",
    )
    p.add_argument("store", metavar="STORE", help="genotype store (Zarr)")
    p.add_argument("phenotypes", metavar="PHENOS",
                   help="phenotype TSV: name response block cv; other columns ignored")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--methods", default=",".join(METHODS), metavar="LIST",
                   help=f"comma-separated, from {', '.join(METHODS)} [%(default)s]")
    p.add_argument("--folds", type=_ints, default=None, metavar="K,K,...",
                   help="test folds to run [every fold of the cv column]")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs at once, each its own process sharing the cores")
    p.add_argument("--pretrained", metavar="CKPT", default=None,
                   help="start gperceiver's fits from this pretrained checkpoint")
    p.add_argument("--params", metavar="FILE", default=None,
                   help="gperceiver hyper-parameters (JSON, as for fit)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs [params]")
    p.add_argument("--seed", type=int, default=None, help="random seed [params]")
    p.add_argument("--val-fraction", type=float, default=None, metavar="F",
                   help="share of the training lines that drives early stopping [params: 0.1]")
    p.add_argument("--force", action="store_true", help="replace an existing DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gperceiver.crossval import cross_validate
    from gperceiver.train.params import load_params

    params = load_params(args.params, epochs=args.epochs, seed=args.seed,
                         val_fraction=args.val_fraction)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    table, summary = cross_validate(
        args.store, args.phenotypes, args.output, methods=methods, folds=args.folds,
        params=params, pretrained=args.pretrained, jobs=args.jobs, force=args.force)
    per = summary["methods"]
    blocks = sorted(table["block"].unique())
    print(f"mean Pearson r over test folds {summary['folds']} (never seen by their model):")
    width = max(10, *(len(f"block {b}") + 2 for b in blocks))
    print(f"  {'method':<12}" + "".join(f"{'block ' + str(b):>{width}}" for b in blocks)
          + f"{'mean':>10}{'CPU s/fold':>12}")
    for method, s in per.items():
        cpu = s["cpu_seconds_per_fold"]
        cpu = "" if cpu is None else f"{cpu:.0f}" if cpu >= 10 else f"{cpu:.1f}"
        print(f"  {method:<12}" + "".join(f"{r:>{width}.3f}" for r in s["block_r"])
              + f"{s['mean_r']:>10.3f}{cpu:>12}")
    print(f"wrote {args.output}/cv_results.tsv, cv_summary.json, cv_r.png", file=sys.stderr)
