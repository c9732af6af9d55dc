"""Pretraining: masked (BERT-style) and twinned contrastive, through Lightning.

`pretrain(store, run_dir, task, params)` splits the store's samples into training
and held-out validation samples (by `seed`), streams batches with the loader,
and trains a GPerceiver with the shared Trainer (`engine`): RUN_DIR gets
best.ckpt, last.ckpt, metrics.csv and the resolved params.json.

Masked loss: cross-entropy over genotype classes at the hidden target loci.
Contrastive loss: cross-entropy over the number (0..P) of alleles two genotypes
share at the targets, plus `contrastive_weight` times the mean of the two twins'
masked losses there (the original tool's meaning; 0: the contrast alone).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from gperceiver.choices import PRETRAIN_TASKS
from gperceiver.data.loader import make_loader
from gperceiver.errors import UsageError
from gperceiver.memory import announce, budget_bytes
from gperceiver.runtime import flush_denormals
from gperceiver.store import Store, resolve, schema, store_name
from gperceiver.train import engine
from gperceiver.train.architecture import model_params
from gperceiver.train.checkpoint import (
    KEY,
    ModelInfo,
    build_model,
    load_model,
)
from gperceiver.train.optimiser import clip_gradients, configure_adamw
from gperceiver.train.params import Params


class PretrainModule(L.LightningModule):
    """A GPerceiver and its pretraining loss; saves the model description in checkpoints."""

    def __init__(self, model: torch.nn.Module, info: ModelInfo):
        super().__init__()
        self.model, self.info, self.task = model, info, info.task
        self.loaders: dict[str, object] = {}

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, accuracy) over the real targets of a batch."""
        if self.task == "masked":
            logits = self.model.masked_logits(batch["x_alleles"], batch["x_index"],
                                              batch["y_index"])
            return _cross_entropy(logits, self.model.class_of(batch["y_counts"]),
                                  batch["y_mask"])
        weight = self.info.params.contrastive_weight
        logits, twins = self.model.twin_logits(batch["x_alleles"], batch["x_index"],
                                               batch["y_index"], alleles=weight > 0)
        loss, accuracy = _cross_entropy(logits, batch["y_shared"].long(), batch["y_mask"])
        if twins is not None:  # as the original: contrast + w x mean of the twins' allele loss
            mask = batch["y_mask"].unsqueeze(1).expand(-1, 2, -1)
            alleles, _ = _cross_entropy(twins, self.model.class_of(batch["y_counts"]), mask)
            loss = loss + weight * alleles
        return loss, accuracy

    def training_step(self, batch, batch_idx):
        loss, accuracy = self.loss(batch)
        n = batch["x_index"].shape[0]
        # sync_dist: under DDP the epoch figures are over every rank's samples
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n,
                 sync_dist=True)
        self.log("train_accuracy", accuracy, on_step=False, on_epoch=True, batch_size=n,
                 sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, accuracy = self.loss(batch)
        n = batch["x_index"].shape[0]
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val_accuracy", accuracy, on_epoch=True, prog_bar=True, batch_size=n,
                 sync_dist=True)

    def configure_optimizers(self):
        return configure_adamw(self.model, self.info.params,
                               "val_loss" if "val" in self.loaders else "train_loss")

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        if gradient_clip_val:  # by norm, over sparse gradients too (`sparse_tables`)
            clip_gradients(self.parameters(), float(gradient_clip_val))

    # Lightning may create an epoch's iterator before that epoch's hooks run, so the
    # loaders' epochs are set one step ahead: at the end of each epoch for the next
    # one (the first epoch's, also on resume, is set before fit starts).
    def on_train_epoch_end(self) -> None:
        self._set_epochs(self.current_epoch + 1)

    def on_validation_epoch_end(self) -> None:
        self._set_epochs(self.current_epoch + 1)

    def _set_epochs(self, epoch: int) -> None:
        if "train" in self.loaders:
            self.loaders["train"].set_epoch(epoch)
        if "val" in self.loaders:
            self.loaders["val"].set_epoch(0)  # the same held-out targets every epoch

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[KEY] = self.info.to_dict()
        checkpoint["rng_torch"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if isinstance(checkpoint.get("rng_torch"), torch.Tensor):
            torch.set_rng_state(checkpoint["rng_torch"])


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy, accuracy) over the targets where `mask` and a class fits."""
    keep = mask & (target >= 0)
    logits, target = logits[keep], target[keep]
    if target.numel() == 0:
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    loss = F.cross_entropy(logits.float(), target)
    return loss, (logits.argmax(-1) == target).float().mean()


def split_samples(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) store sample indices, each sorted; chosen by `seed`."""
    n_val = 0 if val_fraction <= 0 else max(1, round(val_fraction * n))
    if n_val >= n:
        raise UsageError(f"val_fraction {val_fraction} leaves no training samples of {n}")
    perm = np.random.default_rng([seed, 7]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@dataclass
class PretrainResult:
    run_dir: Path
    best: Path
    last: Path
    epochs: int
    best_score: float | None
    rank: int = 0  # global rank of this process in a distributed run


def pretrain(
    store: Store,
    run_dir: str | os.PathLike,
    task: str | None = None,
    params: Params | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    accelerator: str = "auto",
    devices: int | str = "auto",
    max_time: str | None = None,
    callbacks: list | None = None,
    num_nodes: int = 1,
    strategy: str = "auto",
    init: str | os.PathLike | None = None,
    memory: str | int | None = None,
) -> PretrainResult:
    """Pretrain a GPerceiver on `store`; checkpoints and metrics go to `run_dir`.

    `init`: a checkpoint whose weights (and whole architecture) the run starts from,
    a fresh run otherwise (the original tool's --checkpoint).

    `max_time` ("DD:HH:MM:SS") bounds the wall time; `callbacks` are extra
    Lightning callbacks (benchmarks use them to time epochs). `devices`,
    `num_nodes` and `strategy` ("ddp") train data-parallel (see `engine`).
    `memory`: a budget ("2GB"; default: half the free memory) that sizes the loader's
    shuffle buffer and prefetched batches (`gperceiver.memory`).
    """
    flush_denormals()
    params = params or Params()
    budget = budget_bytes(memory)
    store = resolve(store)  # opened once, for both loaders
    ds = store.ds
    start = start_params = None
    if init is not None:
        start, start_info, _ = load_model(init)
        start_info.check_store(ds, store_name(store))
        start_params = start_info.params
    task = task or ("contrastive" if params.contrastive else "masked")
    if task not in PRETRAIN_TASKS:
        raise UsageError(f"unknown pretraining task '{task}' (one of {', '.join(PRETRAIN_TASKS)})")
    params = model_params(params, store, task, budget, start_params, str(init))
    run_dir = Path(run_dir)
    info = ModelInfo.from_store(ds, params, task)
    last, resume_epoch = engine.start_run(
        run_dir, info, resume=resume, force=force, accelerator=accelerator, devices=devices,
        num_nodes=num_nodes, strategy=strategy)

    L.seed_everything(params.seed, workers=True, verbose=False)
    model = build_model(info)
    if start is not None and resume_epoch is None:
        # the start may come from another task: a decoder it lacks starts fresh
        model.load_weights(start.state_dict(), fresh_decoders=True)
    module = PretrainModule(model, info)
    train_idx, val_idx = split_samples(int(ds.sizes[schema.SAMPLES]), params.val_fraction,
                                       params.seed)
    common = dict(batch_size=params.batch_size, num_workers=params.num_workers,
                  prop_x=params.prop_x, input_window=params.model.input_window,
                  prop_y=params.prop_y, frequency_scaler=params.frequency_scaler, seed=params.seed)
    train_loader = make_loader(store, task, samples=train_idx, shuffle=True, memory=budget,
                               **common)
    announce(train_loader.plan, memory is not None)
    val_loader = None
    if len(val_idx):
        val_loader = make_loader(store, task, samples=val_idx, shuffle=False, **common)
        module.loaders["val"] = val_loader
    module.loaders["train"] = train_loader
    train_loader.set_epoch(0 if resume_epoch is None else resume_epoch + 1)
    monitor = "val_loss" if val_loader is not None else "train_loss"
    trainer = engine.make_trainer(run_dir, params, monitor=monitor, progress=progress,
                                  accelerator=accelerator, devices=devices,
                                  resume_epoch=resume_epoch, max_time=max_time,
                                  callbacks=callbacks, num_nodes=num_nodes, strategy=strategy)
    if params.model.input_window and trainer.world_size == 1:
        # a step reads one window of loci: update those rows of the per-locus tables
        # alone (LazyAdamW), not every locus of the panel. One process only: DDP
        # would reduce sparse gradients as dense ones.
        model.sparse_tables()
    engine.fit(trainer, module, train_loader, val_loader, last)
    best_cb = trainer.checkpoint_callback
    score = best_cb.best_model_score if best_cb is not None else None
    return PretrainResult(
        run_dir=run_dir, best=run_dir / engine.BEST, last=run_dir / engine.LAST,
        epochs=trainer.current_epoch, best_score=None if score is None else float(score),
        rank=trainer.global_rank,
    )
