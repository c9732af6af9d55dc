"""fit and predict: phenotypes of several blocks learnt from streamed genotypes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from gperceiver.converters.tsv import convert_tsv
from gperceiver.errors import ExitCode, InputFormatError
from gperceiver.fit import fit
from gperceiver.predict import Predictor, predict
from gperceiver.train.checkpoint import load_checkpoint
from gperceiver.train.params import Params
from tests.conftest import TEST_DATA, run_cli
from tests.test_convert_tsv import write_panel
from tests.tiny_stores import ONE_THREAD, one_torch_thread

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

TINY = dict(latent_dim=32, num_latents=8, feedforward_dim=64, projection_dim=16,
            allele_embed_dim=8, position_embed_dim=8, output_dim=16, num_self_attention=1,
            num_encode_iters=1, num_self_attention_heads=2, num_cross_attention_heads=4,
            batch_size=16, lr=3e-3,
            patience=100)


def tiny(**changes) -> Params:
    return Params.build(**{**TINY, **changes})


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    """150 diploid samples x 40 loci; additive traits (4 causal loci) in 3 blocks.

    Block 2 is observed for two samples in three only; `cv` = sample index % 5.
    Returns (store, phenotype TSV, genetic values (samples, blocks)).
    """
    folder = tmp_path_factory.mktemp("panel")
    rng = np.random.default_rng(0)
    n, m = 150, 40
    freq = rng.uniform(0.2, 0.5, m)
    dosage = (rng.random((n, m, 2)) < freq[None, :, None]).sum(-1)
    mpath, cpath = write_panel(folder, dosage + 3)
    store = folder / "panel.zarr"
    convert_tsv(mpath, cpath, store, samples_chunk=64, progress=False)
    rows, genetic = [], np.zeros((n, 3))
    for b in range(3):
        beta = np.zeros(m)
        beta[rng.choice(m, 4, replace=False)] = rng.normal(0, 1, 4)
        g = (dosage - 2 * freq) @ beta
        genetic[:, b] = (g - g.mean()) / g.std()
        y = genetic[:, b] + rng.normal(0, 0.2, n)
        rows += [(f"s{i}", y[i], b, i % 5) for i in range(n) if b < 2 or i % 3]
    phenos = folder / "phenos.tsv"
    pd.DataFrame(rows, columns=["name", "response", "block", "cv"]).to_csv(
        phenos, sep="\t", index=False)
    return store, phenos, genetic


def classes_file(panel, folder, cuts) -> str:
    """The panel's genetic values cut into classes at `cuts`, as a phenotype TSV."""
    _, _, genetic = panel
    rows = [(f"s{i}", int(np.searchsorted(cuts, genetic[i, b])), b, i % 5)
            for i in range(len(genetic)) for b in range(2)]
    path = folder / "classes.tsv"
    pd.DataFrame(rows, columns=["name", "response", "block", "cv"]).to_csv(
        path, sep="\t", index=False)
    return path


def test_regression_latent_head_learns_every_block(panel, tmp_path):
    store, phenos, _ = panel
    result = fit(store, phenos, tmp_path / "run", tiny(epochs=40, head="latent"), cv=0,
                 progress=False)
    val = result.metrics["validation"]["blocks"]
    assert all(val[b]["pearson_r"] > 0.8 for b in ("0", "1", "2")), val
    # exact cv filtering: metrics count exactly the observed rows of fold 0
    table = pd.read_csv(tmp_path / "run" / "predictions.tsv", sep="\t")
    fold0 = table[(table.cv == 0) & table.observed.notna()]
    assert {b: val[str(b)]["n"] for b in range(3)} == fold0.groupby("block").size().to_dict()
    assert val["2"]["n"] < val["0"]["n"]  # block 2 observed for some samples only
    # predictions exist for every sample and block, and differ between samples
    assert len(table) == 150 * 3 and table.predicted.notna().all()
    assert table.groupby("block").predicted.std().min() > 0.5
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["validation"]["blocks"]["0"]["pearson_r"] == pytest.approx(val["0"]["pearson_r"])
    for name in ("best.ckpt", "last.ckpt", "metrics.csv", "params.json",
                 "learning_curves.png", "observed_vs_predicted.png"):
        assert (tmp_path / "run" / name).is_file()


def test_regression_pool_head_learns(panel, tmp_path):
    store, phenos, _ = panel
    result = fit(store, phenos, tmp_path / "run", tiny(epochs=80, lr=1e-3, head="pool"), cv=0,
                 progress=False)
    assert result.metrics["validation"]["mean"]["pearson_r"] > 0.8, result.metrics["validation"]


def test_binary_objective(panel, tmp_path):
    store, _, _ = panel
    phenos = classes_file(panel, tmp_path, [0.0])
    result = fit(store, phenos, tmp_path / "run", tiny(epochs=25, objective="binary"), cv=1,
                 progress=False)
    val = result.metrics["validation"]
    assert val["mean"]["auc"] > 0.85, val
    table = pd.read_csv(tmp_path / "run" / "predictions.tsv", sep="\t")
    assert {"prob_0", "prob_1"} <= set(table.columns)
    np.testing.assert_allclose(table.prob_0 + table.prob_1, 1.0, atol=1e-5)


def test_ordinal_and_multiclass_objectives(panel, tmp_path):
    store, _, _ = panel
    phenos = classes_file(panel, tmp_path, [-0.6, 0.6])  # 3 ordered classes
    ordinal = fit(store, phenos, tmp_path / "ord", tiny(epochs=25, objective="ordinal"), cv=1,
                  progress=False).metrics["validation"]
    assert ordinal["mean"]["spearman"] > 0.7, ordinal
    multi = fit(store, phenos, tmp_path / "multi", tiny(epochs=25, objective="multiclass"),
                cv=1, progress=False).metrics["validation"]
    assert multi["mean"]["accuracy"] > 0.6, multi
    table = pd.read_csv(tmp_path / "multi" / "predictions.tsv", sep="\t")
    assert {"prob_0", "prob_1", "prob_2"} <= set(table.columns)
    some = np.arange(0, 150, 7)  # the others are not asked for: NaN, not class 0
    asked = Predictor.load(tmp_path / "multi").predict(store, samples=some, progress=False)
    others = np.setdiff1d(np.arange(150), some)
    assert np.isnan(asked.predicted[others]).all() and np.isnan(asked.probability[others]).all()
    assert not np.isnan(asked.predicted[some]).any()


def test_classes_must_be_class_numbers(panel, tmp_path):
    store, phenos, _ = panel
    with pytest.raises(InputFormatError, match="is not a class number"):
        fit(store, phenos, tmp_path / "run", tiny(epochs=1, objective="multiclass"),
            progress=False)


def test_every_row_held_out_is_refused_before_training(panel, tmp_path):
    store, phenos, _ = panel
    table = pd.read_csv(phenos, sep="\t", dtype={"name": str})
    held = tmp_path / "held.tsv"
    table.assign(cv=0).to_csv(held, sep="\t", index=False)
    for fold in ({"cv": 0}, {"test_fold": 0}):
        with pytest.raises(InputFormatError) as refused:
            fit(store, held, tmp_path / "run", tiny(epochs=1), progress=False, **fold)
        assert refused.value.message == (
            f"{held}: no training rows left (all rows are held out)")
        assert not (tmp_path / "run").exists()


def test_validation_rows_never_train(panel, tmp_path):
    """Changing only validation responses leaves the trained weights bit-identical."""
    store, phenos, _ = panel
    table = pd.read_csv(phenos, sep="\t")
    table.loc[table.cv == 2, "response"] = 1000.0
    other = tmp_path / "other.tsv"
    table.to_csv(other, sep="\t", index=False)
    states = []
    for name, path in (("a", phenos), ("b", other)):
        fit(store, path, tmp_path / name, tiny(epochs=3), cv=2, progress=False)
        states.append(load_checkpoint(tmp_path / name / "last.ckpt")["state_dict"])
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_each_prediction_comes_from_its_sample_alone(panel, tmp_path):
    store, phenos, _ = panel
    fit(store, phenos, tmp_path / "run", tiny(epochs=3), cv=0, progress=False)
    predictor = Predictor.load(tmp_path / "run")
    in_batches = predictor.predict(store, batch_size=32, progress=False).predicted
    one_by_one = predictor.predict(store, batch_size=1, progress=False).predicted
    np.testing.assert_allclose(in_batches, one_by_one, atol=1e-5)
    assert in_batches.std(axis=0).min() > 0  # not collapsed to a constant


def test_the_perceiver_adds_no_constant_on_the_validation_lines(panel, tmp_path):
    """An undertrained Perceiver's output carries a constant; it joins the marker path
    centred on the validation lines, so it moves no block's mean there (RMSE, not r)."""
    store, phenos, _ = panel
    result = fit(store, phenos, tmp_path / "run", tiny(epochs=1), cv=0, progress=False)
    predictor = Predictor.load(tmp_path / "run")
    both = predictor.predict(store, progress=False)
    deep, _ = predictor.predict_encoder(store, progress=False)
    shift = np.array(result.metrics["components"]["perceiver_shift"])
    n = len(deep)
    for b in range(3):
        val = (np.arange(n) % 5 == 0) & ((b < 2) | (np.arange(n) % 3 > 0))
        assert shift[b] == pytest.approx(deep[val, b].mean(), abs=1e-4)
        added = both.predicted[val, b] - both.linear[val, b]
        assert abs(added.mean()) < 1e-6
    assert np.abs(shift).max() > 1e-3  # there was a constant to take out


def test_freeze_encoder_trains_only_the_head(panel, tmp_path):
    store, phenos, _ = panel
    fit(store, phenos, tmp_path / "a", tiny(epochs=1), cv=0, progress=False)
    result = fit(store, phenos, tmp_path / "b", tiny(epochs=2), cv=0, progress=False,
                 pretrained=tmp_path / "a" / "last.ckpt", freeze_encoder=True)
    assert result.metrics["frozen"] == {"encoder": True, "latents": False}
    before = load_checkpoint(tmp_path / "a" / "last.ckpt")["state_dict"]
    after = load_checkpoint(tmp_path / "b" / "last.ckpt")["state_dict"]
    encoder = [k for k in before if k.startswith("model.")]
    # a finetuned model carries no pretraining decoder
    assert not any(k.startswith(("model.masked.", "model.contrastive.")) for k in encoder)
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("head."))


def test_cli_fit_predict_pretrained(example_store, tmp_path):
    params = tmp_path / "p.json"
    params.write_text(json.dumps({**TINY, "epochs": 2, "batch_size": 8}))
    pre = run_cli("pretrain", example_store, "-o", tmp_path / "pre", "--params", params,
                  "--epochs", "1", env=ONE_THREAD)
    assert pre.returncode == 0, pre.stderr
    proc = run_cli("fit", example_store, TEST_DATA / "phenos.tsv", "-o", tmp_path / "fit",
                   "--cv", "1", "--params", params, "--pretrained", tmp_path / "pre" / "best.ckpt",
                   "--head", "pool", env={**ONE_THREAD, "GPERCEIVER_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "block 0:" in proc.stdout and "pearson_r=" in proc.stdout
    # a bar with the time left on every long phase: the pretrained encoder's latents,
    # the marker path's kernels and predictions, training, the calibration on the
    # validation lines and the predictions
    for bar in ("latents: 100%|", "marker path: 100%|", "marker path predictions: 100%|",
                "Epoch 1:", "calibrate: 100%|", "predict: 100%|"):
        assert bar in proc.stderr, bar
    assert json.loads((tmp_path / "fit" / "params.json").read_text())["head"] == "pool"
    components = json.loads((tmp_path / "fit" / "metrics.json").read_text())["components"]
    assert len(components["linear_latent_phi"]) == 2  # the latent kernel was offered
    correlation = np.array(components["linear_genetic_correlation"], dtype=float)
    assert correlation.shape == (2, 2)  # between the blocks fitted together
    np.testing.assert_allclose(np.diag(correlation), 1.0)
    np.testing.assert_allclose(correlation, correlation.T)
    out = tmp_path / "new.tsv"
    # a budget too small for even one sample's activations: batches of one, said so
    pred = run_cli("predict", tmp_path / "fit", example_store, "-o", out, "--memory", "1000",
                   env={**ONE_THREAD, "GPERCEIVER_PROGRESS": "1"})
    assert pred.returncode == 0, pred.stderr
    assert "note: memory budget 1 KB: batches of 1 sample (about" in pred.stderr
    for bar in ("predict: 100%|", "marker path predictions: 100%|"):  # both parts
        assert bar in pred.stderr, bar
    new = pd.read_csv(out, sep="\t")
    old = pd.read_csv(tmp_path / "fit" / "predictions.tsv", sep="\t")
    merged = new.merge(old, on=["name", "block"])
    assert len(merged) == len(new) == 40 * 2
    np.testing.assert_allclose(merged.predicted_x, merged.predicted_y, rtol=1e-4, atol=1e-5)
    # the same run again without --force is refused; an unknown flag value is a usage error
    again = run_cli("fit", example_store, TEST_DATA / "phenos.tsv", "-o", tmp_path / "fit",
                    "--params", params)
    assert again.returncode == ExitCode.CANNOT_WRITE
    bad = run_cli("fit", example_store, TEST_DATA / "phenos.tsv", "-o", tmp_path / "x",
                  "--objective", "poisson")
    assert bad.returncode == ExitCode.USAGE


def test_predict_refuses_other_variants(panel, example_store, tmp_path):
    store, phenos, _ = panel
    fit(store, phenos, tmp_path / "run", tiny(epochs=1), progress=False)
    with pytest.raises(InputFormatError, match="not the model's variants"):
        predict(tmp_path / "run", example_store)
    proc = run_cli("predict", tmp_path / "run", example_store)
    assert proc.returncode == ExitCode.INPUT_FORMAT
    assert "not the model's variants" in proc.stderr and proc.stderr.count("\n") == 1


def test_cli_fit_trial_phenotypes_replicates_and_named_blocks(example_store, tmp_path):
    """Rows as trials record them: replicates, block names; outputs keep the names,
    blocks.tsv maps them, metrics are on line means and say so, `plot` after `fit`
    replaces its pictures, `predict` and `cv` keep the names."""
    table = pd.read_csv(TEST_DATA / "phenos.tsv", sep="\t")
    table["block"] = table["block"].map({0: "Perth_2021", 1: "Dale_2020"})
    reps = table.iloc[::3].assign(response=lambda t: t.response + 0.5)
    trial = tmp_path / "trial.tsv"
    pd.concat([table, reps]).to_csv(trial, sep="\t", index=False)
    params = tmp_path / "p.json"
    params.write_text(json.dumps({**TINY, "epochs": 1, "batch_size": 8}))
    proc = run_cli("fit", example_store, trial, "-o", tmp_path / "fit", "--test-fold", "1",
                   "--params", params, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    assert "block Dale_2020:" in proc.stdout and "block Perth_2021:" in proc.stdout
    assert "note: " in proc.stderr and "replicate rows" in proc.stderr
    assert proc.stderr.count("replicate rows") == 1
    assert (tmp_path / "fit" / "blocks.tsv").read_text() == (
        "output\tblock\n0\tDale_2020\n1\tPerth_2021\n")
    metrics = json.loads((tmp_path / "fit" / "metrics.json").read_text())
    assert metrics["responses"] == "line means of replicate rows per block"
    assert set(metrics["test"]["blocks"]) == {"Dale_2020", "Perth_2021"}
    preds = pd.read_csv(tmp_path / "fit" / "predictions.tsv", sep="\t")
    assert set(preds.block) == {"Dale_2020", "Perth_2021"} and len(preds) == 40 * 2
    means = pd.concat([table, reps]).groupby(["name", "block"]).response.mean()
    merged = preds.dropna(subset=["observed"]).set_index(["name", "block"])
    np.testing.assert_allclose(merged.observed, means.loc[merged.index], rtol=1e-6)
    plotted = run_cli("plot", tmp_path / "fit")
    assert plotted.returncode == 0, plotted.stderr  # replaces the pictures fit drew
    out = tmp_path / "new.tsv"
    pred = run_cli("predict", tmp_path / "fit", example_store, "-o", out, env=ONE_THREAD)
    assert pred.returncode == 0, pred.stderr
    assert set(pd.read_csv(out, sep="\t").block) == {"Dale_2020", "Perth_2021"}
    gblup = run_cli("baseline", example_store, trial, "-o", tmp_path / "gblup")
    assert gblup.returncode == 0, gblup.stderr
    assert (tmp_path / "gblup" / "blocks.tsv").read_text() == (
        tmp_path / "fit" / "blocks.tsv").read_text()
    assert json.loads((tmp_path / "gblup" / "metrics.json").read_text())["responses"] == (
        "line means of replicate rows per block")
    binary = run_cli("fit", example_store, trial, "-o", tmp_path / "bin", "--params", params,
                     "--objective", "binary")
    assert binary.returncode == ExitCode.INPUT_FORMAT
    assert "replicate rows are averaged" in binary.stderr and not (tmp_path / "bin").exists()


def test_fit_predicts_the_phenotyped_lines_unless_asked_for_all(example_store, tmp_path):
    """Predictions cover the phenotyped lines by default (the others are never read for
    prediction), every sample with --predict-all; the shared lines agree exactly."""
    table = pd.read_csv(TEST_DATA / "phenos.tsv", sep="\t")
    some = tmp_path / "some.tsv"
    table[~table.name.isin([f"g{i}" for i in range(30, 40)])].to_csv(some, sep="\t",
                                                                      index=False)
    params = tiny(epochs=1, batch_size=8)
    part = fit(example_store, some, tmp_path / "part", params, cv=1, progress=False)
    full = fit(example_store, some, tmp_path / "full", params, cv=1, progress=False,
               predict_all=True)
    assert part.predictions.sizes["samples"] == 30 and full.predictions.sizes["samples"] == 40
    rows = pd.read_csv(tmp_path / "part" / "predictions.tsv", sep="\t")
    assert set(rows.name) == {f"g{i}" for i in range(30)} and rows.predicted.notna().all()
    shared = full.predictions.isel(samples=slice(0, 30))
    np.testing.assert_allclose(part.predictions["predicted"].values,
                               shared["predicted"].values, rtol=1e-5, atol=1e-6)
    json_params = tmp_path / "p.json"
    json_params.write_text(json.dumps({**TINY, "epochs": 1, "batch_size": 8}))
    proc = run_cli("fit", example_store, some, "-o", tmp_path / "cli", "--params",
                   json_params, "--predict-all", "--cv", "1", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(tmp_path / "cli" / "predictions.tsv", sep="\t")) == 40 * 2


def test_fit_opens_its_store_once(example_store, tmp_path, monkeypatch):
    """The marker path, both loaders and the prediction pass share one opening of the
    store, given as a path or as a selection (which opens the whole store to place it)."""
    import gperceiver.store.read as read

    opened = []
    real = read.open_store

    def counting(path, **kwargs):
        opened.append(str(path))
        return real(path, **kwargs)

    selection = real(example_store).isel(samples=slice(0, 36))
    monkeypatch.setattr(read, "open_store", counting)
    params = tiny(epochs=1, batch_size=8)
    fit(example_store, TEST_DATA / "phenos.tsv", tmp_path / "a", params, cv=1, progress=False)
    assert opened == [str(example_store)]
    opened.clear()
    with pytest.warns(UserWarning, match="not in the genotype store"):
        result = fit(selection, TEST_DATA / "phenos.tsv", tmp_path / "b", params, cv=1,
                     progress=False)
    assert opened == [str(example_store)] and result.predictions.sizes["samples"] == 36


def test_head_flag_and_the_earlier_strategy_spelling():
    """`--head` picks the head; `--strategy latent|pool` (earlier versions) still does,
    with a note; the two may not disagree; Lightning strategies pass through."""
    import warnings

    from gperceiver.cli.fit import split_strategy
    from gperceiver.errors import Note, UsageError

    assert split_strategy(["ddp"], "pool") == ("pool", "ddp")
    assert split_strategy([], None) == (None, "auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert split_strategy(["ddp", "pool"], None) == ("pool", "ddp")
    assert any(issubclass(w.category, Note) and "--head pool" in str(w.message) for w in caught)
    with pytest.raises(UsageError, match="disagree"):
        split_strategy(["latent"], "pool")
    proc = run_cli("fit", "x.zarr", "p.tsv", "-o", "out", "--head", "mean")
    assert proc.returncode == 2 and "--head: invalid choice" in proc.stderr
