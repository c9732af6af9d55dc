"""Pictures: the numbers behind each figure, valid PNGs, `gperceiver plot` dispatch and errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.image import imread
from scipy import stats

from gperceiver import plots
from gperceiver.errors import CannotWriteError, ExitCode, GPerceiverError
from gperceiver.store import frequencies, open_store
from tests.conftest import TEST_DATA

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_bytes: int = 5_000) -> None:
    """A real, decodable PNG of non-trivial size."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is only {len(data)} bytes"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05, f"{path} is blank"


# ---------------------------------------------------------------- fixtures


def write_metrics(run_dir: Path) -> pd.DataFrame:
    """A metrics.csv as Lightning's CSVLogger writes it: sparse rows, one per log call."""
    rows = []
    for step in range(12):
        rows.append({"epoch": step // 4, "step": step, "train_loss": 3.0 / (step + 1)})
        if step % 4 == 3:
            rows.append({"epoch": step // 4, "step": step, "val_loss": 4.0 / (step + 1),
                         "val_accuracy": 0.2 + 0.05 * step})
    table = pd.DataFrame(rows, columns=["epoch", "step", "train_loss", "val_accuracy",
                                        "val_loss"])
    run_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(run_dir / "metrics.csv", index=False)
    return table


def write_predictions(run_dir: Path, n: int = 60) -> pd.DataFrame:
    """predictions.tsv as fit writes it: empty cells for unobserved rows and missing folds."""
    rng = np.random.default_rng(1)
    frames = []
    for block, noise in [(0, 0.3), (1, 1.5)]:
        observed = rng.normal(size=n)
        frame = pd.DataFrame({
            "name": [f"g{i}" for i in range(n)],
            "block": block,
            "cv": pd.array(rng.integers(0, 3, size=n), dtype="Int64"),
            "observed": observed,
            "predicted": observed + noise * rng.normal(size=n),
        })
        frame.loc[:4, "observed"] = np.nan  # unobserved in this block
        frame.loc[5:7, "cv"] = pd.NA  # no fold
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(run_dir / "predictions.tsv", sep="\t", index=False, na_rep="")
    return table


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    write_metrics(run)
    write_predictions(run)
    return run


@pytest.fixture
def embedding(tmp_path, example_store) -> Path:
    """An embeddings Zarr over the example store's samples: two clusters in 8 dims."""
    store = open_store(example_store)
    n = store.sizes["samples"]
    rng = np.random.default_rng(0)
    centre = np.where(np.arange(n)[:, None] % 2 == 0, 3.0, -3.0) * rng.normal(size=(1, 8))
    emb = xr.Dataset({
        "sample_embedding": (("samples", "embedding"),
                             (centre + rng.normal(size=(n, 8))).astype(np.float32)),
        "sample_id": ("samples", np.asarray(store["sample_id"].values.tolist(), dtype=object)),
    })
    path = tmp_path / "emb.zarr"
    emb.to_zarr(path, zarr_format=2)
    return path


# ---------------------------------------------------------------- learning curves


def test_learning_curves_one_panel_per_family_with_every_logged_point(tmp_path):
    table = write_metrics(tmp_path / "run")
    fig = plots.learning_curves_figure(tmp_path / "run" / "metrics.csv")
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"loss", "accuracy"}
    lines = {line.get_label(): line for line in panels["loss"].get_lines()}
    assert set(lines) == {"train_loss", "val_loss"}
    for name in ("train_loss", "val_loss"):
        logged = table.dropna(subset=[name])
        np.testing.assert_array_equal(lines[name].get_xdata(), logged["step"])
        np.testing.assert_allclose(lines[name].get_ydata(), logged[name])


def test_learning_curves_of_one_epoch_show_it_on_a_readable_axis(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.csv").write_text("epoch,step,train_loss,val_loss\n0,9,1.2,1.3\n")
    fig = plots.learning_curves_figure(tmp_path / "run" / "metrics.csv")
    lo, hi = fig.axes[0].get_xlim()
    assert (lo, hi) == (-1, 1)


def test_learning_curves_bad_cell_names_line_and_column(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train_loss\n0,0,1.5\n0,1,oops\n")
    with pytest.raises(plots.InputFormatError, match=r"line 3, column train_loss"):
        plots.read_metrics(path)


# ---------------------------------------------------------------- observed vs predicted


def _r_in(title: str, which: str) -> float:
    return float(re.search(rf"(-?\d\.\d+) {which}", title).group(1))


def test_predictions_r_per_block_on_validation_and_training(run_dir):
    table = write_predictions(run_dir)
    fig = plots.predictions_figure(run_dir / "predictions.tsv", cv=1)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == 2
    for block, title in enumerate(titles):
        rows = table[(table["block"] == block) & table["observed"].notna()]
        held = (rows["cv"] == 1).fillna(False).to_numpy(dtype=bool)
        r_val = stats.pearsonr(rows["observed"][held], rows["predicted"][held])[0]
        r_train = stats.pearsonr(rows["observed"][~held], rows["predicted"][~held])[0]
        assert title.startswith(f"block {block}:")
        assert _r_in(title, "validation") == pytest.approx(r_val, abs=6e-4)
        assert _r_in(title, "training") == pytest.approx(r_train, abs=6e-4)
    # The better-predicted block 0 must show the higher validation r.
    assert _r_in(titles[0], "validation") > _r_in(titles[1], "validation")


def test_a_test_fold_is_drawn_as_test_and_recorded_as_such(run_dir, cli):
    """fit/baseline --test-fold K: fold K's rows are the test rows; the others hold the
    training and the inner validation lines."""
    table = write_predictions(run_dir)
    (run_dir / "metrics.json").write_text(json.dumps({"cv": None, "test_fold": 1}))
    assert plots.recorded_folds(run_dir) == (None, 1)
    fig = plots.predictions_figure(run_dir / "predictions.tsv", test_fold=1)
    rows = table[(table["block"] == 0) & table["observed"].notna()]
    held = (rows["cv"] == 1).fillna(False).to_numpy(dtype=bool)
    r_test = stats.pearsonr(rows["observed"][held], rows["predicted"][held])[0]
    title = fig.axes[0].get_title()
    assert _r_in(title, "test") == pytest.approx(r_test, abs=6e-4)
    assert "training + validation" in title and " validation," not in title
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "training + validation", "test (cv 1)"]
    both = cli("plot", run_dir, "--cv", "1", "--test-fold", "1")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    absent = cli("plot", run_dir, "--cv", "9", "--force")
    assert absent.returncode == 2 and "--cv 9: no observed row" in absent.stderr
    assert "folds present: [0, 1" in absent.stderr


def test_predictions_without_fold_give_r_on_every_observed_row(run_dir):
    table = write_predictions(run_dir)
    fig = plots.predictions_figure(run_dir / "predictions.tsv")
    title = fig.axes[1].get_title()
    rows = table[(table["block"] == 1) & table["observed"].notna()]
    r = stats.pearsonr(rows["observed"], rows["predicted"])[0]
    assert f"r = {r:.3f} (n = {len(rows)})" in title


def test_plot_run_dir_writes_both_pictures_and_uses_the_recorded_fold(run_dir, cli):
    # fit and baseline record the held-out fold in metrics.json; params.json has none.
    (run_dir / "params.json").write_text(json.dumps({"epochs": 3}))
    (run_dir / "metrics.json").write_text(json.dumps({"cv": 2, "validation": None}))
    assert plots.recorded_folds(run_dir) == (2, None)
    proc = cli("plot", run_dir, check=True)
    written = [Path(line) for line in proc.stdout.split()]
    assert written == [run_dir / plots.LEARNING_CURVES, run_dir / plots.PREDICTIONS]
    for path in written:
        assert_png(path)
    # A second run redraws the folder's own pictures from its changed files; into
    # another folder holding them already, it refuses without --force, leaving them.
    before = written[1].read_bytes()
    (run_dir / "predictions.tsv").write_text("name\tblock\tobserved\tpredicted\ng0\t0\t1\t2\n")
    assert plots.plot_path(run_dir) == written
    assert written[1].read_bytes() != before
    elsewhere = plots.plot_path(run_dir, run_dir.parent / "pictures")
    kept = elsewhere[1].read_bytes()
    with pytest.raises(CannotWriteError, match="--force"):
        plots.plot_path(run_dir, run_dir.parent / "pictures")
    assert elsewhere[1].read_bytes() == kept


def test_plot_lightning_versions_folder(tmp_path):
    run = tmp_path / "run"
    write_metrics(run / "lightning_logs" / "version_0")
    written = plots.plot_path(run, tmp_path / "pictures")
    assert written == [tmp_path / "pictures" / plots.LEARNING_CURVES]
    assert_png(written[0])


# ---------------------------------------------------------------- genotype store


def test_missingness_matches_numpy_with_padded_copies():
    gt = np.array([
        [[0, 1], [-1, 0], [1, -2]],
        [[-1, -1], [0, 0], [-1, -2]],
    ], dtype=np.int8)  # (variants, samples, ploidy); -2 = padded copy of a haploid sample
    rates = frequencies.missingness(xr.Dataset({"call_genotype": (("variants", "samples", "ploidy"),
                                                            gt)}))
    np.testing.assert_allclose(rates["variant_missing_rate"], [1 / 5, 3 / 5])
    np.testing.assert_allclose(rates["sample_missing_rate"], [2 / 4, 1 / 4, 1 / 2])


def test_store_statistics_match_the_calls(example_store):
    ds = open_store(example_store)
    gt = ds["call_genotype"].values
    rates = frequencies.missingness(ds)
    np.testing.assert_allclose(rates["variant_missing_rate"], (gt == -1).mean(axis=(1, 2)))
    np.testing.assert_allclose(rates["sample_missing_rate"], (gt == -1).mean(axis=(0, 2)))
    assert rates["sample_missing_rate"].max() > 0  # test_data has missing calls
    counts, edges, monomorphic = plots.folded_spectrum(ds)
    alt = (gt == 1).sum(axis=(1, 2)) / (gt >= 0).sum(axis=(1, 2))
    maf = np.minimum(alt, 1 - alt)
    expected, _ = np.histogram(maf[maf > 0], bins=edges)
    np.testing.assert_array_equal(counts, expected)
    assert monomorphic == int((maf == 0).sum())


def test_folded_spectrum_of_multiallelic_variants():
    freq = np.array([
        [0.7, 0.2, 0.1],  # non-major alleles 0.2 and 0.1
        [0.3, 0.3, 0.4],  # major 0.4: 0.3 and 0.3
        [1.0, 0.0, 0.0],  # monomorphic: nothing
        [np.nan, np.nan, np.nan],  # never called: nothing, counted monomorphic
    ], dtype=np.float32)
    ds = xr.Dataset({"variant_allele_frequency": (("variants", "alleles"), freq)})
    counts, edges, monomorphic = plots.folded_spectrum(ds, bins=5)
    np.testing.assert_array_equal(edges, np.linspace(0, 0.5, 6))
    np.testing.assert_array_equal(counts, [0, 1, 1, 2, 0])  # 0.1 | 0.2 | 0.3, 0.3
    assert monomorphic == 2


def test_plot_store_next_to_it_and_into_a_folder(tmp_path, example_store, cli):
    store = tmp_path / "panel.zarr"
    shutil.copytree(example_store, store)
    proc = cli("plot", store, check=True)
    assert [Path(p) for p in proc.stdout.split()] == [
        tmp_path / "panel.allele_frequency.png", tmp_path / "panel.missingness.png"]
    for path in proc.stdout.split():
        assert_png(Path(path))
    out = tmp_path / "pictures" / "new"
    plots.plot_path(store, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "panel.allele_frequency.png", "panel.missingness.png"]


# ---------------------------------------------------------------- embeddings


def test_pca_matches_the_covariance_eigenvectors():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    scores, ratio = plots.pca(x)
    values, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    order = np.argsort(values)[::-1][:2]
    expected = (x - x.mean(axis=0)) @ vectors[:, order]
    for k in range(2):  # each component is defined up to its sign
        assert min(np.abs(scores[:, k] - expected[:, k]).max(),
                   np.abs(scores[:, k] + expected[:, k]).max()) < 1e-8
    np.testing.assert_allclose(ratio, values[order] / values.sum())


def test_pca_coloured_by_a_phenotype_block(embedding):
    phenos = pd.read_csv(TEST_DATA / "phenos.tsv", sep="\t")
    fig = plots.embedding_pca_figure(embedding, phenos=TEST_DATA / "phenos.tsv", block=1)
    ax = fig.axes[0]
    greys, coloured = ax.collections
    n_observed = phenos[(phenos["block"] == 1) & phenos["response"].notna()]["name"].nunique()
    assert len(coloured.get_offsets()) == n_observed
    assert len(greys.get_offsets()) + n_observed == 40
    observed = phenos[phenos["block"] == 1].set_index("name")["response"]
    assert sorted(coloured.get_array()) == pytest.approx(sorted(observed.dropna()))


def test_plot_embedding_with_labels(tmp_path, embedding, cli):
    labels = tmp_path / "labels.tsv"
    names = [f"g{i}" for i in range(30)]  # 10 samples stay unlabelled
    pd.DataFrame({"name": names, "label": ["odd" if int(n[1:]) % 2 else "even" for n in names]}
                 ).to_csv(labels, sep="\t", index=False)
    fig = plots.embedding_pca_figure(embedding, labels=labels)
    sizes = {c.get_label(): len(c.get_offsets()) for c in fig.axes[0].collections}
    assert sizes == {"no label": 10, "even": 15, "odd": 15}
    proc = cli("plot", embedding, "--labels", labels, check=True)
    assert Path(proc.stdout.strip()) == tmp_path / "emb.pca.png"
    assert_png(tmp_path / "emb.pca.png")


# ---------------------------------------------------------------- errors


def test_plot_errors_one_line_and_exit_codes(tmp_path, example_store, embedding, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_labels = tmp_path / "bad.tsv"
    bad_labels.write_text("sample\tgroup\ng0\ta\n")
    cases = [
        ((tmp_path / "nope",), {}, ExitCode.INPUT_NOT_FOUND, "no such"),
        ((empty,), {}, ExitCode.INPUT_FORMAT, "neither a store"),
        ((example_store,), {"labels": bad_labels}, ExitCode.USAGE, "not a store"),
        ((embedding,), {"labels": bad_labels}, ExitCode.INPUT_FORMAT,
         "bad.tsv, line 1: missing column 'name'"),
        ((embedding,), {"phenos": TEST_DATA / "phenos.tsv", "block": 7},
         ExitCode.INPUT_FORMAT, "no block 7 (blocks: 0, 1)"),
    ]
    for args, kwargs, code, message in cases:
        with pytest.raises(GPerceiverError) as err:
            plots.plot_path(*args, **kwargs)
        assert err.value.exit_code == code and message in str(err.value), (args, err.value)
    # Through the CLI: one line, the documented code, no traceback.
    for args, code, message in [
        (("plot", embedding, "--block", "1"), ExitCode.USAGE, "--block needs --phenos"),
        (("plot", embedding, "--labels", bad_labels), ExitCode.INPUT_FORMAT,
         "bad.tsv, line 1: missing column 'name'"),
    ]:
        proc = cli(*args)
        assert proc.returncode == code, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.png"))


def test_no_half_written_png_when_drawing_fails(tmp_path, run_dir):
    (run_dir / "predictions.tsv").write_text("name\tblock\tobserved\tpredicted\ng0\t0\t\t1.0\n")
    with pytest.raises(plots.InputFormatError, match="no row has an observed value"):
        plots.plot_path(run_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # not even the learning curves
