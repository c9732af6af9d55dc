"""`gperceiver pretrain STORE -o RUN_DIR`: masked or twinned contrastive pretraining."""

from __future__ import annotations

import argparse

from gperceiver.choices import PRETRAIN_TASKS
from gperceiver.cli.training import add_training_flags, devices, resolve_run_params, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a Perceiver on a genotype store (masked or contrastive)",
        description="Pretrain a GPerceiver on the genotypes of STORE. Held-out samples "
        "(--val-fraction) drive early stopping; RUN_DIR gets best.ckpt, last.ckpt, "
        "metrics.csv and the resolved params.json. A run that was stopped continues "
        "with --resume exactly as if it had not been.",
        epilog="example:\n  gperceiver pretrain panel.zarr -o run --params params.json "
        "--epochs 50\n  gperceiver pretrain panel.zarr -o run --resume --epochs 80\n"
        "  gperceiver pretrain panel.zarr -o run --accelerator gpu --devices 4 --strategy ddp",
    )
    p.add_argument("store", metavar="STORE", help="genotype store (Zarr)")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR",
                   help="folder for checkpoints, metrics.csv and params.json")
    p.add_argument("--task", choices=PRETRAIN_TASKS, default=None,
                   help="pretraining task [masked; contrastive when params say contrastive]")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="fraction of samples held out for early stopping [params]")
    p.add_argument("--strategy", default="auto",
                   help="Lightning strategy: auto, ddp (data-parallel over --devices and "
                   "--num-nodes, or the processes torchrun/srun started), ...")
    add_training_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    params = resolve_run_params(args, val_fraction=args.val_fraction)

    from gperceiver.train.pretrain import pretrain  # torch and Lightning: after the checks

    result = pretrain(args.store, args.output, args.task, params, resume=args.resume,
                      force=args.force, progress=show_progress(args.quiet),
                      accelerator=args.accelerator, devices=devices(args),
                      num_nodes=args.num_nodes, strategy=args.strategy, memory=args.memory)
    if result.rank != 0:
        return  # a non-zero rank of a distributed run: rank 0 reports
    score = "n/a" if result.best_score is None else f"{result.best_score:.4f}"
    print(f"pretrained {result.epochs} epochs; best loss {score}; "
          f"checkpoints {result.best} and {result.last}")
