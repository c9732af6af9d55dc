"""GBLUP baseline against a direct dense numpy GBLUP, REML against a brute-force grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import cho_factor, cho_solve
from threadpoolctl import threadpool_limits

from gperceiver.baseline import (
    Spectral,
    gblup,
    genomic_relationship,
    restricted_loglik,
    run_gblup,
)
from gperceiver.converters.tsv import convert_tsv
from gperceiver.preprocessing import gen_allele_decoder
from gperceiver.store import open_store
from tests.conftest import TEST_DATA, run_cli


@pytest.fixture(autouse=True)
def single_threaded_blas():
    """Small dense algebra: BLAS threads only contend on a busy machine (10-100x slower)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# ---------------------------------------------------------------- small data, made here


def make_store(
    folder: Path, n: int, m: int, *, ploidy: int = 2, nalleles: int = 3,
    missing: float = 0.0, seed: int = 0, variants_chunk: int = 64,
) -> Path:
    """Random genotypes (per-variant allele frequencies, some missing copies) -> a store."""
    rng = np.random.default_rng(seed)
    code = {tuple(c): k for k, c in enumerate(gen_allele_decoder(ploidy, nalleles))}
    freqs = rng.dirichlet(np.ones(nalleles - 1) * 0.7, size=m)
    copies = np.stack(
        [rng.choice(np.arange(1, nalleles), size=(n, ploidy), p=f) for f in freqs], axis=1
    )  # (n, m, ploidy) allele numbers 1.., 0 = missing
    copies[rng.random(copies.shape) < missing] = 0
    codes = np.array([[code[tuple(sorted(c))] for c in row] for row in copies])
    markers, chroms = folder / "markers.tsv", folder / "chroms.tsv"
    names = [f"m{j}" for j in range(m)]
    pd.DataFrame(codes, columns=names).assign(name=[f"g{i}" for i in range(n)])[
        ["name", *names]
    ].to_csv(markers, sep="\t", index=False)
    pd.DataFrame({
        "chr": ["c1" if j < m // 2 else "c2" for j in range(m)],
        "marker": names, "pos": np.arange(m) + 1,
    }).to_csv(chroms, sep="\t", index=False)
    out = folder / "store.zarr"
    convert_tsv(markers, chroms, out, ploidy=ploidy, nalleles=nalleles,
                samples_chunk=32, variants_chunk=variants_chunk, progress=False)
    return out


def reference_g(store: Path) -> np.ndarray:
    """VanRaden G, dense, variant by variant, frequencies counted from the calls."""
    gt = open_store(store)["call_genotype"].values
    n_variants, n_samples, ploidy = gt.shape
    n_alleles = int(gt.max()) + 1
    columns, scale = [], 0.0
    for v in range(n_variants):
        calls = gt[v]
        present = calls[calls >= 0]
        missing = (calls < 0).any(axis=1)
        for a in range(1, n_alleles):
            p = np.mean(present == a)
            z = (calls == a).sum(axis=1) - ploidy * p
            z[missing] = 0.0
            columns.append(z)
            scale += ploidy * p * (1 - p)
    z = np.array(columns).T
    return z @ z.T / scale


def dense_reml(lam: float, g: np.ndarray, y: np.ndarray) -> float:
    """Restricted log-likelihood of y ~ N(1 mu, s2 (G + lam I)), s2 profiled, dense algebra."""
    n = len(y)
    chol = cho_factor(g + lam * np.eye(n))
    hi_1, hi_y = cho_solve(chol, np.ones(n)), cho_solve(chol, y)
    xhx, xhy = hi_1.sum(), hi_y.sum()
    s2 = (y @ hi_y - xhy**2 / xhx) / (n - 1)
    logdet = 2 * np.log(np.diag(chol[0])).sum()
    return -0.5 * ((n - 1) * (np.log(2 * np.pi * s2) + 1) + logdet + np.log(xhx))


def dense_blup(g: np.ndarray, y: np.ndarray, train: np.ndarray, lam: float) -> np.ndarray:
    """Closed-form GBLUP: GLS mean plus G[:, t] (G[t, t] + lam I)^-1 (y - mu)."""
    t = np.flatnonzero(train)
    v = g[np.ix_(t, t)] + lam * np.eye(len(t))
    mu = np.linalg.solve(v, y[t]).sum() / np.linalg.solve(v, np.ones(len(t))).sum()
    return mu + g[:, t] @ np.linalg.solve(v, y[t] - mu)


def simulate_trait(g: np.ndarray, h2: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = rng.multivariate_normal(np.zeros(len(g)), g + 1e-8 * np.eye(len(g)))
    return 3.0 + np.sqrt(h2) * u + np.sqrt(1 - h2) * rng.normal(size=len(g))


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """150 diploid biallelic genotypes x 300 variants, 2% missing copies."""
    folder = tmp_path_factory.mktemp("sim")
    store = make_store(folder, 150, 300, missing=0.02, seed=1, variants_chunk=64)
    return store, reference_g(store)


# ---------------------------------------------------------------- G


def test_g_matches_dense_reference_with_missing_calls(sim):
    store, g_ref = sim
    g = genomic_relationship(open_store(store))
    assert g.shape == (150, 150)
    np.testing.assert_allclose(g.values, g_ref, rtol=1e-5, atol=1e-6)  # float32 frequencies
    # Blocks smaller than the store's variant chunks give the same G (to the rounding
    # of each slab's float32 product).
    small = genomic_relationship(open_store(store), max_slab_bytes=8 * 150 * 10)
    np.testing.assert_allclose(small.values, g.values, rtol=1e-6, atol=1e-7)
    # G's columns of some samples alone (baseline's: its training lines), labelled
    some = np.sort(np.random.default_rng(3).choice(150, 40, replace=False))
    part = genomic_relationship(open_store(store), max_slab_bytes=8 * 150 * 10, columns=some)
    np.testing.assert_allclose(part.values, small.values[:, some], rtol=1e-6, atol=1e-7)
    assert list(part["sample_id_"].values) == list(g["sample_id"].values[some])
    # steps of one whole variant chunk (64) over runs of one sample chunk (32)
    runs = genomic_relationship(open_store(store), max_slab_bytes=8 * 64 * 40, columns=some)
    np.testing.assert_allclose(runs.values, g.values[:, some], rtol=1e-6, atol=1e-7)


def test_g_of_multiallelic_polyploid_store(tmp_path):
    store = make_store(tmp_path, 30, 40, ploidy=3, nalleles=5, missing=0.05, seed=2,
                       variants_chunk=16)
    g = genomic_relationship(open_store(store))
    np.testing.assert_allclose(g.values, reference_g(store), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- REML and BLUP


def test_restricted_loglik_equals_dense_formula(sim):
    _, g = sim
    y = simulate_trait(g, 0.6, seed=3)
    sp = Spectral.of(g, y)
    for lam in (0.01, 0.3, 1.0, 7.0, 200.0):
        assert restricted_loglik(lam, sp) == pytest.approx(dense_reml(lam, g, y), rel=1e-9)


@pytest.mark.parametrize("h2", [0.3, 0.7])
def test_reml_lambda_is_the_brute_force_maximum(sim, h2):
    _, g = sim
    y = simulate_trait(g, h2, seed=int(h2 * 10))
    _, fit = gblup(g, y, np.ones(len(y), bool))
    coarse = np.linspace(-6, 6, 121)
    values = np.array([dense_reml(np.exp(t), g, y) for t in coarse])
    best = coarse[np.argmax(values)]
    assert -6 < best < 6, "optimum on the grid's edge: simulation too weak for this test"
    fine = np.linspace(best - 0.1, best + 0.1, 41)
    values = np.array([dense_reml(np.exp(t), g, y) for t in fine])
    assert abs(np.log(fit.lam) - fine[np.argmax(values)]) <= fine[1] - fine[0]
    assert dense_reml(fit.lam, g, y) >= values.max() - 1e-9


def test_gblup_equals_dense_numpy_blup(sim):
    _, g = sim
    y = simulate_trait(g, 0.5, seed=5)
    train = np.random.default_rng(6).random(len(y)) < 0.8
    y_masked = np.where(train, y, np.nan)  # validation responses never reach the fit
    predicted, fit = gblup(g, y_masked, train)
    np.testing.assert_allclose(predicted, dense_blup(g, y, train, fit.lam), rtol=1e-9, atol=1e-9)
    assert fit.n_train == train.sum()
    assert fit.sigma_e2 == pytest.approx(fit.lam * fit.sigma_g2)
    # Accuracy on held-out rows is well above chance for a heritable trait.
    assert np.corrcoef(predicted[~train], y[~train])[0, 1] > 0.2


# ---------------------------------------------------------------- whole runs


def write_phenos(path: Path, y: np.ndarray, observed: np.ndarray, cv: np.ndarray) -> Path:
    lines = ["name\tresponse\tblock\tcv\ttrait"]
    for b in range(y.shape[1]):
        for i in np.flatnonzero(observed[:, b]):
            lines.append(f"g{i}\t{float(y[i, b])!r}\t{b}\t{cv[i, b]}\tt{b}")
    lines.append("not_a_sample\t1.0\t0\t0\tt0")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def blocks(sim, tmp_path_factory):
    """Three blocks; each sample observed in only some; folds 0..4."""
    _, g = sim
    rng = np.random.default_rng(7)
    y = np.stack([simulate_trait(g, h2, seed=10 + b) for b, h2 in enumerate((0.3, 0.5, 0.8))], 1)
    observed = rng.random(y.shape) < [0.95, 0.7, 0.5]
    cv = rng.integers(0, 5, size=y.shape)
    return y, observed, cv, tmp_path_factory.mktemp("phenos")


def test_run_equals_dense_gblup_per_block(sim, blocks):
    store, g = sim
    y, observed, cv, folder = blocks
    with pytest.warns(UserWarning, match="1 row"):
        preds, metrics = run_gblup(store, write_phenos(folder / "p.tsv", y, observed, cv), cv=2)
    train = observed & (cv != 2)
    valid = observed & (cv == 2)
    assert not train.any(axis=1).all()  # G's columns of the training lines alone
    for b in range(3):
        fit = metrics["fit"][str(b)]
        assert fit["n_train"] == train[:, b].sum()
        expected = dense_blup(g, y[:, b], train[:, b], fit["lam"])
        np.testing.assert_allclose(preds["predicted"].values[:, b], expected, rtol=1e-4, atol=1e-5)
        grid = np.linspace(np.log(fit["lam"]) - 0.05, np.log(fit["lam"]) + 0.05, 11)
        t = np.flatnonzero(train[:, b])
        sub = np.ix_(t, t)
        values = [dense_reml(np.exp(x), g[sub], y[t, b]) for x in grid]
        assert np.argmax(values) == 5  # REML's optimum, against the dense likelihood
        m = metrics["validation"]["blocks"][str(b)]
        assert m["n"] == valid[:, b].sum()
        assert m["pearson_r"] == pytest.approx(
            np.corrcoef(y[valid[:, b], b], expected[valid[:, b]])[0, 1], abs=1e-4
        )
    assert np.isfinite(preds["predicted"].values).all()  # every sample, every block
    assert metrics["phenotype_rows"]["not_in_store"] == 1


def test_validation_rows_never_reach_the_fit(sim, blocks):
    store, _ = sim
    y, observed, cv, folder = blocks
    changed = np.where(cv == 4, y + np.random.default_rng(8).normal(size=y.shape) * 5, y)
    with pytest.warns(UserWarning):
        a, ma = run_gblup(store, write_phenos(folder / "a.tsv", y, observed, cv), cv=4)
        b, mb = run_gblup(store, write_phenos(folder / "b.tsv", changed, observed, cv), cv=4)
    np.testing.assert_array_equal(a["predicted"].values, b["predicted"].values)
    assert ma["fit"] == mb["fit"]
    # ... while a training response does change them.
    nudged = y.copy()
    i = np.flatnonzero(observed[:, 0] & (cv[:, 0] != 4))[0]
    nudged[i, 0] += 1.0
    with pytest.warns(UserWarning):
        c, _ = run_gblup(store, write_phenos(folder / "c.tsv", nudged, observed, cv), cv=4)
    assert not np.array_equal(a["predicted"].values[:, 0], c["predicted"].values[:, 0])
    np.testing.assert_array_equal(a["predicted"].values[:, 1:], c["predicted"].values[:, 1:])


def test_blocks_too_small_or_constant(example_store, tmp_path):
    lines = (TEST_DATA / "phenos.tsv").read_text().splitlines()
    lines = [lines[0]] + [x for x in lines[1:] if x.split("\t")[2] == "0"]
    lines += ["g0\t1.0\t1\t0", "g1\t2.0\t1\t0"]  # block 1: two rows
    lines += [f"g{i}\t4.5\t2\t0" for i in range(6)]  # block 2: constant
    path = tmp_path / "p.tsv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(RuntimeWarning, match="block 1: 2 training row"):
        preds, metrics = run_gblup(example_store, path)
    p = preds["predicted"].values
    assert np.isfinite(p[:, 0]).all() and np.ptp(p[:, 0]) > 0
    assert np.isnan(p[:, 1]).all() and metrics["fit"]["1"] is None
    assert (p[:, 2] == 4.5).all() and metrics["fit"]["2"]["sigma_g2"] == 0.0


# ---------------------------------------------------------------- command line


def test_cli_baseline_end_to_end(example_store, tmp_path):
    phenos = TEST_DATA / "phenos.tsv"
    out = tmp_path / "gblup"
    proc = run_cli("baseline", example_store, phenos, "--cv", "1", "-o", out,
                   env={"GPERCEIVER_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "block 0" in proc.stdout and "mean r=" in proc.stdout
    assert "GBLUP kernel: 100%|" in proc.stderr  # a bar with the time left over G
    table = pd.read_csv(out / "predictions.tsv", sep="\t", dtype={"name": str})
    assert list(table.columns) == ["name", "block", "cv", "observed", "predicted"]
    assert len(table) == 40 * 2 and table["predicted"].notna().all()
    metrics = json.loads((out / "metrics.json").read_text())
    source = pd.read_csv(phenos, sep="\t")
    for b in (0, 1):
        rows = source[(source.block == b) & (source.cv == 1)]
        assert metrics["validation"]["blocks"][str(b)]["n"] == len(rows)
        assert metrics["fit"][str(b)]["n_train"] == int(((source.block == b) & (source.cv != 1)).sum())
    preds, _ = run_gblup(example_store, phenos, cv=1)
    np.testing.assert_allclose(
        table["predicted"].to_numpy(), preds["predicted"].values.T.ravel(), rtol=1e-6, atol=1e-6
    )

    # --test-fold: the same fold held out, reported as fit --test-fold reports it
    test = tmp_path / "gblup_test"
    proc = run_cli("baseline", example_store, phenos, "--test-fold", "1", "-o", test)
    assert proc.returncode == 0, proc.stderr
    assert "GBLUP test (fold 1) rows" in proc.stdout
    held = json.loads((test / "metrics.json").read_text())
    assert held["test"] == metrics["validation"] and held["validation"] is None
    assert (held["test_fold"], held["cv"], metrics["test_fold"], metrics["test"]) == (
        1, None, None, None)
    assert (test / "predictions.tsv").read_text() == (out / "predictions.tsv").read_text()
    both = run_cli("baseline", example_store, phenos, "--cv", "1", "--test-fold", "1")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    absent = run_cli("baseline", example_store, phenos, "--test-fold", "7", "-o", tmp_path / "x")
    assert absent.returncode == 2 and "--test-fold 7: no observed row" in absent.stderr
    assert not (tmp_path / "x").exists()

    again = run_cli("baseline", example_store, phenos, "--cv", "1", "-o", out)
    assert again.returncode == 5 and "--force" in again.stderr
    assert run_cli("baseline", example_store, phenos, "-o", out, "--force").returncode == 0
    assert json.loads((out / "metrics.json").read_text())["validation"] is None


def test_cli_bad_inputs_leave_nothing(example_store, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("name\tresponse\tblock\ng0\t1.0\t-1\n")
    proc = run_cli("baseline", example_store, bad, "-o", tmp_path / "out")
    assert proc.returncode == 3
    assert proc.stderr.strip() == (
        f"gperceiver: error: {bad}, line 2, column block: block '-1' is negative"
    )
    proc = run_cli("baseline", example_store, TEST_DATA / "phenos.tsv", "--cv", "7",
                   "-o", tmp_path / "out")
    assert proc.returncode == 2 and "--cv 7" in proc.stderr
    assert "Traceback" not in proc.stderr
    held = tmp_path / "held.tsv"  # every phenotyped line in the held-out fold
    held.write_text("name\tresponse\tblock\tcv\ng0\t2.6\t0\t0\ng1\t1.2\t0\t0\n")
    for flag in ("--cv", "--test-fold"):
        proc = run_cli("baseline", example_store, held, flag, "0", "-o", tmp_path / "out")
        assert proc.returncode == 3
        assert proc.stderr.strip() == (
            f"gperceiver: error: {held}: no training rows left (all rows are held out)")
    held.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv"]
