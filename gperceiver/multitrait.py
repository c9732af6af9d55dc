"""Multi-trait BLUP: correlated blocks fitted together on one relationship kernel.

Y (rows, blocks) = 1 mu' + G + E with vec(G) ~ N(0, Sigma_g (x) K) and
vec(E) ~ N(0, Sigma_e (x) I): each block's genetic values borrow the evidence of
the blocks they are correlated with, which matters most where a line's phenotype
is missing in one block and observed in another (as in multi-trait GBLUP).

In K's eigenbasis (K = U diag(d) U') the rows decouple: row i of T = U'(Y - 1 mu')
has covariance V_i = d_i Sigma_g + Sigma_e, so after one eigendecomposition each
step costs rows^2 x blocks. Sigma_g and Sigma_e are estimated by EM (maximum
likelihood), starting from half of each block's variance each. A missing
phenotype is replaced at every step by its expectation given the line's observed
blocks (mean, genetic value, and the residual regressed on the observed ones),
and the residual variance of that replacement is counted in Sigma_e; without
it, Sigma_e would shrink with the share of missing phenotypes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ITERATIONS = 500
TOLERANCE = 1e-6  # largest change of Sigma_g or Sigma_e, relative to the mean variance


@dataclass
class MultiTraitFit:
    """Means, weights and covariances of a fit: g(x) = K(x, training rows) . beta."""

    mu: np.ndarray  # (blocks,)
    beta: np.ndarray  # (rows, blocks)
    sigma_g: np.ndarray  # (blocks, blocks) genetic covariance (K's scale)
    sigma_e: np.ndarray  # (blocks, blocks) residual covariance
    iterations: int

    @property
    def genetic_correlation(self) -> np.ndarray:
        sd = np.sqrt(np.clip(np.diag(self.sigma_g), 1e-300, None))
        return self.sigma_g / np.outer(sd, sd)


def _gls_mean(rotated: np.ndarray, ones: np.ndarray, v_inv: np.ndarray) -> np.ndarray:
    """The generalised least-squares means (blocks,) of rotated rows U'Y given U'1."""
    lhs = np.einsum("n,njk->jk", ones * ones, v_inv)
    return np.linalg.solve(lhs, np.einsum("n,njk,nk->j", ones, v_inv, rotated))


class _Gaps:
    """The rows with a missing phenotype, grouped by which blocks they miss (fixed over the
    steps): each step replaces their missing phenotypes by expectations."""

    def __init__(self, y: np.ndarray):
        missing = np.isnan(y)
        gaps = missing.any(axis=1)
        self.rows = np.flatnonzero(gaps)
        self.y, self.missing = y[gaps], missing[gaps]
        # per pattern: its rows' observed phenotypes, where their gaps are, and the index
        # pairs (observed, observed), (observed, missing), (missing, missing) of blocks
        self.groups = []
        for pattern in np.unique(self.missing, axis=0):
            rows = np.flatnonzero((self.missing == pattern).all(axis=1))
            m, o = np.flatnonzero(pattern), np.flatnonzero(~pattern)
            self.groups.append((np.ix_(rows, o), np.ix_(rows, m), np.ix_(o, o), np.ix_(o, m),
                                np.ix_(m, m), len(rows)))

    def impute(self, expected: np.ndarray, sigma_e: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """The gap rows with each missing phenotype replaced by its expectation given the
        line's observed blocks (its mean and genetic value, `expected`, plus the residual
        regressed on the observed ones), and the summed residual covariance of those
        replacements (blocks, blocks)."""
        filled = np.where(self.missing, expected, self.y)
        unseen = np.zeros_like(sigma_e)
        for seen, gap, oo, om, mm, count in self.groups:
            regression = np.linalg.solve(sigma_e[oo], sigma_e[om]).T
            filled[gap] += (self.y[seen] - expected[seen]) @ regression.T
            unseen[mm] += count * (sigma_e[mm] - regression @ sigma_e[om])
        return filled, unseen


def fit(k: np.ndarray, y: np.ndarray) -> MultiTraitFit:
    """Fit y (rows, blocks; NaN = unobserved, every row and block with some observation)
    on the rows' kernel k (rows, rows)."""
    s, u = np.linalg.eigh(k)
    s = np.clip(s, 0.0, None)
    missing = np.isnan(y)
    variance = np.nanvar(y, axis=0)
    sigma_g, sigma_e = np.diag(variance / 2), np.diag(variance / 2)
    # only the rows with a missing phenotype change between steps: U'Y is the observed
    # part's (once) plus theirs, and their genetic values are all a step needs
    gaps = _Gaps(y)
    u_gaps = u[gaps.rows]
    observed_part = u.T @ np.where(missing, 0.0, y)
    filled = np.where(gaps.missing, np.nanmean(y, axis=0), gaps.y)  # the gap rows
    ones = u.sum(axis=0)  # U' 1: the intercept in the eigenbasis

    def rotate(filled: np.ndarray) -> np.ndarray:
        return observed_part + u_gaps.T @ np.where(gaps.missing, filled, 0.0)

    unseen = np.zeros_like(sigma_e)
    iterations, change = 0, np.inf
    while iterations < MAX_ITERATIONS and change >= TOLERANCE * variance.mean():
        iterations += 1
        v_inv = np.linalg.inv(s[:, None, None] * sigma_g + sigma_e)
        rotated = rotate(filled)
        mu = _gls_mean(rotated, ones, v_inv)
        t = rotated - np.outer(ones, mu)
        # a_i = Sigma_g V_i^-1 t_i; the posterior mean of row i's rotated G is s_i a_i
        # and its covariance C_i = s_i Sigma_g - s_i^2 Sigma_g V_i^-1 Sigma_g
        a = (v_inv @ t[:, :, None])[:, :, 0] @ sigma_g  # Sigma_g symmetric
        shrink = sigma_g @ v_inv @ sigma_g
        posterior = s[:, None, None] * (sigma_g - s[:, None, None] * shrink)
        # E[g g' / s] and E[(t - g)(t - g)'] summed over the rows
        new_g = (np.einsum("n,ni,nj->ij", s, a, a) + len(s) * sigma_g
                 - np.einsum("n,nij->ij", s, shrink)) / len(s)
        residual = t - s[:, None] * a
        new_e = (residual.T @ residual + posterior.sum(axis=0) + unseen) / len(s)
        change = max(np.abs(new_g - sigma_g).max(), np.abs(new_e - sigma_e).max())
        filled, unseen = gaps.impute(mu + u_gaps @ (s[:, None] * a), sigma_e)
        sigma_g, sigma_e = new_g, new_e
    v_inv = np.linalg.inv(s[:, None, None] * sigma_g + sigma_e)
    rotated = rotate(filled)
    mu = _gls_mean(rotated, ones, v_inv)
    beta = u @ np.einsum("njk,nk->nj", v_inv, rotated - np.outer(ones, mu)) @ sigma_g
    return MultiTraitFit(mu, beta, sigma_g, sigma_e, iterations)
