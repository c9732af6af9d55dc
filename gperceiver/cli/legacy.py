"""The original tool's scripts, `gperceiver_pretrain` and `gperceiver_finetune`.

They take the original positional TSV inputs and every flag of the original's
latest scripts, with its defaults. The TSVs are converted once into a genotype
store cached next to the outputs (`.gperceiver-cache/`), keyed by a hash of their
content and the decoder, and reused while unchanged; then the run goes through
the same library functions as `gperceiver pretrain` and `gperceiver fit`.

A value comes from the flag when given, else from --params (the original's own
params files are read in its dialect), else from the original's default. A flag
without an exact equivalent is accepted with a one-line note saying what it maps
to or why it has no effect.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gperceiver.choices import HEADS, OBJECTIVES
from gperceiver.cli.main import Parser, run_command
from gperceiver.cli.training import flag_named, show_progress
from gperceiver.errors import InputFormatError, Note, UsageError

CACHE = ".gperceiver-cache"
PRETRAIN, FINETUNE = "gperceiver_pretrain", "gperceiver_finetune"

# Each flag the original scripts share and what it sets here: (flag, our params key,
# type, the original's default (pretrain, finetune), help).
TRAINING_FLAGS = (
    ("--lr", "lr", float, (1e-3, 1e-3), "the maximum learning rate"),
    ("--warmup-steps", "warmup_steps", int, (100, 100),
     "steps (minibatches) of linear learning-rate warm-up"),
    ("--batch-size", "batch_size", int, (16, 16), "samples per batch"),
    ("--nepochs", "epochs", int, (500, 100), "maximum epochs"),
    ("--early-stopping-patience", "patience", int, (50, 50),
     "epochs without a better validation loss before stopping"),
    ("--reduce-lr-patience", "lr_patience", int, (10, 10),
     "epochs without a better validation loss before the learning rate is reduced "
     "(halved here; the original divided it by 10)"),
    ("--seed", "seed", int, (None, None), "random seed [params: 0]"),
)
PRETRAIN_FLAGS = (
    ("--prop-x", "prop_x", float, 1.0, "proportion of markers given as input"),
    ("--prop-y", "prop_y", float, 0.1, "proportion of the input markers to predict"),
    ("--contrastive-allele-weight", "contrastive_weight", float, 0.0,
     "contrastive task: weight of each twin's allele reconstruction beside the contrast "
     "(0: the contrast alone; 1: equal)"),
)
FINETUNE_LOSSES = {"mse": "regression", "mae": "regression", "poisson": "regression",
                   "binary": "binary", "binary_focal": "binary"}


def cached_store(markers: str, chroms: str, nalleles: int | None, ploidy: int | None,
                 near: Path, progress: bool, decoder: list | None = None) -> Path:
    """The store for these TSVs: converted once, found again by content hash."""
    from gperceiver.converters.tsv import convert_tsv
    from gperceiver.inputs import open_binary

    nalleles, ploidy = (3 if nalleles is None else nalleles), (2 if ploidy is None else ploidy)
    key = f"decoder:{decoder}" if decoder is not None else f"decoder:{ploidy}:{nalleles}"
    digest = hashlib.sha256(f"{key}\n".encode())
    for path in (markers, chroms):
        with open_binary(path) as f:
            while piece := f.read(1 << 24):
                digest.update(piece)
        digest.update(b"\0")
    folder = near / CACHE
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / f"{digest.hexdigest()[:20]}.zarr"
    if not store.exists():
        try:
            coding = ({"decoder_file": decoder} if decoder is not None
                      else {"ploidy": ploidy, "nalleles": nalleles})
            convert_tsv(markers, chroms, store, progress=progress, **coding)
        except BaseException:
            if not any(folder.iterdir()):
                folder.rmdir()  # a failed first conversion leaves no empty cache behind
            raise
    return store


@contextmanager
def named_by_the_tsvs(store: Path, args: argparse.Namespace) -> Iterator[None]:
    """A fault of the cached store (say, not a pretrained model's variants) named by the
    markers and chroms files the user gave, not by the cache's hashed folder."""
    try:
        yield
    except InputFormatError as e:
        if str(e.path) != str(store) or e.line is not None:
            raise
        raise InputFormatError(f"{args.markers} (with {args.chroms})", e.problem) from None


# ---------------------------------------------------------------- flags


def _common(p: argparse.ArgumentParser, which: int) -> None:
    """Flags both scripts have; `which` is 0 for pretrain, 1 for finetune (defaults)."""
    p.add_argument("--model", metavar="DIR", default=None,
                   help="run folder for checkpoints, logs and params "
                   f"[{(PRETRAIN, FINETUNE)[which]}]")
    p.add_argument("--checkpoint", metavar="FILE", default=None,
                   help="start from this model's weights (a checkpoint or run folder) "
                   "instead of a new one, and train --nepochs epochs")
    p.add_argument("--best-checkpoint", metavar="FILE", default=None,
                   help="also copy the best checkpoint here")
    p.add_argument("--last-checkpoint", metavar="FILE", default=None,
                   help="also copy the last checkpoint here")
    p.add_argument("--logs", metavar="FILE", default=None,
                   help="also write the per-epoch log here (TSV)")
    p.add_argument("--params", metavar="FILE", default=None,
                   help="JSON hyper-parameters: the original's keys (see README) or ours")
    p.add_argument("--nalleles", type=int, default=None,
                   help="allele codes per copy including 0 = missing [3]")
    p.add_argument("--ploidy", type=int, default=None, help="copies per genotype [2]")
    for flag, _, kind, defaults, text in TRAINING_FLAGS:
        default = defaults[which]
        shown = f" [original: {default}]" if default is not None else ""
        p.add_argument(flag, type=kind, default=None, help=text + shown)
    p.add_argument("--warmup-lr", type=float, default=None,
                   help="no effect: the warm-up ramps linearly from 0 to --lr "
                   "[original: 1e-10]")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _note(text: str) -> None:
    warnings.warn(text, Note, stacklevel=2)


def _params(args: argparse.Namespace, which: int, extra: dict[str, tuple[Any, Any]]):
    """Params: each flag when given, else --params, else the original's default.
    `which`: 0 pretrain (its own flags too), 1 finetune; `extra`: our key -> (flag value
    or None, the original's default or None)."""
    from gperceiver.train.params import load_params

    params = load_params(args.params, original=True)
    tables = [(flag, key, defaults[which]) for flag, key, _, defaults, _ in TRAINING_FLAGS]
    if which == 0:
        tables += [(flag, key, default) for flag, key, _, default, _ in PRETRAIN_FLAGS]
    values: dict[str, tuple[Any, Any]] = {
        key: (getattr(args, flag[2:].replace("-", "_")), default)
        for flag, key, default in tables}
    values.update(extra)
    changes = {}
    for key, (given, default) in values.items():
        if given is not None:
            changes[key] = given
        elif default is not None and key not in params.given:
            changes[key] = default
    if args.warmup_lr is not None:
        _note("--warmup-lr has no effect: the warm-up ramps linearly from 0 to --lr")
    try:
        return params.replace(**changes)
    except UsageError as e:  # name the flag the user gave, not our key
        raise flag_named(e, {key: flag for flag, key, _ in tables
                             if values.get(key, (None,))[0] is not None}) from None


def _decoder(args: argparse.Namespace) -> list | None:
    """The allele decoder of an original params file (used to read the TSV)."""
    from gperceiver.train.original_params import original_decoder
    from gperceiver.train.params import read_params_file

    return original_decoder(read_params_file(args.params)) if args.params else None


@contextmanager
def _run_folder(args: argparse.Namespace, default: str) -> Iterator[Path]:
    """The run folder; an earlier run there is replaced, as the original did (with a
    note), and a folder this run created is removed again when it fails."""
    run_dir = Path(args.model or default)
    created = not run_dir.exists()
    if not created and any(run_dir.glob("*.ckpt")):
        _note(f"replacing the earlier run in {run_dir}, as the original did "
              "(`gperceiver pretrain|fit` would ask for --force)")
    try:
        yield run_dir
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _start(args: argparse.Namespace) -> str | None:
    """--checkpoint: the weights a run starts from (the original's meaning), resolved."""
    if args.checkpoint is None:
        return None
    from gperceiver.train.checkpoint import checkpoint_path

    return str(checkpoint_path(args.checkpoint))


def _copy_outputs(args: argparse.Namespace, run_dir: Path) -> None:
    from gperceiver.train.checkpoint import BEST, LAST

    for target, name in ((args.best_checkpoint, BEST), (args.last_checkpoint, LAST)):
        if target is not None and (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, target)
    if args.logs is not None:
        from gperceiver.plots import find_metrics, read_metrics

        found = find_metrics(run_dir)
        if found is not None:  # Lightning logs training and validation apart: one row each
            table = read_metrics(found).groupby("epoch", as_index=False).first()
            table.drop(columns=["step"], errors="ignore").to_csv(args.logs, sep="\t",
                                                                 index=False)


# ---------------------------------------------------------------- gperceiver_pretrain


def pretrain_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PRETRAIN,
               description="Pretrain on the original TSV inputs (see `gperceiver pretrain`). "
               "Flags are the original script's, with its defaults; a value comes from the "
               "flag, else from --params, else from that default.")
    p.add_argument("chroms", metavar="CHROMS", help="chroms TSV: chr marker pos")
    p.add_argument("markers", metavar="MARKERS", help="markers TSV: name then marker codes")
    _common(p, 0)
    for flag, _, kind, default, text in PRETRAIN_FLAGS:
        p.add_argument(flag, type=kind, default=None, help=f"{text} [original: {default}]")
    p.add_argument("--contrastive", action="store_true", help="twinned contrastive task")
    p.add_argument("--position-embed-trainable", action="store_true",
                   help="train the position embeddings (of some of the original's versions; "
                   "here they train by default, params: position_embed_trainable)")
    p.add_argument("--ploidy-scaler", type=float, default=None,
                   help="no effect: the loss here is a cross-entropy over whole genotypes, "
                   "with no separate ploidy penalty [original: 1.0]")
    p.add_argument("--loss", choices=("binary", "binary_focal"), default=None,
                   help="no effect: the loss here is a cross-entropy over genotypes "
                   "[original: binary_focal]")
    p.set_defaults(func=run_pretrain)
    return p


def run_pretrain(args: argparse.Namespace) -> None:
    params = _params(args, 0, {
        "contrastive": (True if args.contrastive else None, None),
        "position_embed_trainable": (True if args.position_embed_trainable else None, None)})

    from gperceiver.train.pretrain import pretrain  # torch and Lightning: after the checks

    if args.ploidy_scaler is not None:
        _note("--ploidy-scaler has no effect: the loss here is a cross-entropy over whole "
              "genotypes, with no separate ploidy penalty")
    if args.loss is not None:
        _note(f"--loss {args.loss} has no effect: pretraining here minimises a cross-entropy "
              "over genotype classes")
    progress = show_progress(args.quiet)
    with _run_folder(args, PRETRAIN) as run_dir:
        store = cached_store(args.markers, args.chroms, args.nalleles, args.ploidy,
                             run_dir.absolute().parent, progress, _decoder(args))
        with named_by_the_tsvs(store, args):
            result = pretrain(store, run_dir, None, params, force=True, progress=progress,
                              init=_start(args))
    _copy_outputs(args, run_dir)
    best = f"; best validation loss {result.best_score:.4f}" if result.best_score else ""
    task = "contrastive" if params.contrastive else "masked"
    print(f"pretrained for {result.epochs} epoch(s) on the {task} task{best}; checkpoints "
          f"in {run_dir}")


# ---------------------------------------------------------------- gperceiver_finetune


def finetune_parser() -> argparse.ArgumentParser:
    p = Parser(prog=FINETUNE,
               description="Finetune on the original TSV inputs (see `gperceiver fit`). "
               "Flags are the original script's, with its defaults; a value comes from the "
               "flag, else from --params (or the pretrained run's params), else from that "
               "default.")
    p.add_argument("phenos", metavar="PHENOS", help="phenotype TSV: name response block [cv]")
    p.add_argument("chroms", metavar="CHROMS", help="chroms TSV: chr marker pos")
    p.add_argument("markers", metavar="MARKERS", help="markers TSV: name then marker codes")
    _common(p, 1)
    p.add_argument("--predictions", metavar="FILE", default=None,
                   help="also write the predictions TSV here")
    p.add_argument("--pretrained", metavar="DIR", default=None,
                   help="a pretraining run folder (its best.ckpt) or a checkpoint; its "
                   "architecture is taken whole")
    p.add_argument("--latent-nontrainable", action="store_true",
                   help="keep the latent array fixed")
    p.add_argument("--encoder-nontrainable", action="store_true", help="train only the head")
    p.add_argument("--position-embed-trainable", action="store_true",
                   help="with --pretrained: train the position embeddings (frozen otherwise, "
                   "as in the original)")
    p.add_argument("--block-strategy", choices=HEADS, default=None,
                   help="how blocks are read from the latents [original: pool]")
    p.add_argument("--loss", choices=tuple(FINETUNE_LOSSES), default=None,
                   help="mse: regression; binary: binary; mae and poisson train a regression "
                   "on squared error, binary_focal a plain binary cross-entropy (with a "
                   "note) [original: mse]")
    p.add_argument("--cv", type=int, default=None, metavar="K", help="validation fold")
    p.add_argument("--objective", choices=OBJECTIVES,
                   default=None, help="response type; overrides --loss [params: regression]")
    p.set_defaults(func=run_finetune)
    return p


def run_finetune(args: argparse.Namespace) -> None:
    objective = args.objective
    if objective is None and args.loss is not None:
        objective = FINETUNE_LOSSES[args.loss]
        if args.loss in ("mae", "poisson", "binary_focal"):
            _note(f"--loss {args.loss}: trains a {objective} objective with "
                  f"{'squared error' if objective == 'regression' else 'plain cross-entropy'} "
                  "here")
    from_weights = args.checkpoint is not None or args.pretrained is not None
    trainable = True if args.position_embed_trainable else (False if from_weights else None)
    params = _params(args, 1, {"head": (args.block_strategy, "pool"),
                               "objective": (objective, None),
                               "position_embed_trainable": (trainable, None)})
    start = _start(args)
    pretrained = args.pretrained if start is None else start

    from gperceiver.cli.fit import report_fit  # torch and Lightning: after the checks
    from gperceiver.fit import fit

    progress = show_progress(args.quiet)
    with _run_folder(args, FINETUNE) as run_dir:
        store = cached_store(args.markers, args.chroms, args.nalleles, args.ploidy,
                             run_dir.absolute().parent, progress, _decoder(args))
        with named_by_the_tsvs(store, args):
            result = fit(store, args.phenos, run_dir, params, pretrained=pretrained,
                         cv=args.cv, freeze_encoder=args.encoder_nontrainable,
                         freeze_latents=args.latent_nontrainable, force=True,
                         progress=progress,
                         predict_all=True)  # the original predicted every genotype
    _copy_outputs(args, run_dir)
    if args.predictions is not None:
        shutil.copyfile(run_dir / "predictions.tsv", args.predictions)
    if start is not None:
        _note("--checkpoint: the encoder started from its weights"
              + (" (instead of --pretrained's)" if args.pretrained is not None else "")
              + "; the block head started afresh")
    report_fit(result, params.objective, cv=args.cv)


def pretrain_main() -> None:
    sys.exit(run_command(pretrain_parser().parse_args(), prog=PRETRAIN))


def finetune_main() -> None:
    sys.exit(run_command(finetune_parser().parse_args(), prog=FINETUNE))
