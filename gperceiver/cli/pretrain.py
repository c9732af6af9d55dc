"""`gperceiver pretrain STORE -o RUN_DIR`: masked or twinned contrastive pretraining."""

from __future__ import annotations

import argparse
import os
import sys

TASKS = ("masked", "contrastive")


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
    p.add_argument("--task", choices=TASKS, default=None,
                   help="pretraining task [masked; contrastive when params say contrastive]")
    p.add_argument("--params", metavar="FILE", default=None,
                   help="JSON hyper-parameters (see test_data/params.json); on --resume "
                   "defaults to RUN_DIR/params.json")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs [params]")
    p.add_argument("--batch-size", type=int, default=None, help="samples per batch [params]")
    p.add_argument("--lr", type=float, default=None, help="learning rate [params]")
    p.add_argument("--seed", type=int, default=None, help="random seed [params]")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="fraction of samples held out for early stopping [params]")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader worker processes [params]")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.ckpt")
    p.add_argument("--force", action="store_true", help="replace an earlier run in RUN_DIR")
    p.add_argument("--accelerator", default="auto",
                   help="Lightning accelerator: auto, cpu, gpu, ...")
    p.add_argument("--devices", default="auto", help="Lightning devices: auto, N or a list")
    p.add_argument("--num-nodes", type=int, default=1, help="machines (multi-node DDP)")
    p.add_argument("--strategy", default="auto",
                   help="Lightning strategy: auto, ddp (data-parallel over --devices and "
                   "--num-nodes, or the processes torchrun/srun started), ...")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def overrides(args: argparse.Namespace) -> dict:
    return {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "seed": args.seed, "val_fraction": args.val_fraction,
            "num_workers": args.num_workers}


def show_progress(quiet: bool) -> bool:
    if quiet:
        return False
    return sys.stderr.isatty() or os.environ.get("GPERCEIVER_PROGRESS", "") not in ("", "0")


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from gperceiver.errors import UsageError
    from gperceiver.train.params import load_params

    if args.resume and args.force:
        raise UsageError("--resume and --force contradict each other")
    saved = Path(args.output) / "params.json"
    if args.params is None and args.resume and saved.is_file():
        params = load_params(saved, **overrides(args))
    else:
        params = load_params(args.params, **overrides(args))

    from gperceiver.train.pretrain import pretrain  # torch and Lightning: after the checks
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    result = pretrain(args.store, args.output, args.task, params, resume=args.resume,
                      force=args.force, progress=show_progress(args.quiet),
                      accelerator=args.accelerator, devices=devices,
                      num_nodes=args.num_nodes, strategy=args.strategy)
    if result.rank != 0:
        return  # a non-zero rank of a distributed run: rank 0 reports
    score = "n/a" if result.best_score is None else f"{result.best_score:.4f}"
    print(f"pretrained {result.epochs} epochs; best loss {score}; "
          f"checkpoints {result.best} and {result.last}")
