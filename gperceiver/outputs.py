"""The result files every predicting command writes: predictions.tsv and metrics.json.

`fit`, `predict` and `baseline` share them so their results sit side by side:

- predictions.tsv: one row per (block, sample), columns `name block cv observed
  predicted` and, when classifying, one `prob_<class>` column per class; empty
  cells where a sample has no observation or no fold;
- metrics.json: a JSON object (see `metrics.evaluate`), NaN written as null.

Both are written atomically (a temporary sibling renamed into place).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gperceiver.atomic import atomic_output
from gperceiver.data.phenotypes import NO_CV, block_table
from gperceiver.inputs import numeric_column, read_tsv
from gperceiver.store.schema import BLOCKS, PREDICTION_VARIABLES, SAMPLES

PREDICTIONS_FILE = "predictions.tsv"
METRICS_FILE = "metrics.json"
BLOCKS_FILE = "blocks.tsv"  # which phenotype block each output column is


def predictions_dataset(
    phenos: xr.Dataset,
    predicted: np.ndarray | xr.DataArray,
    probabilities: np.ndarray | xr.DataArray | None = None,
    classes: Sequence[Any] | None = None,
) -> xr.Dataset:
    """Predictions (samples, blocks) next to the observations and folds of `phenos`.

    `probabilities` (samples, blocks, classes), when classifying; `classes` labels
    its last axis (default 0..k-1). Dims and dtypes are `schema.PREDICTION_VARIABLES`'.
    """
    predicted = _declared("predicted", predicted)[1]
    ds = prediction_values(phenos["sample_id"].values, phenos["block"].values, predicted,
                           probabilities, classes)
    ds = ds.assign(observed=phenos["response"], cv=phenos["cv"])
    return ds.assign_coords(phenos.coords).assign_attrs(phenos.attrs)[
        ["observed", "cv", *[v for v in ds.data_vars if v not in ("observed", "cv")]]]


def prediction_values(
    sample_id: Sequence[Any],
    blocks: Sequence[Any],
    predicted: np.ndarray | xr.DataArray,
    probabilities: np.ndarray | xr.DataArray | None = None,
    classes: Sequence[Any] | None = None,
) -> xr.Dataset:
    """Predictions (samples, blocks) of the named samples and blocks alone (lines without
    phenotypes, as `predict` makes them), with `schema.PREDICTION_VARIABLES`' dims.
    `predicted` keeps its precision (`predict` writes it); `predictions_dataset` gives
    it the declared dtype, as predictions.tsv holds it."""
    declared = PREDICTION_VARIABLES
    ds = xr.Dataset(
        {"predicted": (declared["predicted"].dims, np.asarray(predicted))},
        coords={"sample_id": (declared["sample_id"].dims,
                              np.asarray([str(s) for s in sample_id])),
                "block": (declared["block"].dims, np.asarray(blocks))},
    )
    if probabilities is not None:
        dims, probs = _declared("probability", probabilities)
        labels = list(range(probs.shape[-1])) if classes is None else list(classes)
        ds["probability"] = (dims, probs)
        ds = ds.assign_coords({"class": (declared["class"].dims, labels)})
    return ds


def _declared(name: str, values: np.ndarray | xr.DataArray) -> tuple[tuple[str, ...], np.ndarray]:
    """(dims, values) of prediction variable `name`, as `PREDICTION_VARIABLES` declares."""
    var = PREDICTION_VARIABLES[name]
    return var.dims, np.asarray(values, dtype=var.dtype)


def predictions_table(preds: xr.Dataset) -> pd.DataFrame:
    """predictions.tsv's rows: block by block, samples in store order; `cv` and
    `observed` columns when `preds` holds them (not for lines predicted later)."""
    n_samples, n_blocks = preds.sizes[SAMPLES], preds.sizes[BLOCKS]
    names = np.array([str(s) for s in preds["sample_id"].values], dtype=object)
    columns = {"name": np.tile(names, n_blocks),
               "block": np.repeat(np.asarray(preds["block"].values), n_samples)}
    if "cv" in preds:
        cv = preds["cv"].values.T.ravel()
        columns["cv"] = pd.array(np.where(cv == NO_CV, None, cv), dtype="Int64")
    if "observed" in preds:
        columns["observed"] = preds["observed"].values.T.ravel()
    columns["predicted"] = preds["predicted"].values.T.ravel()
    table = pd.DataFrame(columns)
    if "probability" in preds:
        probs = preds["probability"].values.transpose(1, 0, 2).reshape(n_blocks * n_samples, -1)
        for k, label in enumerate(preds["class"].values):
            table[f"prob_{label}"] = probs[:, k]
    return table


def print_predictions(preds: xr.Dataset, out) -> None:
    """predictions.tsv's text into `out` (a path or an open text file, e.g. stdout)."""
    predictions_table(preds).to_csv(out, sep="\t", index=False, na_rep="", float_format="%.7g")


def write_predictions(
    preds: xr.Dataset, path: str | os.PathLike, force: bool = False
) -> Path:
    """Write predictions.tsv atomically; return its path."""
    with atomic_output(path, force) as tmp:
        print_predictions(preds, tmp)
    return Path(path)


PREDICTION_COLUMNS = ("name", "block", "observed", "predicted")


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """`predictions.tsv` (name, block, [cv,] observed, predicted, ...); unobserved rows kept."""
    path = Path(path)
    table = read_tsv(path, "predictions file", PREDICTION_COLUMNS, dtype={"name": str})
    numbers = pd.to_numeric(table["block"], errors="coerce")  # integers or names, as the
    integral = numbers.notna().all() and (numbers == numbers.round()).all()  # phenotypes had
    table["block"] = numbers.astype(int) if integral else table["block"].astype(str)
    table["predicted"] = numeric_column(path, table, "predicted", allow_empty=False)
    table["observed"] = numeric_column(path, table, "observed", allow_empty=True)
    if "cv" in table.columns:
        table["cv"] = pd.to_numeric(table["cv"], errors="coerce")
    return table


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(metrics: dict[str, Any], path: str | os.PathLike, force: bool = False) -> Path:
    """Write metrics.json atomically (NaN as null); return its path."""
    with atomic_output(path, force) as tmp:
        tmp.write_text(json.dumps(_plain(metrics), indent=2, allow_nan=False) + "\n")
    return Path(path)


def write_run(
    out_dir: str | os.PathLike, preds: xr.Dataset, metrics: dict[str, Any], force: bool = False
) -> Path:
    """Write a folder holding predictions.tsv and metrics.json, atomically as a whole."""
    with atomic_output(out_dir, force) as tmp:
        tmp.mkdir()
        write_predictions(preds, tmp / PREDICTIONS_FILE)
        write_metrics(metrics, tmp / METRICS_FILE)
        write_blocks(preds, tmp / BLOCKS_FILE)
    return Path(out_dir)


def write_blocks(preds: xr.Dataset, path: str | os.PathLike, force: bool = False) -> Path:
    """Write blocks.tsv (`output block`: the phenotype file's label of each block)."""
    with atomic_output(path, force) as tmp:
        tmp.write_text(block_table(preds))
    return Path(path)
