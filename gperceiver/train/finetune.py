"""Finetuning: train a GPerceiver on the phenotypes of every block in one pass.

`finetune(store, phenotypes, run_dir, params)` reads the phenotype TSV aligned to
the store, splits training, validation and test rows, fits the marker path
(`linear`), streams genotypes with the loader's "phenotype" task and trains a
GPerceiver with a finetuning head through the shared Trainer (`engine`). It
leaves best.ckpt, last.ckpt, metrics.csv and params.json in RUN_DIR and returns
what prediction and reporting need (`gperceiver.fit` runs them).

Regression responses are standardised per block on the training rows (and
predictions mapped back), so one learning rate suits every trait. Each sample's
prediction depends on that sample alone: the heads never mix a batch's samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from gperceiver.data.loader import make_loader
from gperceiver.data.phenotypes import (
    held_out_split,
    one_held_out,
    read_phenotypes,
    require_training_rows,
    split_masks,
)
from gperceiver.encode import encode_latents, head_outputs
from gperceiver.errors import InputFormatError, UsageError
from gperceiver.linear import LinearPath, fit_linear
from gperceiver.memory import DOSAGE_SHARE, announce, budget_bytes
from gperceiver.model.heads import FinetuneHead, Target, build_head, head_loss
from gperceiver.runtime import flush_denormals, release_freed_memory
from gperceiver.store import Store, StoreView, resolve, store_name
from gperceiver.train import engine
from gperceiver.train.architecture import model_params
from gperceiver.train.checkpoint import (
    FINETUNE_KEY,
    KEY,
    ModelInfo,
    build_model,
    checkpoint_path,
    load_checkpoint,
    load_model,
    write_checkpoint,
)
from gperceiver.train.optimiser import configure_adamw
from gperceiver.train.params import Params


def make_target(objective: str, response: np.ndarray, train: np.ndarray, where: str,
                blocks: list | None = None) -> Target:
    """Check responses fit the objective; regression scaling from the training rows."""
    n_blocks = response.shape[1]
    observed = response[~np.isnan(response)]
    mean, scale = np.zeros(n_blocks), np.ones(n_blocks)
    n_classes = 2
    if objective == "regression":
        for b in range(n_blocks):
            y = response[train[:, b], b]
            if len(y):
                mean[b] = y.mean()
                scale[b] = y.std() if len(y) > 1 and y.std() > 0 else 1.0
    else:
        bad = observed[(observed != np.round(observed)) | (observed < 0)]
        if len(bad):
            raise InputFormatError(where, f"response {bad[0]:g} is not a class number "
                                   f"(0, 1, ...) for the {objective} objective", column="response")
        n_classes = int(observed.max()) + 1 if len(observed) else 2
        if objective == "binary" and n_classes > 2:
            raise InputFormatError(where, f"response {n_classes - 1} is not 0 or 1 for the "
                                   "binary objective", column="response")
        n_classes = max(n_classes, 2)
    return Target(objective, n_blocks, n_classes, mean, scale, blocks)


class FinetuneModule(L.LightningModule):
    """A GPerceiver encoder, a finetuning head, and the masked phenotype loss."""

    def __init__(self, model: torch.nn.Module, head: FinetuneHead, info: ModelInfo,
                 target: Target, ranking_weight: float = 0.0):
        super().__init__()
        self.model, self.head, self.info, self.target = model, head, info, target
        self.ranking_weight = ranking_weight
        self.register_buffer("mean", torch.as_tensor(target.mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(target.scale, dtype=torch.float32))
        self.loaders: dict[str, Any] = {}
        self.linear: LinearPath | None = None  # fitted before training, saved with it

    def forward(self, x_alleles: torch.Tensor, x_index: torch.Tensor) -> torch.Tensor:
        return self.head(self.model, x_alleles, x_index)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self(batch["x_alleles"], batch["x_index"])
        y, mask = batch["y"], batch["y_mask"]
        if self.target.objective == "regression":
            y = (y - self.mean) / self.scale
        loss = head_loss(self.target.objective, out.float(), y, mask)
        if self.ranking_weight > 0:
            loss = loss + self.ranking_weight * ranking_loss(out[..., 0].float(), y, mask)
        return loss

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=batch["y"].shape[0], sync_dist=True)  # DDP: over every rank
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(batch), on_epoch=True, prog_bar=True,
                 batch_size=batch["y"].shape[0], sync_dist=True)

    def configure_optimizers(self):
        return configure_adamw(self, self.info.params,
                               "val_loss" if "val" in self.loaders else "train_loss")

    def on_train_epoch_end(self) -> None:
        if "train" in self.loaders:
            self.loaders["train"].set_epoch(self.current_epoch + 1)

    def on_validation_epoch_end(self) -> None:
        if "val" in self.loaders:
            self.loaders["val"].set_epoch(0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[KEY] = self.info.to_dict()
        checkpoint[FINETUNE_KEY] = {**self.target.to_dict(), "head": self.head.kind,
                                    "ranking_weight": float(self.ranking_weight)}
        if self.linear is not None:
            checkpoint[FINETUNE_KEY]["linear"] = self.linear.to_dict()
        checkpoint["rng_torch"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if isinstance(checkpoint.get("rng_torch"), torch.Tensor):
            torch.set_rng_state(checkpoint["rng_torch"])


def ranking_loss(score: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pairwise logistic loss, per block, over observed pairs ordered by their response."""
    diff_y = y.unsqueeze(1) - y.unsqueeze(0)  # (B, B, blocks): y_i - y_j
    diff_s = score.unsqueeze(1) - score.unsqueeze(0)
    pair = mask.unsqueeze(1) & mask.unsqueeze(0) & (diff_y > 0)
    if not pair.any():
        return score.sum() * 0.0
    return F.softplus(-diff_s[pair]).mean()


def set_trainable(module: FinetuneModule, *, freeze_encoder: bool, freeze_latents: bool,
                  position_trainable: bool) -> None:
    """Apply the freezing flags: the head always trains."""
    model = module.model
    for p in model.parameters():
        p.requires_grad_(not freeze_encoder)
    if freeze_latents:
        model.latents.requires_grad_(False)
    for p in model.embed.position.parameters():
        p.requires_grad_(position_trainable and not freeze_encoder)


@dataclass
class Finetuned:
    """What a finetuning run leaves for prediction and its report (rank 0's; another
    rank of a distributed run gets `main` False and nothing else)."""

    run_dir: Path
    best: Path  # the checkpoint to predict with: best.ckpt, else last.ckpt
    main: bool = True
    store: StoreView | None = None  # the store as opened for training
    cv: int | None = None  # the fold that was validation (the original tool's --cv)
    test_fold: int | None = None  # the fold never seen
    frozen: dict[str, bool] | None = None  # {"encoder": ..., "latents": ...}
    params: Params | None = None  # as resolved (the store's alleles, a pretrained config)
    pretrained: Path | None = None
    phenos: xr.Dataset | None = None  # responses aligned to the store (read_phenotypes)
    rows: np.ndarray | None = None  # the rows to predict (None: every sample)
    train: np.ndarray | None = None  # (samples, blocks) masks of the rows in each role
    validation: np.ndarray | None = None
    test: np.ndarray | None = None
    epochs: int = 0
    best_score: float | None = None
    # held-out predictions of the validation rows (before they joined the final marker
    # path), when a marker path was fitted; the final predictions serve otherwise
    validation_predictions: np.ndarray | None = None
    components: dict[str, Any] | None = None  # the marker path's shares and the scale
    latents: np.ndarray | None = None  # the pretrained encoder's, for the marker path


def finetune(
    store: Store,
    phenotypes: str | os.PathLike,
    run_dir: str | os.PathLike,
    params: Params | None = None,
    *,
    pretrained: str | os.PathLike | None = None,
    cv: int | None = None,
    test_fold: int | None = None,
    freeze_encoder: bool = False,
    freeze_latents: bool = False,
    ranking_weight: float = 0.0,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    accelerator: str = "auto",
    devices: int | str = "auto",
    num_nodes: int = 1,
    strategy: str = "auto",
    callbacks: list | None = None,
    predict_all: bool = False,
    replaces: tuple[str, ...] = (),
    memory: str | int | None = None,
) -> Finetuned:
    """Train on `phenotypes` into `run_dir` (best.ckpt, last.ckpt, metrics.csv, params.json).

    `cv=K`: fold K is the validation set (the original tool's meaning: it drives
    early stopping, so its figures are not held out). Otherwise a seeded
    `params.val_fraction` of the lines is the validation set and `test_fold=K`
    holds fold K out of everything. With a marker path (regression, `params.linear`)
    the Perceiver's share is calibrated on the validation rows, the path refitted
    with them, and both saved into the best checkpoint, ready for
    `gperceiver.predict.Predictor`. The rows to predict (`Finetuned.rows`) are those
    with a phenotype, or with `predict_all` every sample.
    `devices`, `num_nodes` and `strategy` ("ddp") train data-parallel (see
    `engine`). `callbacks` are extra Lightning callbacks. `replaces`: files of an
    earlier run in RUN_DIR that this run's outputs replace (removed once it starts).
    `memory`: a budget ("2GB"; default: half the free memory) that sizes the loader's
    shuffle buffer and prefetched batches, a new model's per-locus tables and what
    the marker path's genotypes may take (`gperceiver.memory`).
    """
    flush_denormals()
    params = params or Params()
    budget = budget_bytes(memory)
    if ranking_weight < 0:
        raise UsageError(f"--ranking-weight must be >= 0, got {ranking_weight}")
    if ranking_weight > 0 and params.objective == "multiclass":
        raise UsageError("--ranking-weight needs an ordered response (not multiclass)")
    one_held_out(cv, test_fold)
    store = resolve(store)  # opened once: the marker path, both loaders, calibration
    ds = store.ds
    sample_id = [str(s) for s in ds["sample_id"].values.tolist()]
    phenos = read_phenotypes(phenotypes, sample_id, cv=cv)
    if cv is not None:
        train_mask, val_mask = (np.asarray(m.values, bool) for m in split_masks(phenos))
        test_mask = np.zeros_like(train_mask)
    else:
        train_mask, val_mask, test_mask = held_out_split(
            phenos, test_fold, params.val_fraction, params.seed)
    if params.objective != "regression" and phenos.attrs["replicated_means"]:
        raise InputFormatError(
            phenotypes, f"replicate rows are averaged per line and block, which only "
            f"regression can use; give one row per line and block for {params.objective}",
            column="name")
    response = phenos["response"].values.astype(np.float64)
    require_training_rows(train_mask, phenotypes)

    encoder_state, latents, pre_params = None, None, None
    if pretrained is not None:
        pretrained = checkpoint_path(pretrained)
        model, pre_info, _ = load_model(pretrained)
        pre_info.check_store(ds, store_name(store))
        pre_params, encoder_state = pre_info.params, model.encoder_weights()
        if params.linear and params.objective == "regression":
            # the marker path's latent kernel: the pretrained encoder's view of every line
            latents = encode_latents(model, store, batch_size=params.batch_size,
                                     progress=progress)
    params = model_params(params, store, "fit", budget, pre_params, str(pretrained))

    # the lines to predict: those with a phenotype, unless every sample is asked for
    rows = None if predict_all else np.flatnonzero(~np.isnan(response).all(axis=1))
    train_rows = np.flatnonzero(train_mask.any(axis=1))
    # The linear marker-effect path is fitted first, in closed form, on the training
    # rows alone; the Perceiver learns what it leaves (its out-of-fold residuals).
    linear, offset = None, np.zeros_like(response)
    if params.linear and params.objective == "regression":
        linear, oof = fit_linear(ds, _masked(response, train_mask), train_rows, params.seed,
                                 latents=latents, max_bytes=int(DOSAGE_SHARE * budget),
                                 progress=progress)
        # out of sample on the other lines; on training lines, in sample
        linear_held = linear.predict(ds, latents, rows, progress)
        offset = linear_held.copy()
        offset[train_rows] = np.where(np.isnan(oof), offset[train_rows], oof)
        release_freed_memory()  # the marker path's kernels and slabs
    target_response = response - offset
    target = make_target(params.objective, target_response, train_mask, str(phenotypes),
                         np.asarray(phenos["block"].values).tolist())

    run_dir = Path(run_dir)
    info = ModelInfo.from_store(ds, params, "fit")
    last, resume_epoch = engine.start_run(
        run_dir, info, resume=resume, force=force, accelerator=accelerator, devices=devices,
        num_nodes=num_nodes, strategy=strategy)
    if engine.is_main_process():  # this run's outputs replace an earlier run's
        for name in replaces:
            (run_dir / name).unlink(missing_ok=True)

    L.seed_everything(params.seed, workers=True, verbose=False)
    model = build_model(info)
    if encoder_state is not None:
        model.load_weights(encoder_state)
    module = FinetuneModule(model, build_head(params.head, params.model, target), info, target,
                            ranking_weight)
    module.linear = linear
    set_trainable(module, freeze_encoder=freeze_encoder, freeze_latents=freeze_latents,
                  position_trainable=params.position_embed_trainable)

    common = dict(batch_size=params.batch_size, num_workers=params.num_workers,
                  prop_x=params.prop_x, seed=params.seed)
    train_loader = make_loader(
        store, "phenotype", samples=train_rows, shuffle=True, memory=budget,
        phenotypes=_masked(target_response, train_mask)[train_rows], **common)
    announce(train_loader.plan, memory is not None)
    module.loaders["train"] = train_loader
    train_loader.set_epoch(0 if resume_epoch is None else resume_epoch + 1)
    val_loader = None
    val_rows = np.flatnonzero(val_mask.any(axis=1))
    if len(val_rows):
        val_loader = make_loader(
            store, "phenotype", samples=val_rows, shuffle=False,
            phenotypes=_masked(target_response, val_mask)[val_rows], **common)
        module.loaders["val"] = val_loader
    monitor = "val_loss" if val_loader is not None else "train_loss"
    trainer = engine.make_trainer(run_dir, params, monitor=monitor, progress=progress,
                                  accelerator=accelerator, devices=devices,
                                  resume_epoch=resume_epoch, num_nodes=num_nodes,
                                  strategy=strategy, callbacks=callbacks)
    engine.fit(trainer, module, train_loader, val_loader, last)
    best = checkpoint_path(run_dir)
    main, epochs, best_score = trainer.global_rank == 0, int(trainer.current_epoch), \
        _score(trainer)
    # The trainer, its optimiser state, the gradients and the loaders' shuffle buffers
    # go back before calibration and the marker path's refit (at a million markers the
    # optimiser alone holds twice the per-locus tables).
    del trainer, train_loader, val_loader
    engine.release(module)
    if not main:
        return Finetuned(run_dir, best, main=False)

    done = Finetuned(run_dir, best, store=store, cv=cv, test_fold=test_fold,
                     frozen={"encoder": bool(freeze_encoder), "latents": bool(freeze_latents)},
                     params=params, pretrained=pretrained,
                     phenos=phenos, rows=rows, train=train_mask, validation=val_mask,
                     test=test_mask, epochs=epochs, best_score=best_score, latents=latents)
    if linear is None:
        return done
    # How much of the Perceiver's residual to add, per block: least squares on the
    # validation lines (their offsets are out-of-sample), within [0, 1], centred there.
    deep = None
    if len(val_rows):
        # the best weights (the file is mapped: its optimiser state is not read)
        module.load_state_dict(load_checkpoint(best, mmap=True)["state_dict"])
        outputs = head_outputs(module.model.eval(), module.head.eval(), store,
                               batch_size=params.batch_size, seed=params.seed,
                               samples=val_rows, progress=progress, label="calibrate")
        deep = target.regression_values(outputs)
        release_freed_memory()
    deep_scale, deep_shift = _calibration(target_response, deep, val_mask)
    if deep is not None:
        done.validation_predictions = linear_held + deep_scale * (deep - deep_shift)
    if cv is None and len(val_rows):  # the validation lines join the final linear fit
        inner = [f.inner_mse for f in linear.fits]
        linear, _ = fit_linear(ds, _masked(response, train_mask | val_mask),
                               np.flatnonzero((train_mask | val_mask).any(axis=1)),
                               params.seed, out_of_fold_predictions=False, latents=latents,
                               max_bytes=int(DOSAGE_SHARE * budget), progress=progress,
                               theta=linear.fit.theta)  # the inner folds' choice
        for fit_, mse in zip(linear.fits, inner, strict=True):
            fit_.inner_mse = mse
    save_linear(best, linear, deep_scale, deep_shift,
                encoder_state if linear.uses_latents else None)
    done.components = {
        "linear_interaction_theta": [f.theta for f in linear.fits],
        "linear_latent_phi": [f.phi for f in linear.fits],
        "linear_inner_cv_mse": [None if f.inner_mse is None else round(f.inner_mse, 5)
                                for f in linear.fits],
        "perceiver_scale": [round(float(v), 4) for v in deep_scale],
        "perceiver_shift": [round(float(v), 4) for v in deep_shift],
        "linear_genetic_correlation": [[None if np.isnan(v) else round(float(v), 4)
                                        for v in row]
                                       for row in linear.fit.genetic_correlation],
    }
    return done


def _calibration(residual: np.ndarray, deep: np.ndarray | None, val: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per block, the Perceiver's (scale, shift): the output d joins the marker path as
    s (d - c), c its mean on the validation rows and s in [0, 1] minimising |r - s d|^2
    there, r and d centred. The marker path keeps the intercept: a constant the Perceiver
    adds (an undertrained one does) would only cost RMSE. (1, 0) without validation rows."""
    scale, shift = np.ones(residual.shape[1]), np.zeros(residual.shape[1])
    for b in range(residual.shape[1]):
        rows = val[:, b]
        if deep is None or not rows.any():
            continue
        shift[b] = deep[rows, b].mean()
        d = deep[rows, b] - shift[b]
        r = residual[rows, b] - residual[rows, b].mean()
        dd = float(d @ d)
        scale[b] = 0.0 if dd <= 0 else float(np.clip((r @ d) / dd, 0.0, 1.0))
    return scale, shift


def save_linear(path: Path, linear: LinearPath, deep_scale: np.ndarray,
                deep_shift: np.ndarray,
                latent_encoder: dict[str, torch.Tensor] | None = None) -> None:
    """Write the final linear path and the Perceiver's scale and shift into the fit
    checkpoint at `path`, with the pretrained encoder whose latents the path reads
    (finetuning changes the other)."""
    ckpt = load_checkpoint(path, mmap=True)
    ckpt[FINETUNE_KEY]["linear"] = linear.to_dict()
    ckpt[FINETUNE_KEY]["deep_scale"] = torch.as_tensor(deep_scale)
    ckpt[FINETUNE_KEY]["deep_shift"] = torch.as_tensor(deep_shift)
    if latent_encoder is not None:
        ckpt[FINETUNE_KEY]["latent_encoder"] = latent_encoder
    write_checkpoint(ckpt, path)


def _masked(response: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, response, np.nan).astype(np.float32)


def _score(trainer: L.Trainer) -> float | None:
    cb = trainer.checkpoint_callback
    score = getattr(cb, "best_model_score", None)
    return None if score is None else float(score)
