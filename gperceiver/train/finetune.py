"""Finetuning: predict phenotypes of every block in one pass, from scratch or pretrained.

`fit(store, phenotypes, run_dir, params)` reads the phenotype TSV aligned to the
store, splits training and validation rows (`cv`), streams genotypes with the
loader's "phenotype" task and trains a GPerceiver with a finetuning head through
the shared Trainer (`engine`). RUN_DIR gets best.ckpt, last.ckpt, metrics.csv,
params.json, and then predictions.tsv and metrics.json from the best weights,
the same files as `baseline` writes.

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

from gperceiver.atomic import atomic_output
from gperceiver.data.loader import make_loader
from gperceiver.data.phenotypes import held_out_split, read_phenotypes, responses, split_masks
from gperceiver.embed import checkpoint_path, encode_latents
from gperceiver.errors import InputFormatError, UsageError
from gperceiver.linear import LinearPath, fit_linear
from gperceiver.metrics import evaluate
from gperceiver.model.heads import FinetuneHead, head_loss
from gperceiver.outputs import (
    BLOCKS_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    predictions_dataset,
    write_blocks,
    write_metrics,
    write_predictions,
)
from gperceiver.plots import plot_path
from gperceiver.progress import progress_bar
from gperceiver.store import open_view, schema, store_name
from gperceiver.train import engine
from gperceiver.train.checkpoint import (
    KEY,
    ModelInfo,
    build_model,
    load_checkpoint,
    load_model,
    take_architecture,
)
from gperceiver.train.params import Params
from gperceiver.train.pretrain import configure_adamw, resolve_params

FINETUNE_KEY = "gperceiver_finetune"


@dataclass
class Target:
    """How responses map to the head's outputs and back, per block."""

    objective: str
    n_blocks: int
    n_classes: int
    mean: np.ndarray  # (n_blocks,) regression centring (0 otherwise)
    scale: np.ndarray  # (n_blocks,) regression scaling (1 otherwise)
    blocks: list | None = None  # the phenotype file's block labels, output by output

    def __post_init__(self) -> None:
        if self.blocks is None:
            self.blocks = list(range(self.n_blocks))

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "n_blocks": self.n_blocks,
                "n_classes": self.n_classes, "mean": torch.as_tensor(self.mean),
                "scale": torch.as_tensor(self.scale), "blocks": list(self.blocks)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        return cls(str(d["objective"]), int(d["n_blocks"]), int(d["n_classes"]),
                   np.asarray(d["mean"], np.float64), np.asarray(d["scale"], np.float64),
                   d.get("blocks"))


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


def build_head(params: Params, target: Target) -> FinetuneHead:
    return FinetuneHead(params.head, params.model.latent_dim, params.model.feedforward_dim,
                        target.n_blocks, target.objective, target.n_classes)


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
class FitResult:
    run_dir: Path
    best: Path
    metrics: dict[str, Any]
    predictions: xr.Dataset


def fit(
    store: str | os.PathLike | xr.Dataset,
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
) -> FitResult:
    """Finetune on `phenotypes` and write predictions and metrics into `run_dir`.

    Predictions are made for the lines with a phenotype (any block, any fold), or with
    `predict_all` for every sample of the store (`predict` does the rest later).

    `cv=K`: fold K is the validation set (the original tool's meaning: it drives
    early stopping, so its figures are not held out). Otherwise a seeded
    `params.val_fraction` of the lines is the validation set and `test_fold=K`
    holds fold K out of everything, for metrics["test"].
    `devices`, `num_nodes` and `strategy` ("ddp") train data-parallel (see
    `engine`); then global rank 0 alone predicts and writes the outputs.
    `callbacks` are extra Lightning callbacks.
    """
    engine.flush_denormals()
    params = params or Params()
    if ranking_weight < 0:
        raise UsageError(f"--ranking-weight must be >= 0, got {ranking_weight}")
    if ranking_weight > 0 and params.objective == "multiclass":
        raise UsageError("--ranking-weight needs an ordered response (not multiclass)")
    if cv is not None and test_fold is not None:
        raise UsageError("--cv K (fold K is validation) and --test-fold K (fold K is never "
                         "seen) are two ways to hold out a fold: give one")
    ds = open_view(store)
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
    if not train_mask.any():
        raise InputFormatError(phenotypes, "no training rows left (all rows are validation)")

    encoder_state, latents = None, None
    if pretrained is not None:
        pretrained = checkpoint_path(pretrained)
        model, pre_info, _ = load_model(pretrained)
        pre_info.check_store(ds, store_name(store))
        params = take_architecture(params, pre_info.params, str(pretrained))
        encoder_state = model.state_dict()
        if params.linear and params.objective == "regression":
            # the marker path's latent kernel: the pretrained encoder's view of every line
            latents = encode_latents(model, store, batch_size=params.batch_size)
    params = resolve_params(params, ds, store_name(store))

    # the lines to predict: those with a phenotype, unless every sample is asked for
    wanted = None if predict_all else np.flatnonzero(~np.isnan(response).all(axis=1))
    train_rows = np.flatnonzero(train_mask.any(axis=1))
    # The linear marker-effect path is fitted first, in closed form, on the training
    # rows alone; the Perceiver learns what it leaves (its out-of-fold residuals).
    linear, offset = None, np.zeros_like(response)
    if params.linear and params.objective == "regression":
        linear, oof = fit_linear(ds, _masked(response, train_mask), train_rows, params.seed,
                                 latents=latents)
        linear_held = linear.predict(ds, latents, wanted)  # out of sample but on training lines
        offset = linear_held.copy()
        offset[train_rows] = np.where(np.isnan(oof), offset[train_rows], oof)
    target_response = response - offset
    target = make_target(params.objective, target_response, train_mask, str(phenotypes),
                         np.asarray(phenos["block"].values).tolist())

    run_dir = Path(run_dir)
    info = ModelInfo.from_store(ds, params, "fit")
    last, resume_epoch = engine.start_run(
        run_dir, info, resume=resume, force=force, accelerator=accelerator, devices=devices,
        num_nodes=num_nodes, strategy=strategy)
    if engine.is_main_process():  # this run's outputs replace an earlier run's
        for name in (PREDICTIONS_FILE, METRICS_FILE, BLOCKS_FILE):
            (run_dir / name).unlink(missing_ok=True)

    L.seed_everything(params.seed, workers=True, verbose=False)
    model = build_model(info)
    if encoder_state is not None:
        model.load_state_dict(encoder_state)
    module = FinetuneModule(model, build_head(params, target), info, target, ranking_weight)
    module.linear = linear
    set_trainable(module, freeze_encoder=freeze_encoder, freeze_latents=freeze_latents,
                  position_trainable=params.position_embed_trainable)

    common = dict(batch_size=params.batch_size, num_workers=params.num_workers,
                  prop_x=params.prop_x, seed=params.seed)
    train_loader = make_loader(
        store, "phenotype", samples=train_rows, shuffle=True,
        phenotypes=_masked(target_response, train_mask)[train_rows], **common)
    module.loaders["train"] = train_loader
    train_loader.set_epoch(0 if resume_epoch is None else resume_epoch + 1)
    val_loader = None
    if val_mask.any():
        val_rows = np.flatnonzero(val_mask.any(axis=1))
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
    if trainer.global_rank != 0:
        return FitResult(run_dir, run_dir / engine.BEST, {}, xr.Dataset())

    best = run_dir / engine.BEST
    best = best if best.is_file() else run_dir / engine.LAST
    predictor = Predictor.load(best)
    deep, probabilities = predictor.predict_encoder(store, progress=progress, samples=wanted)
    components, held = None, deep
    if linear is not None:
        # How much of the Perceiver's residual to add, per block: least squares on the
        # validation lines (their offsets are out-of-sample), within [0, 1].
        deep_scale = _deep_scale(target_response, deep, val_mask)
        held = linear_held + deep_scale * deep
        linear_only = linear_held
        if cv is None and val_mask.any():  # the validation lines join the final linear fit
            inner = [f.inner_mse for f in linear.fits]
            linear, _ = fit_linear(ds, _masked(response, train_mask | val_mask),
                                   np.flatnonzero((train_mask | val_mask).any(axis=1)),
                                   params.seed, out_of_fold_predictions=False,
                                   latents=latents)
            for fit_, mse in zip(linear.fits, inner, strict=True):
                fit_.inner_mse = mse
            linear_only = linear.predict(ds, latents, wanted)
        predicted = linear_only + deep_scale * deep
        save_linear(best, linear, deep_scale, encoder_state if linear.uses_latents else None)
        components = {
            "linear_interaction_theta": [f.theta for f in linear.fits],
            "linear_latent_phi": [f.phi for f in linear.fits],
            "linear_inner_cv_mse": [None if f.inner_mse is None else round(f.inner_mse, 5)
                                    for f in linear.fits],
            "perceiver_scale": [round(float(v), 4) for v in deep_scale],
            "linear_only": _evaluate_rows(phenos, linear_only, train_mask, test_mask),
        }
    else:
        predicted = deep
    preds = predictions_dataset(phenos, predicted, probabilities)
    held_preds = predictions_dataset(phenos, held, probabilities)
    metrics = {
        "objective": params.objective,
        "head": params.head,
        "linear": linear is not None,
        "store": store_name(store),
        "phenotypes": str(phenotypes),
        "cv": cv,
        "test_fold": test_fold,
        "pretrained": None if pretrained is None else str(pretrained),
        "frozen": {"encoder": bool(freeze_encoder), "latents": bool(freeze_latents)},
        "samples": len(sample_id),
        "variants": int(ds.sizes[schema.VARIANTS]),
        "lines": {"train": int(train_mask.any(axis=1).sum()),
                  "validation": int(val_mask.any(axis=1).sum()),
                  "test": int(test_mask.any(axis=1).sum())},
        "epochs": int(trainer.current_epoch),
        "best_checkpoint_score": _score(trainer),
        "train": _evaluate(params.objective, preds, train_mask),
        # before they joined the final linear fit, so these figures are held out
        "validation": (_evaluate(params.objective, held_preds, val_mask)
                       if val_mask.any() else None),
        "test": _evaluate(params.objective, preds, test_mask) if test_mask.any() else None,
        "components": components,
        "responses": responses(phenos),
    }
    if wanted is not None:
        preds = preds.isel(samples=wanted)
    write_blocks(preds, run_dir / BLOCKS_FILE, force=True)
    write_predictions(preds, run_dir / PREDICTIONS_FILE, force=True)
    write_metrics(metrics, run_dir / METRICS_FILE, force=True)
    plot_path(run_dir, cv=cv if cv is not None else test_fold, force=True)
    return FitResult(run_dir, best, metrics, preds)


def _deep_scale(residual: np.ndarray, deep: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Per block, the s in [0, 1] minimising |r - s d|^2 on the validation rows, where r
    and d are the residual and the Perceiver's output centred there (a constant shift
    of the Perceiver's output does not count)."""
    scale = np.ones(residual.shape[1])
    for b in range(residual.shape[1]):
        rows = val[:, b]
        if not rows.any():
            continue
        d = deep[rows, b] - deep[rows, b].mean()
        r = residual[rows, b] - residual[rows, b].mean()
        dd = float(d @ d)
        scale[b] = 0.0 if dd <= 0 else float(np.clip((r @ d) / dd, 0.0, 1.0))
    return scale


def save_linear(path: Path, linear: LinearPath, deep_scale: np.ndarray,
                latent_encoder: dict[str, torch.Tensor] | None = None) -> None:
    """Write the final linear path and the Perceiver's scale into a fit checkpoint, with
    the pretrained encoder whose latents the path reads (finetuning changes the other)."""
    ckpt = load_checkpoint(path)
    ckpt[FINETUNE_KEY]["linear"] = linear.to_dict()
    ckpt[FINETUNE_KEY]["deep_scale"] = torch.as_tensor(deep_scale)
    if latent_encoder is not None:
        ckpt[FINETUNE_KEY]["latent_encoder"] = latent_encoder
    with atomic_output(path, force=True) as tmp:
        torch.save(ckpt, tmp)


def _evaluate_rows(phenos: xr.Dataset, predicted: np.ndarray, train: np.ndarray,
                   test: np.ndarray) -> dict[str, Any]:
    preds = predictions_dataset(phenos, predicted)
    return {name: _evaluate("regression", preds, mask)
            for name, mask in (("train", train), ("test", test)) if mask.any()}


def _masked(response: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, response, np.nan).astype(np.float32)


def _score(trainer: L.Trainer) -> float | None:
    cb = trainer.checkpoint_callback
    score = getattr(cb, "best_model_score", None)
    return None if score is None else float(score)


def _evaluate(objective: str, preds: xr.Dataset, mask: np.ndarray) -> dict[str, Any]:
    mask_da = xr.DataArray(mask, dims=preds["observed"].dims, coords=preds["observed"].coords)
    return evaluate(objective, preds["observed"], preds["predicted"], mask_da,
                    preds.get("probability"))


# ---------------------------------------------------------------- prediction


class Predictor:
    """A finetuned model read back from a checkpoint, ready to predict a store."""

    def __init__(self, model: torch.nn.Module, head: FinetuneHead, info: ModelInfo,
                 target: Target, linear: LinearPath | None = None,
                 deep_scale: np.ndarray | None = None):
        self.model, self.head, self.info, self.target = model.eval(), head.eval(), info, target
        self.linear = linear
        self.deep_scale = np.ones(target.n_blocks) if deep_scale is None else deep_scale
        self.latent_model = None  # the pretrained encoder the linear path's latents come from

    @classmethod
    def load(cls, path: str | os.PathLike) -> Predictor:
        """From a fit checkpoint, or a run folder holding best.ckpt (else last.ckpt)."""
        path = checkpoint_path(path)
        model, info, ckpt = load_model(path)
        meta = ckpt.get(FINETUNE_KEY)
        if not isinstance(meta, dict):
            raise InputFormatError(path, "not a finetuned model (no prediction head): "
                                   "run `gperceiver fit` first, or use it as --pretrained")
        target = Target.from_dict(meta)
        head = build_head(info.params.replace(head=str(meta["head"])), target)
        state = {k[len("head."):]: v for k, v in ckpt["state_dict"].items()
                 if k.startswith("head.")}
        try:
            head.load_state_dict(state)
        except RuntimeError as e:
            raise InputFormatError(
                path, f"head weights do not fit: {str(e).splitlines()[0]}") from None
        linear = LinearPath.from_dict(meta["linear"]) if "linear" in meta else None
        scale = meta.get("deep_scale")
        predictor = cls(model, head, info, target, linear,
                        None if scale is None else np.asarray(scale, np.float64))
        if "latent_encoder" in meta:
            predictor.latent_model = build_model(info)
            predictor.latent_model.load_state_dict(meta["latent_encoder"])
        return predictor

    def predict(self, store: str | os.PathLike | xr.Dataset, *, batch_size: int | None = None,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(predicted (samples, blocks), probabilities (samples, blocks, classes) or None).

        With a linear path: its prediction plus the Perceiver's, scaled per block.
        """
        ds = open_view(store)
        self.info.check_store(ds, store_name(store))
        deep, probs = self.predict_encoder(store, batch_size=batch_size, progress=progress)
        if self.linear is None:
            return deep, probs
        latents = None
        if self.linear.uses_latents:
            latents = encode_latents(self.latent_model, store,
                                     batch_size=batch_size or self.info.params.batch_size)
        return self.linear.predict(ds, latents) + self.deep_scale * deep, probs

    @torch.no_grad()
    def predict_encoder(self, store: str | os.PathLike | xr.Dataset, *,
                        batch_size: int | None = None,
                        progress: bool = True, samples: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray | None]:
        """The Perceiver's own outputs for every sample of `store` (or those at `samples`,
        the others NaN), as `predict` returns them."""
        engine.reuse_freed_memory()
        n = int(open_view(store).sizes[schema.SAMPLES])
        p = self.info.params
        # every sample, here: also after a DDP fit, whose process group is still up
        size = p.batch_size if batch_size is None else batch_size  # 0 is refused, not default
        loader = make_loader(store, "plain", batch_size=size, shuffle=False, prop_x=1.0,
                             seed=p.seed, rank=0, world_size=1, samples=samples)
        objective, scale, mean = self.target.objective, self.target.scale, self.target.mean
        predicted = np.full((n, self.target.n_blocks), np.nan, np.float32)
        probs = None
        if objective != "regression":
            probs = np.full((n, self.target.n_blocks, self.target.n_classes), np.nan, np.float32)
        bar = progress_bar(n if samples is None else len(samples), "predict", "samples",
                           progress)
        for batch in loader:
            out = self.head(self.model, batch["x_alleles"], batch["x_index"]).float()
            rows = batch["sample_index"].numpy()
            if objective == "regression":
                predicted[rows] = out[..., 0].numpy() * scale + mean
            else:
                prob = class_probabilities(objective, out)
                probs[rows] = prob.numpy()
                predicted[rows] = (prob[..., 1] if objective == "binary"
                                   else prob.argmax(-1).float()).numpy()
            bar.update(len(rows))
        bar.close()
        return predicted, probs


def class_probabilities(objective: str, out: torch.Tensor) -> torch.Tensor:
    """(B, blocks, classes) probabilities from a head's outputs."""
    if objective == "binary":
        p1 = torch.sigmoid(out[..., 0])
        return torch.stack([1 - p1, p1], -1)
    if objective == "multiclass":
        return torch.softmax(out, -1)
    # ordinal: out[..., k] = logit P(y > k); P(y = k) = P(y > k - 1) - P(y > k)
    above = torch.sigmoid(out)
    ones = torch.ones_like(above[..., :1])
    upper = torch.cat([ones, above], -1)
    lower = torch.cat([above, torch.zeros_like(ones)], -1)
    prob = (upper - lower).clamp(min=0)
    return prob / prob.sum(-1, keepdim=True).clamp(min=1e-12)


def predict(
    model: str | os.PathLike, store: str | os.PathLike | xr.Dataset,
    output: str | os.PathLike | None = None,
    *, batch_size: int | None = None, force: bool = False, progress: bool = True,
) -> xr.Dataset:
    """Predict every sample of `store` for every block; write a TSV when `output` is given.

    Returns a Dataset (samples, blocks) with `predicted` (and `probability`).
    """
    predictor = Predictor.load(model)
    predicted, probs = predictor.predict(store, batch_size=batch_size, progress=progress)
    ds = open_view(store)
    out = xr.Dataset(
        {"predicted": (("samples", "blocks"), predicted)},
        coords={"sample_id": ("samples", [str(s) for s in ds["sample_id"].values.tolist()]),
                "block": ("blocks", np.asarray(predictor.target.blocks))},
    )
    if probs is not None:
        out["probability"] = (("samples", "blocks", "classes"), probs)
        out = out.assign_coords({"class": ("classes", np.arange(probs.shape[-1]))})
    if output is not None:
        write_prediction_table(out, output, force)
    return out


def prediction_table(preds: xr.Dataset):
    """Rows `name block predicted [prob_k ...]`, block by block, samples in store order."""
    import pandas as pd

    n, k = preds.sizes["samples"], preds.sizes["blocks"]
    table = pd.DataFrame({
        "name": np.tile(preds["sample_id"].values.astype(object), k),
        "block": np.repeat(preds["block"].values, n),
        "predicted": preds["predicted"].values.T.ravel(),
    })
    if "probability" in preds:
        probs = preds["probability"].values.transpose(1, 0, 2).reshape(n * k, -1)
        for c in range(probs.shape[1]):
            table[f"prob_{c}"] = probs[:, c]
    return table


def write_prediction_table(preds: xr.Dataset, output: str | os.PathLike, force: bool) -> Path:
    with atomic_output(output, force) as tmp:
        prediction_table(preds).to_csv(tmp, sep="\t", index=False, float_format="%.7g")
    return Path(output)
