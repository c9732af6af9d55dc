"""The Lightning Trainer every training command uses (pretrain, fit).

One factory so all runs behave alike: best and last checkpoints in RUN_DIR,
early stopping on the monitored (validation) loss, RUN_DIR/metrics.csv, a
progress bar, gradient clipping, precision, deterministic seeding, and resume
from RUN_DIR/last.ckpt with weights-only loading (a code-running pickle is
refused before Lightning sees it).

Data parallelism (DDP, `devices`/`num_nodes`/`strategy`, launched by Lightning,
torchrun or SLURM): every process runs the same command. Only the main process
(`is_main_process`) prepares RUN_DIR and writes files; Lightning saves
checkpoints and metrics from global rank 0. `fit` shards the loaders by rank once
the process group exists (`ShardByRank`): the training loader stops every rank
after the same number of batches (the loader's `even_ranks`), since DDP
all-reduces gradients at every step and a rank with one batch more would wait
for the others forever. Validation is sharded without that cut (no gradients, so
no per-batch collective); epoch metrics are logged with `sync_dist`, so every
rank sees the same global validation loss for checkpointing and early stopping.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from gperceiver.atomic import atomic_output
from gperceiver.errors import CannotWriteError, InputNotFoundError, UsageError
from gperceiver.runtime import flush_denormals, release_freed_memory, reuse_freed_memory
from gperceiver.train.checkpoint import (
    BEST,
    LAST,
    ModelInfo,
    load_checkpoint,
    model_info,
    write_checkpoint,
)
from gperceiver.train.params import Params

METRICS = "metrics.csv"
# A model carries parameters its task leaves unused (the other pretraining decoder, the
# decoders when finetuning), which plain DDP refuses: these names get DDP to skip them.
DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")
PENDING = ".last.ckpt.pending"  # an epoch's last.ckpt until its metrics rows are written
RUN_FILES = (LAST, BEST, METRICS, "params.json", "hparams.yaml", PENDING)


def quiet_lightning() -> None:
    """Silence Lightning's info banners and the warnings that do not apply to us."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*does not have many workers.*", ".*IterableDataset.*", ".*exists and is not empty.*",
        ".*Checkpoint directory.*", ".*`isinstance\\(treespec, LeafSpec\\)`.*",
        ".*number of training batches.*", ".*LeafSpec.*",
        ".*Grad strides do not match bucket view strides.*",  # DDP, harmless for our sizes
    ):
        warnings.filterwarnings("ignore", message=pattern)


class StderrProgressBar(TQDMProgressBar):
    """Lightning's bars, on stderr like every gperceiver progress bar (stdout stays clean)."""

    @staticmethod
    def _on_stderr(make):
        saved, sys.stdout = sys.stdout, sys.stderr  # Lightning passes file=sys.stdout
        try:
            return make()
        finally:
            sys.stdout = saved

    def init_sanity_tqdm(self):
        return self._on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self):
        return self._on_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self):
        return self._on_stderr(super().init_validation_tqdm)

    def init_predict_tqdm(self):
        return self._on_stderr(super().init_predict_tqdm)

    def init_test_tqdm(self):
        return self._on_stderr(super().init_test_tqdm)


class _Writer(ExperimentWriter):
    """CSV writer that, on resume, keeps the rows up to the resumed epoch."""

    def __init__(self, log_dir: str, keep_through_epoch: int | None):
        self._keep = keep_through_epoch
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = self.metrics_file_path
        if not os.path.isfile(path):
            return
        if self._keep is None:
            os.remove(path)
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys, rows = list(reader.fieldnames or []), list(reader)
        rows = [r for r in rows if r.get("epoch") and int(float(r["epoch"])) <= self._keep]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(keys)


class RunLogger(CSVLogger):
    """CSVLogger writing RUN_DIR/metrics.csv directly (no version folders)."""

    def __init__(self, run_dir: str | os.PathLike, keep_through_epoch: int | None = None):
        super().__init__(save_dir=str(run_dir), name="", version="")
        self._keep = keep_through_epoch

    @property
    @rank_zero_experiment
    def experiment(self) -> _Writer:
        if self._experiment is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _Writer(self.log_dir, self._keep)
        return self._experiment

    def log_hyperparams(self, params=None, *args, **kwargs) -> None:
        pass  # the resolved params are saved as RUN_DIR/params.json

    @rank_zero_only
    def save(self) -> None:
        """Write the rows so far, then put a pending last.ckpt in place (see LastCheckpoint)."""
        super().save()
        pending = Path(self.log_dir) / PENDING
        if pending.is_file():
            os.replace(pending, Path(self.log_dir) / LAST)


class LastCheckpoint(ModelCheckpoint):
    """RUN_DIR/last.ckpt after every epoch, in place only once the epoch's rows are written.

    Lightning logs an epoch's training metrics after the checkpoint hooks; a run killed
    in between would resume after an epoch whose row metrics.csv never got. So the
    checkpoint goes to PENDING and RunLogger.save renames it to last.ckpt after the rows.
    """

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, str(Path(filepath).with_name(PENDING)))
        self._last_checkpoint_saved = filepath


def make_trainer(
    run_dir: str | os.PathLike,
    params: Params,
    *,
    monitor: str = "val_loss",
    progress: bool = True,
    accelerator: str = "auto",
    devices: int | str = "auto",
    resume_epoch: int | None = None,
    callbacks: list | None = None,
    max_time: str | None = None,
    num_nodes: int = 1,
    strategy: str = "auto",
) -> L.Trainer:
    """A Trainer writing best/last checkpoints and metrics.csv into `run_dir`."""
    quiet_lightning()
    flush_denormals()
    run_dir = Path(run_dir)
    best = ModelCheckpoint(
        dirpath=run_dir, filename=Path(BEST).stem, monitor=monitor, mode="min",
        save_top_k=1, enable_version_counter=False,
    )
    # Lightning's save_last only refreshes last.ckpt when a new best is saved; this one
    # writes it after every epoch, so a resume loses at most the epoch in progress.
    last = LastCheckpoint(
        dirpath=run_dir, filename=Path(LAST).stem, monitor=None, save_top_k=1,
        every_n_epochs=1, enable_version_counter=False,
    )
    stopper = EarlyStopping(monitor=monitor, mode="min", patience=params.patience)
    on_gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    if strategy in DDP_STRATEGIES:
        strategy = f"{strategy}_find_unused_parameters_true"
    return L.Trainer(
        default_root_dir=run_dir,
        max_epochs=params.epochs,
        max_time=max_time,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=params.precision,
        gradient_clip_val=params.grad_clip or None,
        deterministic="warn" if on_gpu else True,
        callbacks=[best, last, stopper, *([StderrProgressBar()] if progress else []),
                   *(callbacks or [])],
        logger=RunLogger(run_dir, resume_epoch),
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        plugins=[StreamedCheckpointIO()],
    )


class StreamedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer without its in-memory copy.

    Lightning serialises a whole checkpoint into a bytes buffer before writing it: as
    large again as the weights and optimiser state (a third of a GB at 100,000
    markers, the peak of a `fit`). Here torch.save streams it into a temporary sibling,
    moved into place when complete (`checkpoint.write_checkpoint`)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        write_checkpoint(checkpoint, path)


def check_hardware(accelerator: str = "auto", devices: int | str = "auto", num_nodes: int = 1,
                   strategy: str = "auto") -> None:
    """Refuse an --accelerator/--devices/--strategy Lightning cannot use here, before
    RUN_DIR is touched (a Trainer made with them alone: nothing runs or is written)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    quiet_lightning()
    if strategy in DDP_STRATEGIES:
        strategy = f"{strategy}_find_unused_parameters_true"
    try:
        L.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                  strategy=strategy, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False)
    except (MisconfigurationException, ValueError, ImportError) as e:  # ImportError: TPU
        raise UsageError(f"--accelerator {accelerator} --devices {devices} --num-nodes "
                         f"{num_nodes} --strategy {strategy}: {e}") from None


def is_main_process() -> bool:
    """False in the processes a launcher started besides global rank 0.

    Read from the environment, before any process group exists: torchrun sets
    RANK, SLURM (srun, several tasks) SLURM_PROCID, Lightning's own launcher
    LOCAL_RANK and NODE_RANK in the processes it starts.
    """
    env = os.environ
    if "RANK" in env:
        return env["RANK"] == "0"
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in env:
        return env["SLURM_PROCID"] == "0"
    return all(env.get(key, "0") == "0" for key in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


class ShardByRank(Callback):
    """Give the loaders this process' rank once the process group is set up.

    The loaders are built before Lightning starts (or joins) the other processes,
    so they cannot read the rank then. Training: every rank stops after the same
    number of batches (`even_ranks`, see the loader). Validation: sharded when
    every rank gets a sample, else each rank validates them all.
    """

    def __init__(self, train_loader, val_loader=None):
        self.train, self.val = train_loader, val_loader

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        rank, world = trainer.global_rank, trainer.world_size
        train = self.train.dataset
        train.rank, train.world_size, train.even_ranks = rank, world, world > 1
        if self.val is not None:
            val = self.val.dataset
            shard = len(val.selected) >= world
            val.rank, val.world_size = (rank, world) if shard else (0, 1)


def prepare_run_dir(run_dir: str | os.PathLike, *, resume: bool, force: bool) -> Path | None:
    """Check RUN_DIR for a fresh run or a resume; return last.ckpt when resuming.

    A fresh run refuses a folder holding an earlier run's files unless `force`
    (then they are removed); a resume needs RUN_DIR/last.ckpt and checks that it
    loads as plain weights.
    """
    run_dir = Path(run_dir)
    if resume:
        last = run_dir / LAST
        if not last.is_file():
            raise InputNotFoundError(f"{last}: nothing to resume (no last checkpoint)")
        load_checkpoint(last)
        # a killed run's checkpoint whose rows never reached metrics.csv: never put in place
        (run_dir / PENDING).unlink(missing_ok=True)
        return last
    if run_dir.exists() and not run_dir.is_dir():
        raise CannotWriteError(f"{run_dir}: exists and is not a folder")
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found and not force:
        raise CannotWriteError(
            f"{run_dir}: holds an earlier run ({found[0]}); pass --resume to continue it "
            "or --force to start over")
    for name in found:
        (run_dir / name).unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CannotWriteError(f"{run_dir}: cannot create the folder ({e.strerror})") from None
    if not os.access(run_dir, os.W_OK):
        raise CannotWriteError(f"{run_dir}: folder is not writable")
    return None


def fit(trainer: L.Trainer, module: L.LightningModule, train_loader, val_loader,
        last: Path | None) -> None:
    """trainer.fit, resuming from `last` (weights-only) when given; loaders shard by rank."""
    reuse_freed_memory()
    trainer.callbacks.append(ShardByRank(train_loader, val_loader))
    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=last,
                    weights_only=True if last is not None else None)
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into exit(1): keep it an interrupt
            raise KeyboardInterrupt from None
        raise


def release(module: L.LightningModule) -> None:
    """Hand back what a finished training held, for the phases that follow: the
    module's link to its trainer (which keeps the optimiser and its state), the
    gradients and the loaders' buffers. Drop your own references to the trainer and
    loaders first."""
    module.trainer = None
    module.zero_grad(set_to_none=True)
    getattr(module, "loaders", {}).clear()
    release_freed_memory()


# Keys a resumed run may change: they do not alter what the run computes so far.
RESUMABLE_CHANGES = ("epochs", "patience", "num_workers")


def start_run(
    run_dir: Path, info: ModelInfo, *, resume: bool, force: bool,
    accelerator: str = "auto", devices: int | str = "auto", num_nodes: int = 1,
    strategy: str = "auto",
) -> tuple[Path | None, int | None]:
    """Check the hardware, prepare RUN_DIR and save params.json; for `pretrain` and `fit`.

    Returns (last.ckpt to resume from, the last epoch it finished), or (None, None)
    for a fresh run. Only the main process of a DDP run writes into RUN_DIR.
    """
    check_hardware(accelerator, devices, num_nodes, strategy)
    main = is_main_process()
    last = None
    if main or resume:  # a resume reads last.ckpt in every process
        last = prepare_run_dir(run_dir, resume=resume, force=force)
    resume_epoch = None
    if last is not None:
        ckpt = load_checkpoint(last)
        check_resumable(model_info(ckpt, last), info, last)
        resume_epoch = next_epoch(ckpt) - 1
    if main:
        with atomic_output(run_dir / "params.json", force=True) as tmp:
            tmp.write_text(json.dumps(info.params.to_dict(), indent=2) + "\n")
    return last, resume_epoch


def next_epoch(ckpt: dict) -> int:
    """The epoch a run resumed from `ckpt` starts with (the epochs it processed)."""
    try:
        return int(ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return int(ckpt.get("epoch", -1)) + 1


def check_resumable(previous: ModelInfo, now: ModelInfo, last: Path) -> None:
    """Refuse resuming `last` with another task, store or a changed hyper-parameter."""
    if previous.task != now.task:
        raise UsageError(f"{last}: was trained on the {previous.task} task, not {now.task}")
    if previous.variant_id != now.variant_id:
        raise UsageError(f"{last}: was trained on a store with other variants")
    old, new = previous.params.to_dict(), now.params.to_dict()
    for key in old:
        if key not in RESUMABLE_CHANGES and old[key] != new[key]:
            raise UsageError(
                f"{last}: cannot resume with {key}={new[key]!r}; the run used {old[key]!r} "
                f"(only {', '.join(RESUMABLE_CHANGES)} may change)")
