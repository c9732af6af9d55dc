"""The original tool's scripts, `gperceiver_pretrain` and `gperceiver_finetune`.

They take the original positional TSV inputs and flags. The TSVs are converted
once into a genotype store cached next to the outputs (`.gperceiver-cache/`),
keyed by a hash of their content and the decoder, and reused while unchanged;
then the run goes through the same library functions as `gperceiver pretrain`
and `gperceiver fit`.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

from gperceiver.cli.main import Parser, run_command
from gperceiver.cli.training import show_progress

CACHE = ".gperceiver-cache"


def cached_store(markers: str, chroms: str, nalleles: int, ploidy: int, near: Path,
                 progress: bool) -> Path:
    """The store for these TSVs: converted once, found again by content hash."""
    from converters.tsv import convert_tsv
    from gperceiver.errors import InputNotFoundError

    digest = hashlib.sha256(f"decoder:{ploidy}:{nalleles}\n".encode())
    for path in (markers, chroms):
        try:
            with open(path, "rb") as f:
                while block := f.read(1 << 24):
                    digest.update(block)
        except FileNotFoundError:
            raise InputNotFoundError(f"{path}: no such file") from None
        digest.update(b"\0")
    folder = near / CACHE
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / f"{digest.hexdigest()[:20]}.zarr"
    if not store.exists():
        try:
            convert_tsv(markers, chroms, store, ploidy=ploidy, nalleles=nalleles,
                        progress=progress)
        except BaseException:
            if not any(folder.iterdir()):
                folder.rmdir()  # a failed first conversion leaves no empty cache behind
            raise
    return store


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nalleles", type=int, default=3,
                   help="allele numbers per copy including 0 = missing")
    p.add_argument("--ploidy", type=int, default=2, help="copies per genotype")
    p.add_argument("--model", metavar="DIR", default=None,
                   help="run folder for checkpoints, logs and params")
    p.add_argument("--checkpoint", metavar="FILE", default=None,
                   help="continue from this checkpoint (a last.ckpt of an earlier run)")
    p.add_argument("--best-checkpoint", metavar="FILE", default=None,
                   help="also copy the best checkpoint here")
    p.add_argument("--last-checkpoint", metavar="FILE", default=None,
                   help="also copy the last checkpoint here")
    p.add_argument("--params", metavar="FILE", default=None, help="JSON hyper-parameters")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _prepare(args: argparse.Namespace, default_dir: str) -> tuple[Path, bool]:
    """(run folder, resume?) with --checkpoint placed as the run's last.ckpt."""
    run_dir = Path(args.model or default_dir)
    if args.checkpoint is None:
        return run_dir, False
    last = run_dir / "last.ckpt"
    if Path(args.checkpoint).resolve() != last.resolve():
        from gperceiver.train.checkpoint import load_checkpoint

        load_checkpoint(args.checkpoint)  # refuse a bad or unsafe file before copying it
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.checkpoint, last)
    return run_dir, True


def _copy_checkpoints(args: argparse.Namespace, run_dir: Path) -> None:
    for target, name in ((args.best_checkpoint, "best.ckpt"), (args.last_checkpoint, "last.ckpt")):
        if target is not None and (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, target)


def pretrain_parser() -> argparse.ArgumentParser:
    p = Parser(prog="gperceiver_pretrain",
               description="Pretrain on the original TSV inputs (see `gperceiver pretrain`).")
    p.add_argument("chroms", metavar="CHROMS", help="chroms TSV: chr marker pos")
    p.add_argument("markers", metavar="MARKERS", help="markers TSV: name then marker codes")
    _common(p)
    p.add_argument("--contrastive", action="store_true", help="twinned contrastive task")
    p.add_argument("--nepochs", type=int, default=None, help="maximum epochs")
    p.add_argument("--batch-size", type=int, default=None, help="samples per batch")
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.set_defaults(func=run_pretrain)
    return p


def run_pretrain(args: argparse.Namespace) -> None:
    from gperceiver.train.params import load_params
    from gperceiver.train.pretrain import pretrain

    params = load_params(args.params, epochs=args.nepochs, batch_size=args.batch_size,
                         lr=args.lr)
    run_dir, resume = _prepare(args, "gperceiver_pretrain")
    progress = show_progress(args.quiet)
    store = cached_store(args.markers, args.chroms, args.nalleles, args.ploidy,
                         run_dir.absolute().parent, progress)
    task = "contrastive" if args.contrastive else None
    result = pretrain(store, run_dir, task, params, resume=resume, force=not resume,
                      progress=progress)
    _copy_checkpoints(args, run_dir)
    print(f"pretrained {result.epochs} epochs; checkpoints in {run_dir}")


def finetune_parser() -> argparse.ArgumentParser:
    p = Parser(prog="gperceiver_finetune",
               description="Finetune on the original TSV inputs (see `gperceiver fit`).")
    p.add_argument("phenos", metavar="PHENOS", help="phenotype TSV: name response block [cv]")
    p.add_argument("chroms", metavar="CHROMS", help="chroms TSV: chr marker pos")
    p.add_argument("markers", metavar="MARKERS", help="markers TSV: name then marker codes")
    _common(p)
    p.add_argument("--predictions", metavar="FILE", default=None,
                   help="also write the predictions TSV here")
    p.add_argument("--pretrained", metavar="DIR", default=None,
                   help="a pretraining run folder (its best.ckpt) or a checkpoint")
    p.add_argument("--latent-nontrainable", action="store_true",
                   help="keep the latent array fixed")
    p.add_argument("--encoder-nontrainable", action="store_true", help="train only the head")
    p.add_argument("--position-embed-trainable", action="store_true",
                   help="train the position embeddings")
    p.add_argument("--block-strategy", choices=("pool", "latent"), default=None,
                   help="how blocks are read from the latents [params]")
    p.add_argument("--cv", type=int, default=None, metavar="K", help="validation fold")
    p.add_argument("--objective", choices=("regression", "binary", "multiclass", "ordinal"),
                   default=None, help="response type [params: regression]")
    p.set_defaults(func=run_finetune)
    return p


def run_finetune(args: argparse.Namespace) -> None:
    from gperceiver.train.finetune import fit
    from gperceiver.train.params import load_params

    params = load_params(args.params, head=args.block_strategy, objective=args.objective,
                         position_embed_trainable=args.position_embed_trainable or None)
    run_dir, resume = _prepare(args, "gperceiver_finetune")
    progress = show_progress(args.quiet)
    store = cached_store(args.markers, args.chroms, args.nalleles, args.ploidy,
                         run_dir.absolute().parent, progress)
    pretrained = args.pretrained
    if pretrained is not None and Path(pretrained).is_dir():
        pretrained = Path(pretrained) / "best.ckpt"
    result = fit(store, args.phenos, run_dir, params, pretrained=pretrained, cv=args.cv,
                 freeze_encoder=args.encoder_nontrainable,
                 freeze_latents=args.latent_nontrainable, resume=resume, force=not resume,
                 progress=progress)
    _copy_checkpoints(args, run_dir)
    if args.predictions is not None:
        shutil.copyfile(run_dir / "predictions.tsv", args.predictions)
    shown = result.metrics.get("validation") or result.metrics.get("train") or {}
    print(f"finetuned; mean {shown.get('mean', {})}; outputs in {run_dir}")


def pretrain_main() -> None:
    sys.exit(run_command(pretrain_parser().parse_args()))


def finetune_main() -> None:
    sys.exit(run_command(finetune_parser().parse_args()))
