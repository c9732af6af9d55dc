"""Metrics per objective against direct formulas, and the shared output files."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from gperceiver.data.phenotypes import read_phenotypes
from gperceiver.errors import CannotWriteError
from gperceiver.metrics import auc, block_metrics, evaluate, pearson_r, spearman
from gperceiver.outputs import (
    predictions_dataset,
    predictions_table,
    read_predictions,
    write_metrics,
    write_predictions,
    write_run,
)
from gperceiver.store import schema


def brute_auc(labels, scores) -> float:
    """P(score of a positive > score of a negative), ties counted 1/2, over all pairs."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_regression_metrics_match_direct_formulas():
    rng = np.random.default_rng(1)
    y = rng.normal(size=50)
    p = y + rng.normal(size=50)
    m = block_metrics("regression", y, p)
    assert m["n"] == 50
    assert m["pearson_r"] == pytest.approx(np.corrcoef(y, p)[0, 1], rel=1e-12)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((y - p) ** 2)), rel=1e-12)


def test_constant_prediction_has_no_correlation():
    """A collapsed model (every sample predicted alike) must not look accurate."""
    assert np.isnan(pearson_r(np.arange(5.0), np.full(5, 2.0)))
    assert np.isnan(pearson_r(np.array([1.0]), np.array([1.0])))


def test_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(2)
    labels = rng.random(40) < 0.4
    scores = np.round(rng.random(40), 1)  # many ties
    assert auc(labels, scores) == pytest.approx(brute_auc(labels, scores), rel=1e-12)
    assert auc(labels, labels.astype(float)) == 1.0
    assert np.isnan(auc(np.ones(5, bool), np.arange(5.0)))


def test_binary_metrics():
    y = np.array([0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    m = block_metrics("binary", y, p1)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["auc"] == pytest.approx(brute_auc(y == 1, p1))
    probs = np.stack([1 - p1, p1], axis=1)
    assert block_metrics("binary", y, np.zeros(5), probs) == m


def test_multiclass_metrics():
    y = np.array([0, 1, 2, 2, 1, 0])
    probs = np.array([
        [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6],
        [0.5, 0.1, 0.4], [0.3, 0.4, 0.3], [0.2, 0.5, 0.3],
    ])
    m = block_metrics("multiclass", y, np.zeros(6), probs)
    assert m["accuracy"] == pytest.approx(4 / 6)
    expected = np.mean([brute_auc(y == k, probs[:, k]) for k in range(3)])
    assert m["auc_ovr"] == pytest.approx(expected)


def test_ordinal_metrics():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, size=30)
    logits = rng.normal(size=(30, 4)) + 2 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = block_metrics("ordinal", y, np.zeros(30), probs)
    assert m["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == y))
    score = probs @ np.arange(4)
    assert m["spearman"] == pytest.approx(stats.spearmanr(y, score).statistic, rel=1e-12)
    assert spearman(y, np.exp(y)) == pytest.approx(1.0)  # any monotone map ranks alike


def test_unknown_objective():
    with pytest.raises(ValueError, match="objective"):
        block_metrics("poisson", np.zeros(2), np.zeros(2))


def grid(values) -> xr.DataArray:
    arr = np.asarray(values, dtype=float)
    return xr.DataArray(arr, dims=("samples", "blocks"), coords={"block": ("blocks", [0, 1])})


def test_evaluate_uses_only_masked_rows_per_block():
    obs = grid([[1, 5], [2, np.nan], [3, 7], [4, 8], [9, 9]])
    pred = grid([[1.1, 4], [2.5, 0], [2.9, 8], [4.2, 7], [-50, -50]])
    mask = grid([[1, 1], [1, 0], [1, 1], [1, 1], [0, 0]]).astype(bool)
    out = evaluate("regression", obs, pred, mask)
    assert out["blocks"]["0"]["n"] == 4 and out["blocks"]["1"]["n"] == 3
    r0 = np.corrcoef([1, 2, 3, 4], [1.1, 2.5, 2.9, 4.2])[0, 1]
    r1 = np.corrcoef([5, 7, 8], [4, 8, 7])[0, 1]
    assert out["blocks"]["0"]["pearson_r"] == pytest.approx(r0)
    assert out["blocks"]["1"]["pearson_r"] == pytest.approx(r1)
    assert out["mean"]["pearson_r"] == pytest.approx((r0 + r1) / 2)


PHENOS = "name\tresponse\tblock\tcv\ns0\t1.5\t0\t0\ns1\t-2\t0\t1\ns1\t3\t1\t1\n"


@pytest.fixture
def phenos(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text(PHENOS)
    return read_phenotypes(path, ["s0", "s1", "s2"])


def test_predictions_tsv_round_trip(phenos, tmp_path):
    predicted = np.array([[0.25, 1.0], [-1.0, 2.0], [0.5, -0.5]])
    preds = predictions_dataset(phenos, predicted)
    path = write_predictions(preds, tmp_path / "predictions.tsv")
    table = read_predictions(path)
    assert list(table.columns) == ["name", "block", "cv", "observed", "predicted"]
    assert table["name"].tolist() == ["s0", "s1", "s2"] * 2
    assert table["block"].tolist() == [0, 0, 0, 1, 1, 1]
    assert table["cv"].tolist()[:2] == [0, 1] and table["cv"].isna().tolist() == [
        False, False, True, True, False, True
    ]
    assert table["observed"].tolist()[:2] == [1.5, -2.0] and table["observed"].isna().sum() == 3
    assert table["predicted"].tolist() == predicted.T.ravel().tolist()


def test_predictions_tsv_with_class_probabilities(phenos, tmp_path):
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=(3, 2))
    preds = predictions_dataset(phenos, probs.argmax(-1), probs, classes=["lo", "mid", "hi"])
    table = predictions_table(preds)
    assert list(table.columns)[5:] == ["prob_lo", "prob_mid", "prob_hi"]
    assert np.allclose(table[["prob_lo", "prob_mid", "prob_hi"]].values[1], probs[1, 0])
    assert np.allclose(table[["prob_lo", "prob_mid", "prob_hi"]].values[3], probs[0, 1])


def test_predictions_dataset_follows_its_declaration(phenos):
    """predictions_dataset gives every variable the dims and dtype that
    schema.PREDICTION_VARIABLES declares; a missing required one is named."""
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=(3, 2))
    preds = predictions_dataset(phenos, probs.argmax(-1), probs, classes=["lo", "mid", "hi"])
    schema.check(preds, schema.PREDICTION_VARIABLES, where="predictions")
    declared = {name: var.dtype for name, var in schema.PREDICTION_VARIABLES.items()
                if var.dtype}
    assert {name: str(preds[name].dtype) for name in declared} == declared
    with pytest.raises(schema.SchemaError, match="variable 'predicted' is missing"):
        schema.check(preds.drop_vars("predicted"), schema.PREDICTION_VARIABLES)


def test_metrics_json_writes_nan_as_null(tmp_path):
    path = write_metrics(
        {"r": np.float32(0.5), "nan": float("nan"), "n": np.int64(3), "v": np.arange(2)},
        tmp_path / "metrics.json",
    )
    assert json.loads(path.read_text()) == {"r": 0.5, "nan": None, "n": 3, "v": [0, 1]}


def test_outputs_are_refused_without_force_and_left_intact(phenos, tmp_path):
    preds = predictions_dataset(phenos, np.zeros((3, 2)))
    path = tmp_path / "metrics.json"
    path.write_text("keep")
    with pytest.raises(CannotWriteError, match="--force"):
        write_metrics({"a": 1}, path)
    assert path.read_text() == "keep"
    write_metrics({"a": 1}, path, force=True)
    assert json.loads(path.read_text()) == {"a": 1}
    run = write_run(tmp_path / "run", preds, {"a": 1})
    assert sorted(p.name for p in run.iterdir()) == ["blocks.tsv", "metrics.json", "predictions.tsv"]
    with pytest.raises(CannotWriteError):
        write_run(tmp_path / "run", preds, {"a": 1})


def test_failed_write_leaves_nothing(phenos, tmp_path):
    preds = predictions_dataset(phenos, np.zeros((3, 2)))
    with pytest.raises(TypeError):
        write_run(tmp_path / "run", preds, {"bad": object()})  # not JSON: fails midway
    assert list(tmp_path.iterdir()) == [tmp_path / "p.tsv"]
