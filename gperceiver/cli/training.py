"""Flags shared by the training commands (pretrain, fit) and their mapping to Params."""

from __future__ import annotations

import argparse
from typing import Any

from gperceiver.errors import UsageError


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """--params, the common overrides, --resume/--force, devices, --quiet."""
    p.add_argument("--params", metavar="FILE", default=None,
                   help="JSON hyper-parameters (see test_data/params.json); on --resume "
                   "defaults to RUN_DIR/params.json")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs [params]")
    p.add_argument("--batch-size", type=int, default=None, help="samples per batch [params]")
    p.add_argument("--lr", type=float, default=None, help="learning rate [params]")
    p.add_argument("--seed", type=int, default=None, help="random seed [params]")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader worker processes [params]")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.ckpt")
    p.add_argument("--force", action="store_true", help="replace an earlier run in RUN_DIR")
    p.add_argument("--accelerator", default="auto",
                   help="Lightning accelerator: auto, cpu, gpu, ...")
    p.add_argument("--devices", default="auto", help="Lightning devices: auto, N or a list")
    p.add_argument("--num-nodes", type=int, default=1, help="machines (multi-node DDP)")
    add_memory_flag(p, "the loader's shuffle buffer and prefetched batches")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_memory_flag(p: argparse.ArgumentParser, sizes: str) -> None:
    """--memory SIZE: the budget, and what it sizes in this command."""
    p.add_argument("--memory", default=None, metavar="SIZE",
                   help=f"memory budget, e.g. 2GB or 1.5GiB: sizes {sizes}, and says what "
                   "it chose [half the free memory]")


def training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Params overridden by the common flags (None: keep the file's value)."""
    return {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "seed": args.seed, "num_workers": args.num_workers}


def devices(args: argparse.Namespace) -> int | str:
    return int(args.devices) if str(args.devices).isdigit() else args.devices


def show_progress(quiet: bool) -> bool:
    """Progress bars: on a terminal, or forced with GPERCEIVER_PROGRESS=1; never with -q."""
    from gperceiver.progress import shown

    return shown(not quiet)


def resolve_run_params(args: argparse.Namespace, **extra: Any):
    """Params from --params (or RUN_DIR/params.json on --resume), then the flags."""
    from pathlib import Path

    from gperceiver.train.params import load_params

    if args.resume and args.force:
        raise UsageError("--resume and --force contradict each other")
    changes = {**training_overrides(args), **extra}
    saved = Path(args.output) / "params.json"
    path = saved if args.params is None and args.resume and saved.is_file() else args.params
    given = {key: "--" + key.replace("_", "-") for key, value in vars(args).items()
             if key in changes and value is not None}
    try:
        return load_params(path, **changes)
    except UsageError as e:
        raise flag_named(e, given) from None


def flag_named(error: UsageError, flags: dict[str, str]) -> UsageError:
    """`error` (about a params key) naming the flag that gave the value instead, when
    `flags` (key -> flag) has one: the user typed the flag, not the key."""
    key = error.message.split(":", 1)[0]
    return UsageError(flags[key] + error.message[len(key):]) if key in flags else error
