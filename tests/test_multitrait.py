"""Multi-trait BLUP: the EM fit against dense Kronecker algebra, and what it buys."""

from __future__ import annotations

import numpy as np

from gperceiver import multitrait
from gperceiver.linear import fit_rows


def _kernel(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    z = rng.standard_normal((n, m))
    z -= z.mean(axis=0)
    return z @ z.T / m


def _sample(rng: np.random.Generator, k: np.ndarray, sigma_g: np.ndarray,
            sigma_e: np.ndarray, mu: np.ndarray) -> np.ndarray:
    n = len(k)
    lk = np.linalg.cholesky(k + 1e-9 * np.eye(n))
    g = lk @ rng.standard_normal((n, len(mu))) @ np.linalg.cholesky(sigma_g).T
    e = rng.standard_normal((n, len(mu))) @ np.linalg.cholesky(sigma_e).T
    return mu + g + e


def _dense(k: np.ndarray, y: np.ndarray, sigma_g: np.ndarray, sigma_e: np.ndarray):
    """(ML log-likelihood at the GLS means, those means, BLUP of G) by Kronecker algebra,
    vec stacking block after block."""
    n, b = y.shape
    v = np.kron(sigma_g, k) + np.kron(sigma_e, np.eye(n))
    x = np.kron(np.eye(b), np.ones((n, 1)))
    v_inv = np.linalg.inv(v)
    mu = np.linalg.solve(x.T @ v_inv @ x, x.T @ v_inv @ y.T.ravel())
    r = y.T.ravel() - x @ mu
    loglik = -0.5 * (np.linalg.slogdet(v)[1] + r @ v_inv @ r)
    g = (np.kron(sigma_g, k) @ v_inv @ r).reshape(b, n).T
    return loglik, mu, g


def test_fit_is_the_dense_blup_at_a_maximum_of_the_likelihood():
    rng = np.random.default_rng(0)
    k = _kernel(rng, 90, 40) + 0.1 * np.ones((90, 90))  # 1 is not in k's null space
    sigma_g = np.array([[1.0, 0.7], [0.7, 0.8]])
    y = _sample(rng, k, sigma_g, np.array([[0.6, 0.2], [0.2, 0.9]]), np.array([3.0, -1.0]))
    found = multitrait.fit(k, y)
    assert found.iterations < multitrait.MAX_ITERATIONS
    best, mu, g = _dense(k, y, found.sigma_g, found.sigma_e)
    np.testing.assert_allclose(found.mu, mu, rtol=1e-8)
    np.testing.assert_allclose(k @ found.beta, g, atol=1e-8)
    # EM stopped at a maximum: every nearby (Sigma_g, Sigma_e) is less likely
    for _ in range(20):
        step = rng.normal(scale=0.03, size=(2, 2, 2))
        step = step + step.transpose(0, 2, 1)
        nearby = _dense(k, y, found.sigma_g + step[0], found.sigma_e + step[1])[0]
        assert nearby < best


def test_genetic_correlation_is_recovered_with_missing_phenotypes():
    rng = np.random.default_rng(1)
    k = _kernel(rng, 700, 300)
    sigma_g = np.array([[1.0, 0.8], [0.8, 1.0]])
    y = _sample(rng, k, sigma_g, 0.5 * np.eye(2), np.zeros(2))
    y[rng.random(y.shape) < 0.2] = np.nan
    y[np.isnan(y).all(axis=1), 0] = 0.0  # every line keeps one phenotype
    found = multitrait.fit(k, y)
    assert abs(found.genetic_correlation[0, 1] - 0.8) < 0.12, found.sigma_g
    np.testing.assert_allclose(np.diag(found.sigma_e), 0.5, atol=0.15)


def test_marker_path_borrows_a_correlated_block_for_lines_missing_one():
    """Block 0 is observed on a third of the training lines, block 1 (genetic correlation
    0.95) on all of them: fitted together, block 0 is predicted better on new lines."""
    rng = np.random.default_rng(2)
    n, m = 500, 200
    z = rng.standard_normal((n, m)).astype(np.float32)
    effects = rng.standard_normal((m, 2)) @ np.linalg.cholesky([[1, 0.95], [0.95, 1]]).T
    genetic = z @ effects / np.sqrt(m)
    y = genetic + rng.standard_normal((n, 2)) * genetic.std(axis=0)
    train, test = np.arange(400), np.arange(400, 500)
    y_train = y[train].copy()
    y_train[np.arange(400) % 3 != 0, 0] = np.nan
    fit = fit_rows(z[train], y_train)
    assert fit.genetic_correlation[0, 1] > 0.8, fit.genetic_correlation
    together = fit.predict_rows(z[test])[:, 0]
    alone = fit_rows(z[train], y_train[:, :1]).predict_rows(z[test])[:, 0]
    r_together = np.corrcoef(together, genetic[test, 0])[0, 1]
    r_alone = np.corrcoef(alone, genetic[test, 0])[0, 1]
    assert r_together > r_alone + 0.1, (r_together, r_alone)
