"""`gperceiver fit STORE PHENOS -o RUN_DIR`: finetune on phenotypes of every block."""

from __future__ import annotations

import argparse
import sys

from gperceiver.choices import HEADS, OBJECTIVES
from gperceiver.cli.training import add_training_flags, devices, resolve_run_params, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="finetune on phenotypes (all blocks in one pass); writes predictions and metrics",
        description="Train a Perceiver to predict the phenotypes of PHENOS (TSV: name "
        "response block [cv]) in every block at once, from scratch or from a pretrained "
        "checkpoint. Rows with cv == K (--cv K) are the validation set and drive early "
        "stopping; with --test-fold K they are never seen and a seeded share of the other "
        "lines (val_fraction) drives early stopping. For regression a linear marker-effect "
        "path is fitted first and the Perceiver learns what it leaves (params: linear). "
        "RUN_DIR gets best.ckpt, last.ckpt, metrics.csv, params.json, "
        "predictions.tsv (the phenotyped lines, every block; --predict-all: every "
        "sample of the store), blocks.tsv (the phenotype file's label "
        "of each block) and metrics.json (per block: Pearson r and RMSE, or AUC and "
        "accuracy, or accuracy and Spearman). Replicate rows of a line in a block are "
        "averaged (line means); blocks may be numbers with gaps or names.",
        epilog="examples:\n  gperceiver fit panel.zarr phenos.tsv -o fit_cv0 --cv 0\n"
        "  gperceiver fit panel.zarr phenos.tsv -o fit_cv0 --cv 0 --pretrained run/best.ckpt "
        "--head pool",
    )
    p.add_argument("store", metavar="STORE", help="genotype store (Zarr)")
    p.add_argument("phenotypes", metavar="PHENOS",
                   help="phenotype TSV: name response block [cv]; other columns ignored")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR",
                   help="folder for checkpoints, metrics and predictions")
    p.add_argument("--pretrained", metavar="CKPT", default=None,
                   help="start from a pretrained checkpoint or run folder (its whole "
                   "architecture is taken; params that contradict it are refused)")
    p.add_argument("--cv", type=int, default=None, metavar="K",
                   help="validation fold, as in the original tool: rows with cv == K drive "
                   "early stopping (so their figures are not held out)")
    p.add_argument("--test-fold", type=int, default=None, metavar="K",
                   help="leak-free: rows with cv == K are never seen (not for training, "
                   "stopping or choosing); early stopping uses a seeded val_fraction of the "
                   "other lines; metrics.json's 'test' holds fold K's figures")
    p.add_argument("--head", choices=HEADS, default=None,
                   help="'latent': one query per block joins the latents; 'pool': the "
                   "mean-pooled latents go into an MLP with one output per block "
                   "[params: latent]")
    p.add_argument("--strategy", action="append", default=[], metavar="NAME",
                   help="Lightning's training strategy, e.g. 'ddp' (an earlier version's "
                   "--strategy latent|pool is still read as --head)")
    p.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="shared by all blocks [params: regression]")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="train only the head (use with --pretrained)")
    p.add_argument("--freeze-latents", action="store_true",
                   help="keep the initial latent array fixed")
    p.add_argument("--position-embed-trainable", action=argparse.BooleanOptionalAction,
                   default=None, help="train the position embeddings [params]")
    p.add_argument("--predict-all", action="store_true",
                   help="predict every sample of the store, not only the phenotyped lines "
                   "(or later: gperceiver predict RUN_DIR STORE)")
    p.add_argument("--ranking-weight", type=float, default=0.0, metavar="W",
                   help="add W x a pairwise ranking loss within each batch and block")
    add_training_flags(p)
    p.set_defaults(func=run)


def split_strategy(values: list[str], head: str | None) -> tuple[str | None, str]:
    """(head or None, Lightning strategy) from --head and repeated --strategy values (an
    earlier version took the head there; it is still read, with a note)."""
    import warnings

    from gperceiver.errors import Note, UsageError

    heads = [v for v in values if v in HEADS]
    others = [v for v in values if v not in HEADS]
    if len(heads) > 1 or len(others) > 1:
        raise UsageError(f"--strategy given twice for the same thing: {', '.join(values)}")
    if heads:
        if head is not None and head != heads[0]:
            raise UsageError(f"--head {head} and --strategy {heads[0]} disagree")
        warnings.warn(f"--strategy {heads[0]} is read as --head {heads[0]}", Note,
                      stacklevel=2)
        head = heads[0]
    return head, (others[0] if others else "auto")


def run(args: argparse.Namespace) -> None:
    head, strategy = split_strategy(args.strategy, args.head)
    params = resolve_run_params(args, head=head, objective=args.objective,
                                position_embed_trainable=args.position_embed_trainable)

    from gperceiver.fit import fit  # torch and Lightning: after the checks

    result = fit(
        args.store, args.phenotypes, args.output, params, pretrained=args.pretrained,
        cv=args.cv, test_fold=args.test_fold, freeze_encoder=args.freeze_encoder,
        freeze_latents=args.freeze_latents,
        ranking_weight=args.ranking_weight, resume=args.resume, force=args.force,
        progress=show_progress(args.quiet), accelerator=args.accelerator,
        devices=devices(args), num_nodes=args.num_nodes, strategy=strategy,
        predict_all=args.predict_all, memory=args.memory,
    )
    report_fit(result, params.objective, cv=args.cv, test_fold=args.test_fold)


def report_fit(result, objective: str, *, cv: int | None = None,
               test_fold: int | None = None) -> None:
    """The figures of the rows a fit did not train on (else its training rows), per block."""
    if not result.metrics:
        return  # a non-zero rank of a distributed run
    m = result.metrics
    which = next(w for w in ("test", "validation", "train") if m.get(w))
    shown = m[which]
    which = {"test": f"test fold {test_fold} (never seen)",
             "validation": "validation" + (f" fold {cv}" if cv is not None else ""),
             "train": "training"}[which]
    print(f"{objective} fit, {which} rows, per block:")
    for block, b in shown["blocks"].items():
        figures = " ".join(f"{k}={v:.3f}" for k, v in b.items()
                           if k != "n" and isinstance(v, float))
        print(f"  block {block}: n={b['n']} {figures}")
    print("  mean " + " ".join(f"{k}={v:.3f}" for k, v in shown["mean"].items()))
    print(f"wrote {result.run_dir}/predictions.tsv, metrics.json, best.ckpt", file=sys.stderr)
