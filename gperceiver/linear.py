"""The linear marker-effect path of `fit`: adaptive ridge regression on standardised dosages.

Per block, y = mu + Z a + e with a_j ~ N(0, w_j sigma_a^2), Z the standardised
dosages (each non-reference allele's count on a genotype's copies, centred by
ploidy x frequency and scaled by sqrt(ploidy p (1 - p)); missing calls 0).

- Step 0 is GBLUP on standardised markers (w = 1, REML lambda).
- Each further step sets w from the previous step's squared effects (damped
  towards 1, capped), so that a few large-effect loci stand out as in BayesB
  while the rest stay polygenic; then REML and BLUP again.
- How many steps (0 .. MAX_STEPS) is chosen per block by k-fold cross-validation
  inside the training lines (by line, seeded): the lines a user reports on are
  never seen. The same folds give every training line an out-of-fold prediction,
  which is what the Perceiver's residual targets are made from (fitted values on
  the lines themselves would be shrunk towards the observations).

Everything is solved in sample space (K_w = Z diag(w) Z' / m, one
eigendecomposition per fit, `baseline.Spectral`), so the cost grows with the
training lines squared and linearly with the markers. Effects are kept per
(variant, allele), so any store with the model's variants can be predicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import numpy as np
import torch
import xarray as xr

from gperceiver import schema
from gperceiver.baseline import MIN_TRAIN_ROWS, Spectral, centred_dosages, reml_lambda
from gperceiver.errors import UsageError

MAX_STEPS = 2  # reweighting steps tried by the inner cross-validation
INNER_FOLDS = 5
DAMPING = 0.5  # w = DAMPING * 1 + (1 - DAMPING) * a^2 / mean(a^2)
MAX_WEIGHT = 50.0
MAX_DOSAGE_BYTES = 2 << 30  # the training lines' dosages are held in memory (float32)
READ_BYTES = 64 << 20  # genotypes read per step when predicting


def _variant_steps(ds: xr.Dataset, n_samples: int) -> list[tuple[int, int]]:
    n_variants = int(ds.sizes[schema.VARIANTS])
    per_variant = max(1, n_samples * int(ds.sizes[schema.PLOIDY]) * 4)
    step = max(1, READ_BYTES // per_variant)
    return [(lo, min(lo + step, n_variants)) for lo in range(0, n_variants, step)]


def _read(ds: xr.Dataset, lo: int, hi: int, rows: np.ndarray | None) -> np.ndarray:
    gt = ds["call_genotype"].data[lo:hi]
    if rows is not None:
        gt = gt[:, rows]
    with dask.config.set(scheduler="threads"):
        return np.asarray(gt.compute())


def read_dosages(ds: xr.Dataset, rows: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Standardised dosages (len(rows), variants x (alleles - 1)) of the samples `rows`."""
    n_cols = int(ds.sizes[schema.VARIANTS]) * (freq.shape[1] - 1)
    if len(rows) * n_cols * 4 > MAX_DOSAGE_BYTES:
        raise UsageError(
            f"the linear path holds the training lines' dosages in memory: {len(rows)} lines "
            f"x {n_cols} columns is over {MAX_DOSAGE_BYTES >> 30} GB; set \"linear\": false "
            "in --params, or filter markers first")
    z = np.empty((len(rows), int(ds.sizes[schema.VARIANTS]), freq.shape[1] - 1), np.float32)
    for lo, hi in _variant_steps(ds, len(rows)):
        z[:, lo:hi] = centred_dosages(_read(ds, lo, hi, rows), freq[lo:hi], standardise=True)
    return z.reshape(len(rows), -1)


# ---------------------------------------------------------------- fitting


def _reweighted(effects: np.ndarray) -> np.ndarray:
    sq = effects.astype(np.float64) ** 2
    mean = sq.mean()
    if mean <= 0:
        return np.ones_like(sq, dtype=np.float32)
    w = DAMPING + (1.0 - DAMPING) * sq / mean
    return np.minimum(w, MAX_WEIGHT).astype(np.float32)


def _steps(z: np.ndarray, y: np.ndarray, n_steps: int) -> list[tuple[float, np.ndarray]]:
    """(mu, effects) after each of steps 0..n_steps, fitted on every row of z."""
    m = z.shape[1]
    w = np.ones(m, np.float32)
    fits = []
    for step in range(n_steps + 1):
        k = ((z * w) @ z.T).astype(np.float64) / m
        sp = Spectral.of(k, y)
        lam = reml_lambda(sp)
        inv = 1.0 / (sp.s + lam)
        mu = float(np.sum(inv * sp.x * sp.y) / np.sum(inv * sp.x * sp.x))
        alpha = sp.u @ (inv * (sp.y - mu * sp.x))
        effects = w * (z.T @ alpha.astype(np.float32)) / m
        fits.append((mu, effects))
        if step < n_steps:
            w = _reweighted(effects)
    return fits


@dataclass
class BlockFit:
    """How one block's linear path was chosen: steps, inner-CV MSE per step."""

    steps: int
    inner_mse: list[float]
    n_train: int


def fit_block(z: np.ndarray, y: np.ndarray, folds: np.ndarray,
              max_steps: int = MAX_STEPS) -> tuple[float, np.ndarray, np.ndarray, BlockFit]:
    """(mu, effects, out-of-fold predictions, BlockFit) for one block's observed rows."""
    if len(y) < MIN_TRAIN_ROWS or np.ptp(y) == 0:
        mu = float(np.mean(y)) if len(y) else 0.0
        return mu, np.zeros(z.shape[1], np.float32), np.full(len(y), mu), BlockFit(0, [], len(y))
    oof = np.full((max_steps + 1, len(y)), np.nan)
    for f in np.unique(folds):
        held = folds == f
        if (~held).sum() < MIN_TRAIN_ROWS or np.ptp(y[~held]) == 0:
            oof[:, held] = y[~held].mean()
            continue
        for s, (mu, a) in enumerate(_steps(z[~held], y[~held], max_steps)):
            oof[s, held] = mu + z[held] @ a
    mse = np.mean((oof - y) ** 2, axis=1)
    best = int(np.argmin(mse))
    mu, effects = _steps(z, y, best)[best]
    return mu, effects, oof[best], BlockFit(best, [float(v) for v in mse], len(y))


def inner_folds(n: int, seed: int, k: int = INNER_FOLDS) -> np.ndarray:
    """A seeded fold number per line, as balanced as the count allows."""
    order = np.random.default_rng([seed, 0x11AE]).permutation(n)
    folds = np.empty(n, np.int64)
    folds[order] = np.arange(n) % k
    return folds


@dataclass
class LinearPath:
    """Fitted marker effects of every block, with the frequencies that centre them."""

    mu: np.ndarray  # (blocks,)
    effects: np.ndarray  # (blocks, variants, alleles - 1) float32
    freq: np.ndarray  # (variants, alleles) the training store's allele frequencies
    fits: list[BlockFit]

    def predict(self, ds: xr.Dataset) -> np.ndarray:
        """mu + Z a for every sample of `ds` and every block: (samples, blocks) float64."""
        n = int(ds.sizes[schema.SAMPLES])
        out = np.tile(self.mu, (n, 1)).astype(np.float64)
        for lo, hi in _variant_steps(ds, n):
            z = centred_dosages(_read(ds, lo, hi, None), self.freq[lo:hi], standardise=True)
            out += np.einsum("svc,bvc->sb", z, self.effects[:, lo:hi], dtype=np.float64)
        return out

    def to_dict(self) -> dict:
        return {"mu": torch.as_tensor(self.mu), "effects": torch.as_tensor(self.effects),
                "freq": torch.as_tensor(self.freq),
                "steps": [f.steps for f in self.fits]}

    @classmethod
    def from_dict(cls, d: dict) -> LinearPath:
        fits = [BlockFit(int(s), [], 0) for s in d["steps"]]
        return cls(np.asarray(d["mu"], np.float64), np.asarray(d["effects"], np.float32),
                   np.asarray(d["freq"], np.float64), fits)


def fit_linear(ds: xr.Dataset, response: np.ndarray, rows: np.ndarray, seed: int,
               steps: list[int] | None = None) -> tuple[LinearPath, np.ndarray | None]:
    """Fit every block on the observed responses of sample rows `rows`.

    Returns the path and its out-of-fold predictions (len(rows), blocks) for those
    rows (NaN where a block is unobserved). `response` is (samples, blocks), NaN
    where a row is not for training. `steps` (one per block) refits with steps
    chosen earlier: no inner cross-validation, and no out-of-fold predictions.
    """
    freq = np.asarray(ds["variant_allele_frequency"].values, np.float64)
    z = read_dosages(ds, rows, freq)
    folds = inner_folds(len(rows), seed)
    n_blocks = response.shape[1]
    mu = np.zeros(n_blocks)
    effects = np.zeros((n_blocks, z.shape[1]), np.float32)
    oof = None if steps is not None else np.full((len(rows), n_blocks), np.nan)
    fits = []
    for b in range(n_blocks):
        y = response[rows, b]
        obs = ~np.isnan(y)
        if steps is None:
            mu[b], effects[b], oof[obs, b], fit = fit_block(z[obs], y[obs], folds[obs])
        else:
            fit = BlockFit(steps[b], [], int(obs.sum()))
            if obs.sum() >= MIN_TRAIN_ROWS and np.ptp(y[obs]) > 0:
                mu[b], effects[b] = _steps(z[obs], y[obs], steps[b])[-1]
            else:
                mu[b] = float(np.mean(y[obs])) if obs.any() else 0.0
        fits.append(fit)
    shape = (n_blocks, int(ds.sizes[schema.VARIANTS]), freq.shape[1] - 1)
    return LinearPath(mu, effects.reshape(shape), freq, fits), oof
