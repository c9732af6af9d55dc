"""`fit`: finetune, predict, score, write the files and draw the pictures, in that order.

RUN_DIR ends with what `finetune` leaves (best.ckpt, last.ckpt, metrics.csv,
params.json) plus predictions.tsv, metrics.json and blocks.tsv from the best
weights (the same files `baseline` writes) and the pictures of `plots.plot_path`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from gperceiver.data.phenotypes import responses
from gperceiver.metrics import evaluate
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
from gperceiver.predict import Predictor
from gperceiver.runtime import release_freed_memory
from gperceiver.store import Store, schema, store_name
from gperceiver.train.finetune import finetune
from gperceiver.train.params import Params


@dataclass
class FitResult:
    """Where the run is, its best checkpoint, metrics.json's content and the predictions."""

    run_dir: Path
    best: Path
    metrics: dict[str, Any]
    predictions: xr.Dataset


def fit(
    store: Store,
    phenotypes: str | os.PathLike,
    run_dir: str | os.PathLike,
    params: Params | None = None,
    *,
    predict_all: bool = False,
    progress: bool = True,
    **training: Any,
) -> FitResult:
    """Finetune on `phenotypes` and write predictions and metrics into `run_dir`.

    Predictions are made for the lines with a phenotype (any block, any fold), or with
    `predict_all` for every sample of the store (`predict` does the rest later).
    `training`: `finetune`'s keyword options, passed on (pretrained, cv, test_fold,
    freeze_encoder, freeze_latents, ranking_weight, resume, force, accelerator,
    devices, num_nodes, strategy, callbacks, memory). With `cv=K`, fold K is the
    validation set; with `test_fold=K` it is never seen, and metrics["test"] reports
    it. After a distributed run, global rank 0 alone predicts and writes.
    """
    done = finetune(store, phenotypes, run_dir, params, predict_all=predict_all,
                    progress=progress, replaces=(PREDICTIONS_FILE, METRICS_FILE, BLOCKS_FILE),
                    **training)
    if not done.main:
        return FitResult(done.run_dir, done.best, {}, xr.Dataset())
    store = done.store  # as finetune opened it: training, prediction and the report share it
    ds, wanted = store.ds, done.rows

    release_freed_memory()  # what finetuning's last steps freed
    result = Predictor.load(done.best).predict(store, samples=wanted, progress=progress,
                                               latents=done.latents,
                                               memory=training.get("memory"))
    objective = done.params.objective
    preds = predictions_dataset(done.phenos, result.predicted, result.probability)
    held = preds
    if done.validation_predictions is not None:
        held = predictions_dataset(done.phenos, done.validation_predictions, result.probability)
    components = done.components
    if components is not None:
        components = {**components, "linear_only": _evaluate_rows(
            done.phenos, result.linear, done.train, done.test)}
    metrics = {
        "objective": objective,
        "head": done.params.head,
        "linear": components is not None,
        "store": store_name(store),
        "phenotypes": str(phenotypes),
        "cv": done.cv,
        "test_fold": done.test_fold,
        "pretrained": None if done.pretrained is None else str(done.pretrained),
        "frozen": done.frozen,
        "samples": int(ds.sizes[schema.SAMPLES]),
        "variants": int(ds.sizes[schema.VARIANTS]),
        "lines": {"train": int(done.train.any(axis=1).sum()),
                  "validation": int(done.validation.any(axis=1).sum()),
                  "test": int(done.test.any(axis=1).sum())},
        "epochs": done.epochs,
        "best_checkpoint_score": done.best_score,
        "train": _evaluate(objective, preds, done.train),
        # before they joined the final linear fit, so these figures are held out
        "validation": (_evaluate(objective, held, done.validation)
                       if done.validation.any() else None),
        "test": _evaluate(objective, preds, done.test) if done.test.any() else None,
        "components": components,
        "responses": responses(done.phenos),
    }
    if wanted is not None:
        preds = preds.isel(samples=wanted)
    write_blocks(preds, done.run_dir / BLOCKS_FILE, force=True)
    write_predictions(preds, done.run_dir / PREDICTIONS_FILE, force=True)
    write_metrics(metrics, done.run_dir / METRICS_FILE, force=True)
    plot_path(done.run_dir, cv=done.cv, test_fold=done.test_fold, force=True)
    return FitResult(done.run_dir, done.best, metrics, preds)


def _evaluate(objective: str, preds: xr.Dataset, mask: np.ndarray) -> dict[str, Any]:
    mask_da = xr.DataArray(mask, dims=preds["observed"].dims, coords=preds["observed"].coords)
    return evaluate(objective, preds["observed"], preds["predicted"], mask_da,
                    preds.get("probability"))


def _evaluate_rows(phenos: xr.Dataset, predicted: np.ndarray, train: np.ndarray,
                   test: np.ndarray) -> dict[str, Any]:
    preds = predictions_dataset(phenos, predicted)
    return {name: _evaluate("regression", preds, mask)
            for name, mask in (("train", train), ("test", test)) if mask.any()}
