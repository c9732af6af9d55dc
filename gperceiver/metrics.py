"""Prediction accuracy per block, for every objective, as plain JSON-ready dicts.

- regression: Pearson r and RMSE;
- binary: AUC and accuracy (threshold 0.5 on the probability of class 1);
- multiclass: accuracy and one-vs-rest macro AUC;
- ordinal: accuracy (most probable class) and Spearman correlation between the
  observed class and the expected class under the predicted probabilities.

A metric that is undefined on the rows given (fewer than two rows, a constant
prediction, a single observed class) is NaN; `outputs.write_metrics` writes NaN
as JSON null.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from scipy.stats import rankdata

from gperceiver.choices import OBJECTIVES


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN with fewer than two rows or a constant side."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    return float(np.sum(dx * dy) / denom) if denom > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    return pearson_r(rankdata(x), rankdata(y))


def rmse(observed: np.ndarray, predicted: np.ndarray) -> float:
    if len(observed) == 0:
        return float("nan")
    diff = np.asarray(observed, np.float64) - np.asarray(predicted, np.float64)
    return float(np.sqrt(np.mean(diff * diff)))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for boolean `labels` (Mann-Whitney, ties 1/2)."""
    labels = np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def accuracy(observed: np.ndarray, predicted: np.ndarray) -> float:
    if len(observed) == 0:
        return float("nan")
    return float(np.mean(np.asarray(observed) == np.asarray(predicted)))


def block_metrics(
    objective: str,
    observed: np.ndarray,
    predicted: np.ndarray,
    probabilities: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics of one block's rows.

    `predicted`: the value (regression), the probability of class 1 (binary), or
    the predicted class (multiclass, ordinal). `probabilities` (rows, classes),
    when given, replaces `predicted` for the classifying objectives.
    """
    observed = np.asarray(observed, np.float64)
    predicted = np.asarray(predicted, np.float64)
    out: dict[str, float] = {"n": int(len(observed))}
    if objective == "regression":
        out.update(pearson_r=pearson_r(observed, predicted), rmse=rmse(observed, predicted))
    elif objective == "binary":
        p1 = predicted if probabilities is None else np.asarray(probabilities)[:, 1]
        out.update(auc=auc(observed == 1, p1), accuracy=accuracy(observed, p1 >= 0.5))
    elif objective == "multiclass":
        cls = predicted if probabilities is None else np.argmax(probabilities, axis=1)
        out["accuracy"] = accuracy(observed, cls)
        if probabilities is not None:
            aucs = [auc(observed == k, probabilities[:, k]) for k in range(probabilities.shape[1])]
            defined = [a for a in aucs if not np.isnan(a)]
            out["auc_ovr"] = float(np.mean(defined)) if defined else float("nan")
    elif objective == "ordinal":
        if probabilities is None:
            cls, score = predicted, predicted
        else:
            probabilities = np.asarray(probabilities, np.float64)
            cls = np.argmax(probabilities, axis=1)
            score = probabilities @ np.arange(probabilities.shape[1])
        out.update(accuracy=accuracy(observed, cls), spearman=spearman(observed, score))
    else:
        raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
    return out


def evaluate(
    objective: str,
    observed: xr.DataArray,
    predicted: xr.DataArray,
    mask: xr.DataArray,
    probabilities: xr.DataArray | None = None,
) -> dict[str, Any]:
    """Per-block metrics over the rows where `mask` holds, plus their mean over blocks.

    `observed`, `predicted`, `mask`: (samples, blocks); `probabilities`: (samples,
    blocks, classes). Returns {"blocks": {"0": {...}, ...}, "mean": {...}}.
    """
    blocks: dict[str, dict[str, float]] = {}
    for b in range(observed.sizes["blocks"]):
        rows = np.asarray(mask.isel(blocks=b).values, bool)
        probs = None
        if probabilities is not None:
            probs = np.asarray(probabilities.isel(blocks=b).values)[rows]
        label = str(observed["block"].values[b]) if "block" in observed.coords else str(b)
        blocks[label] = block_metrics(
            objective,
            np.asarray(observed.isel(blocks=b).values)[rows],
            np.asarray(predicted.isel(blocks=b).values)[rows],
            probs,
        )
    names = [k for k in next(iter(blocks.values()), {}) if k != "n"]
    mean = {}
    for k in names:
        values = [m[k] for m in blocks.values() if not np.isnan(m[k])]
        mean[k] = float(np.mean(values)) if values else float("nan")
    return {"blocks": blocks, "mean": mean}
