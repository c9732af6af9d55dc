"""The marker-effect path of `fit`: a mixed model on standardised dosages, solved in closed form.

Every block b of y = mu + g + e shares one kernel, K_a + theta K_e (+ phi K_L), where
Z holds the standardised dosages (each non-reference allele's count on a
genotype's copies, centred by ploidy x frequency and scaled by
sqrt(ploidy p (1 - p)); missing calls 0) and W the marker variances:

- K_a = Z W Z' (normalised to a mean diagonal of 1): additive marker effects.
  W starts at 1 (GBLUP on standardised markers). Each of REWEIGHTS steps fits
  every block alone, then sets w_j from the squared effects of all blocks (each
  block's normalised to mean 1, then averaged; damped towards 1, capped), so
  that loci that matter in any block stand out, as in BayesB, with the evidence
  of correlated blocks pooled. The last of several steps fits K_a + theta K_e
  (theta by REML), so the effects are estimated beside the interactions.
- K_e = K_T o K_T (element-wise square), K_T built like K_a from the TOP_LOCI
  columns with the largest weights: pairwise (additive x additive) interactions
  among the loci that matter, as in epistatic GBLUP but weighted.
- With a pretrained encoder (`fit --pretrained`), K_L = X X' from its latents
  (every latent vector of a sample, flattened and standardised over the store's
  samples): what pretraining learned about the genotypes, used as a relationship
  matrix. A random encoder's latents get a share of 0 on the mice.
- theta (from THETAS, 0 = no interactions) is the share whose predictions of the
  INNER_FOLDS folds of the training lines err least (`inner_theta`; by REML where
  there are no inner folds); phi (from PHIS, 0 = none) maximises the restricted
  likelihood (REML) summed over the blocks, each block alone on its observed rows.
  Nothing is chosen on the lines a user reports on.
- The blocks are then fitted together on that kernel (`multitrait`: multi-trait
  BLUP, genetic and residual covariances by maximum likelihood), so a line's
  observed blocks inform its missing ones and correlated blocks share evidence;
  a single block is REML GBLUP on its kernel.

The inner folds (by line, seeded) also give every training line an out-of-fold
prediction: the Perceiver learns from these residuals (fitted values on the lines
themselves would be shrunk towards the observations).

Everything is solved in sample space (one eigendecomposition per kernel, see
`baseline.Spectral`): the cost grows with the training lines squared and
linearly with the markers. The additive part is kept as effects per (variant,
allele), the interaction part as the training lines' dosages at the top
columns, so any store with the model's variants can be predicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from gperceiver import multitrait
from gperceiver.baseline import (
    MIN_TRAIN_ROWS,
    Spectral,
    blup,
    reml_lambda,
    restricted_loglik,
)
from gperceiver.dosages import Dosages, chunk_blocks, standardised_slab
from gperceiver.progress import progress_bar
from gperceiver.store import schema

REWEIGHTS = 2  # marker-variance updates before the final fit
DAMPING = 0.5  # w = DAMPING * 1 + (1 - DAMPING) * a^2 / mean(a^2)
MAX_WEIGHT = 50.0
TOP_LOCI = 1024  # columns whose pairwise interactions make K_e
THETAS = (0.0, 0.1, 0.25, 0.5, 1.0)  # interaction variance / additive, chosen on inner folds
PHIS = (0.0, 0.25, 0.5, 1.0, 2.0)  # latent-kernel variance / additive, chosen by REML
INNER_FOLDS = 5
PREDICT_ROWS = 4096  # samples per step of the interaction part's prediction


# ---------------------------------------------------------------- fitting


def _kernel(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    return ((a * w) @ b.T).astype(np.float64)


def _solve(k: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(mu, alpha, REML log-likelihood) of y = mu + g + e, g ~ N(0, s2 k), lambda by REML."""
    sp = Spectral.of(k, y)
    lam = reml_lambda(sp)
    return (*blup(sp, lam), restricted_loglik(lam, sp))


def _reweighted(effects: list[np.ndarray]) -> np.ndarray:
    """Marker variances from every block's effects, each block normalised to mean 1."""
    sq = [a.astype(np.float64) ** 2 for a in effects]
    sq = [s / s.mean() for s in sq if s.mean() > 0]
    if not sq:
        return np.ones_like(effects[0], dtype=np.float32)
    w = DAMPING + (1.0 - DAMPING) * np.mean(sq, axis=0)
    return np.minimum(w, MAX_WEIGHT).astype(np.float32)


@dataclass
class Shares:
    """The variance of the interaction (theta) and latent (phi) kernels over the additive."""

    theta: float = 0.0
    phi: float = 0.0


def _reml_sum(parts: list[tuple[float, np.ndarray]], y: np.ndarray, fitted: list[int]) -> float:
    """The REML log-likelihood summed over the fitted blocks, each on its observed rows, of
    the kernel sum(share x kernel) over `parts`."""
    total = 0.0
    for b in fitted:
        rows = ~np.isnan(y[:, b])
        at = np.ix_(rows, rows)
        total += _solve(sum(c * k[at] for c, k in parts if c), y[rows, b])[2]
    return total


def _shares(k_a: np.ndarray, k_e: np.ndarray, k_l: np.ndarray | None, y: np.ndarray,
            fitted: list[int], theta: float | None = None) -> Shares:
    """theta from THETAS (unless given), then phi from PHIS, each maximising the REML
    log-likelihood summed over the fitted blocks: one kernel for them all."""
    if not fitted:
        return Shares()
    if theta is None:  # the first of equals, as max() would
        theta = THETAS[int(np.argmax([_reml_sum([(1.0, k_a), (t, k_e)], y, fitted)
                                      for t in THETAS]))]
    if k_l is None:
        return Shares(float(theta))
    phi = PHIS[int(np.argmax([_reml_sum([(1.0, k_a), (theta, k_e), (p, k_l)], y, fitted)
                              for p in PHIS]))]
    return Shares(float(theta), float(phi))


def _blup(k: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu (blocks,), beta (rows, blocks), genetic correlation (blocks, blocks)) with
    g(x) = k(x, rows) . beta: REML GBLUP on one block's observed rows, multi-trait BLUP
    (`multitrait.fit`) on several blocks."""
    if y.shape[1] > 1:
        found = multitrait.fit(k, y)
        return found.mu, found.beta, found.genetic_correlation
    rows = ~np.isnan(y[:, 0])
    beta = np.zeros_like(y)
    mu, beta[rows, 0], _ = _solve(k[np.ix_(rows, rows)], y[rows, 0])
    return np.array([mu]), beta, np.ones((1, 1))


def _fitted_blocks(y: np.ndarray) -> list[int]:
    """The blocks of y (rows, blocks; NaN = unobserved) with enough varying rows to fit."""
    observed = ~np.isnan(y)
    return [b for b in range(y.shape[1]) if observed[:, b].sum() >= MIN_TRAIN_ROWS
            and np.ptp(y[observed[:, b], b]) > 0]


@dataclass
class BlockFit:
    """How one block's path was fitted: interaction and latent shares, rows, inner-CV MSE."""

    theta: float
    n_train: int
    inner_mse: float | None = None
    phi: float = 0.0


@dataclass
class MixedFit:
    """A fit on rows of standardised dosages: additive effects plus the interaction part."""

    mu: np.ndarray  # (blocks,)
    effects: np.ndarray  # (blocks, columns) float32
    top: np.ndarray  # (k,) the columns of K_e
    top_scale: np.ndarray  # (k,) float32: w / normaliser, so k_T(x, i) = (x * scale) . z_i
    z_top: np.ndarray  # (rows, k) float32 the training rows' dosages at `top`
    epistatic: np.ndarray  # (blocks, rows) theta x alpha: g_e(x) = k_T(x, .)^2 . this
    fits: list[BlockFit]
    latent_effects: np.ndarray | None = None  # (blocks, features) on standardised latents
    # (blocks, blocks) between the fitted blocks' genetic values (NaN: a block not fitted);
    # not kept in checkpoints: it reports the fit, predictions do not need it
    genetic_correlation: np.ndarray | None = None

    @property
    def theta(self) -> float:
        """The interaction share of the fitted blocks (those not fitted have 0)."""
        return max((f.theta for f in self.fits), default=0.0)

    def predict_rows(self, z: Dosages | np.ndarray, latent: np.ndarray | None = None
                     ) -> np.ndarray:
        """(rows, blocks) predictions of standardised dosages z (rows, columns) and, with
        a latent kernel, the rows' standardised latents."""
        z = Dosages.standardised(z)
        out = self.mu + z.dot(self.effects) + self.interactions(z.columns(self.top))
        return out + self.latent_part(latent)

    def latent_part(self, latent: np.ndarray | None) -> np.ndarray | float:
        if self.latent_effects is None:
            return 0.0
        if latent is None:
            raise ValueError("this path uses a pretrained encoder's latents: pass them")
        return (latent @ self.latent_effects.T).astype(np.float64)

    def interactions(self, x_top: np.ndarray) -> np.ndarray:
        """The interaction part (rows, blocks) of dosages at the top columns."""
        out = np.zeros((len(x_top), len(self.mu)))
        if not self.epistatic.any():
            return out
        for lo in range(0, len(x_top), PREDICT_ROWS):
            k = _kernel(x_top[lo:lo + PREDICT_ROWS], self.z_top, self.top_scale)
            out[lo:lo + PREDICT_ROWS] = (k * k) @ self.epistatic.T
        return out


def _interactions(z: Dosages, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """(top, Z at top, normaliser, K_e) of the TOP_LOCI columns with the largest weights."""
    top = np.sort(np.argsort(-w, kind="stable")[:min(TOP_LOCI, z.shape[1])])
    z_top = z.columns(top)
    k_t = _kernel(z_top, z_top, w[top])
    norm = float(np.mean(np.diag(k_t))) or 1.0
    return top, z_top, norm, (k_t / norm) ** 2


@dataclass
class _Kernels:
    """What a fit's shares and solution are chosen on: the marker weights w and the
    kernels over the fitted rows (K_a normalised, K_e, K_L or None)."""

    w: np.ndarray
    scale: float  # K_a's normaliser
    top: np.ndarray
    z_top: np.ndarray
    top_norm: float
    k_a: np.ndarray | None
    k_e: np.ndarray | None
    k_l: np.ndarray | None
    latent_norm: float
    fitted: list[int]


def _kernels(z: Dosages, y: np.ndarray, latent: np.ndarray | None,
             unweighted: np.ndarray | None) -> _Kernels:
    """Reweight the markers (REWEIGHTS steps), then make the kernels of the final fit.

    Each step fits every block alone and sets w from its effects (`_reweighted`). The
    last of several steps fits K_a + theta K_e (theta by REML): effects estimated
    beside the interactions they would otherwise partly absorb."""
    observed = ~np.isnan(y)
    fitted = _fitted_blocks(y)
    m = z.shape[1]
    effects = np.zeros((y.shape[1], m), np.float32)
    w = np.ones(m, np.float32)
    reweighted = False  # w is still 1: the first kernel is `unweighted` when given

    def additive_kernel() -> tuple[np.ndarray, float]:
        if unweighted is not None and not reweighted:
            scale = float(np.mean(np.diag(unweighted))) or 1.0
            return unweighted / scale, scale
        k = z.gram(w)
        scale = float(np.mean(np.diag(k))) or 1.0
        k /= scale
        return k, scale

    steps = REWEIGHTS if fitted else 0
    for step in range(steps):
        k, scale = additive_kernel()
        if 0 < step == steps - 1:
            k_e = _interactions(z, w)[3]
            k += _shares(k, k_e, None, y, fitted).theta * k_e
            del k_e
        for b in fitted:
            rows = observed[:, b]
            alpha = _solve(k[np.ix_(rows, rows)], y[rows, b])[1]
            effects[b] = w * z.t_dot(alpha, rows) / scale
        w, reweighted = _reweighted([effects[b] for b in fitted]), True
        k = None  # released before the next kernel is made (lines^2 each)

    k_a, scale = additive_kernel() if fitted else (None, 1.0)
    top, z_top, top_norm, k_e = _interactions(z, w)
    k_l, latent_norm = None, 1.0
    if latent is not None:
        k_l = (latent @ latent.T).astype(np.float64)
        latent_norm = float(np.mean(np.diag(k_l))) or 1.0
        k_l /= latent_norm
    return _Kernels(w, scale, top, z_top, top_norm, k_a, k_e, k_l, latent_norm, fitted)


def _solution(kernels: _Kernels, z: Dosages, y: np.ndarray, latent: np.ndarray | None,
              shares: Shares, release: bool = False) -> MixedFit:
    """The blocks fitted together on K_a + theta K_e (+ phi K_L); `release` frees the
    kernels before the solve (their memory, lines^2 each, is needed there)."""
    kn = kernels
    n, n_blocks = y.shape
    observed = ~np.isnan(y)
    mu = np.array([float(np.mean(y[observed[:, b], b])) if observed[:, b].any() else 0.0
                   for b in range(n_blocks)])
    effects = np.zeros((n_blocks, z.shape[1]), np.float32)
    epistatic = np.zeros((n_blocks, n))
    latent_effects = None if latent is None else np.zeros((n_blocks, latent.shape[1]),
                                                          np.float32)
    genetic_correlation = np.full((n_blocks, n_blocks), np.nan)
    fits = [BlockFit(0.0, int(observed[:, b].sum())) for b in range(n_blocks)]
    fitted = kn.fitted
    if fitted:
        # the rows with an observation in a fitted block, and their kernel
        used = observed[:, fitted].any(axis=1)
        at = np.ix_(used, used)
        k = kn.k_a[at] + shares.theta * kn.k_e[at]
        if kn.k_l is not None:
            k += shares.phi * kn.k_l[at]
        if release:
            kn.k_a = kn.k_e = kn.k_l = None
        mu_fitted, beta, correlation = _blup(k, y[np.ix_(used, fitted)])
        del k
        genetic_correlation[np.ix_(fitted, fitted)] = correlation
        for i, b in enumerate(fitted):
            mu[b] = mu_fitted[i]
            effects[b] = kn.w * z.t_dot(beta[:, i], used) / kn.scale
            epistatic[b, used] = shares.theta * beta[:, i]
            if latent_effects is not None:
                latent_effects[b] = shares.phi * (latent[used].T @ beta[:, i].astype(
                    np.float32)) / kn.latent_norm
            fits[b].theta, fits[b].phi = shares.theta, shares.phi
    if latent_effects is not None and not latent_effects.any():
        latent_effects = None  # REML gave the latents no share: predict without them
    return MixedFit(mu, effects, kn.top, (kn.w[kn.top] / kn.top_norm).astype(np.float32),
                    kn.z_top, epistatic, fits, latent_effects, genetic_correlation)


def fit_rows(z: Dosages | np.ndarray, y: np.ndarray, latent: np.ndarray | None = None,
             unweighted: np.ndarray | None = None, theta: float | None = None) -> MixedFit:
    """Fit every block of y (rows, blocks; NaN = unobserved) on dosages z (rows, columns),
    with a latent kernel when the rows' standardised latents are given.

    `unweighted`: Z Z' of these rows when the caller has it (the first kernel of every
    fit; the inner folds take theirs out of the training lines' instead of computing it).
    `theta`: the interaction share, chosen by REML when not given.
    """
    z = Dosages.standardised(z)
    kernels = _kernels(z, y, latent, unweighted)
    shares = _shares(kernels.k_a, kernels.k_e, kernels.k_l, y, kernels.fitted, theta)
    return _solution(kernels, z, y, latent, shares, release=True)


def fits_by_theta(z: Dosages | np.ndarray, y: np.ndarray, latent: np.ndarray | None = None,
                  unweighted: np.ndarray | None = None) -> list[MixedFit]:
    """`fit_rows` at every share of THETAS (phi by REML at each), on one set of kernels."""
    z = Dosages.standardised(z)
    kn = _kernels(z, y, latent, unweighted)
    return [_solution(kn, z, y, latent, _shares(kn.k_a, kn.k_e, kn.k_l, y, kn.fitted, t),
                      release=t == THETAS[-1]) for t in THETAS]


def inner_folds(n: int, seed: int, k: int = INNER_FOLDS) -> np.ndarray:
    """A seeded fold number per line, as balanced as the count allows."""
    order = np.random.default_rng([seed, 0x11AE]).permutation(n)
    folds = np.empty(n, np.int64)
    folds[order] = np.arange(n) % k
    return folds


def out_of_fold(z: Dosages, y: np.ndarray, folds: np.ndarray,
                latent: np.ndarray | None = None, unweighted: np.ndarray | None = None
                ) -> np.ndarray:
    """Each row's prediction by the path fitted on the other folds' rows, at every share
    of THETAS (thetas, rows, blocks; NaN where y is); `unweighted` (Z Z' of every row)
    gives each fit its first kernel."""
    oof = np.full((len(THETAS), *y.shape), np.nan)
    for f in np.unique(folds):
        held = folds == f
        part = None if latent is None else latent[~held]
        first = None if unweighted is None else unweighted[np.ix_(~held, ~held)]
        for i, fit in enumerate(fits_by_theta(z.rows(~held), y[~held], part, first)):
            oof[i, held] = fit.predict_rows(z.rows(held), None if latent is None
                                            else latent[held])
    return np.where(np.isnan(y), np.nan, oof)


def inner_theta(oof: np.ndarray, y: np.ndarray) -> int:
    """The index into THETAS whose out-of-fold predictions (thetas, rows, blocks) err
    least: squared errors summed over the blocks, each over its variance (the first of
    equals; 0 when no block was fitted; a share whose fits failed is never taken)."""
    observed = ~np.isnan(oof[0]) & ~np.isnan(y)
    error = np.zeros(len(oof))
    for b in range(y.shape[1]):
        seen = observed[:, b]
        variance = float(np.var(y[seen, b])) if seen.sum() > 1 else 0.0
        if variance > 0:
            error += np.mean((oof[:, seen, b] - y[seen, b]) ** 2, axis=1) / variance
    return int(np.argmin(np.where(np.isnan(error), np.inf, error)))


def standardised(latents: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, mean, inverse sd) of latents (samples, features): columns centred and scaled
    over the samples given (constant ones get 0)."""
    x = np.asarray(latents, np.float32).reshape(len(latents), -1)
    mean = x.mean(0)
    sd = x.std(0)
    inv = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 1e-6).astype(np.float32)
    return (x - mean) * inv, mean, inv


# ---------------------------------------------------------------- the path of a store


@dataclass
class LinearPath:
    """A fitted path over a store's variants, with the frequencies that centre its dosages."""

    fit: MixedFit  # columns are (variant, allele - 1) flattened
    freq: np.ndarray  # (variants, alleles) the training store's allele frequencies
    latent_mean: np.ndarray | None = None  # (features,) standardising the encoder's latents
    latent_inv_sd: np.ndarray | None = None

    @property
    def fits(self) -> list[BlockFit]:
        return self.fit.fits

    @property
    def uses_latents(self) -> bool:
        return self.fit.latent_effects is not None

    def predict(self, ds: xr.Dataset, latents: np.ndarray | None = None,
                rows: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
        """The path's prediction for every sample of `ds` and every block: (samples, blocks);
        with `rows`, for those samples alone (the others NaN, their genotypes not read).

        `latents` (samples, ...): the pretrained encoder's latents of `ds`'s samples,
        needed when the path uses them. `progress`: a bar over the genotypes read
        (minutes at tens of thousands of lines x 100,000 markers).
        """
        if rows is not None:
            full = np.full((int(ds.sizes[schema.SAMPLES]), len(self.fit.mu)), np.nan)
            picked = None if latents is None else np.asarray(latents)[rows]
            full[rows] = self._predict(ds, picked, np.asarray(rows), progress)
            return full
        return self._predict(ds, latents, None, progress)

    def _predict(self, ds: xr.Dataset, latents: np.ndarray | None,
                 rows: np.ndarray | None, progress: bool) -> np.ndarray:
        n = int(ds.sizes[schema.SAMPLES]) if rows is None else len(rows)
        per_variant = self.freq.shape[1] - 1
        effects = self.fit.effects.reshape(len(self.fit.mu), -1, per_variant)
        out = np.tile(self.fit.mu, (n, 1)).astype(np.float64)
        x_top = np.zeros((n, len(self.fit.top)), np.float32)
        bar = progress_bar(n * int(ds.sizes[schema.VARIANTS]), "marker path predictions", "",
                           progress, share=True)
        for s_lo, s_hi, lo, hi in chunk_blocks(ds, n):  # each chunk of the store once
            picked = slice(s_lo, s_hi) if rows is None else rows[s_lo:s_hi]
            z = standardised_slab(ds, lo, hi, picked, self.freq)
            out[s_lo:s_hi] += np.einsum("svc,bvc->sb", z, effects[:, lo:hi], dtype=np.float64)
            here = (self.fit.top >= lo * per_variant) & (self.fit.top < hi * per_variant)
            x_top[s_lo:s_hi, here] = z.reshape(s_hi - s_lo, -1)[
                :, self.fit.top[here] - lo * per_variant]
            bar.update((s_hi - s_lo) * (hi - lo))
        bar.close()
        latent = None  # latent_part refuses None when the path uses latents
        if self.uses_latents and latents is not None:
            flat = np.asarray(latents, np.float32).reshape(n, -1)
            latent = (flat - self.latent_mean) * self.latent_inv_sd
        return out + self.fit.interactions(x_top) + self.fit.latent_part(latent)

    def to_dict(self) -> dict:
        f = self.fit
        d = {"mu": torch.as_tensor(f.mu), "effects": torch.as_tensor(f.effects),
             "top": torch.as_tensor(f.top), "top_scale": torch.as_tensor(f.top_scale),
             "z_top": torch.as_tensor(f.z_top), "epistatic": torch.as_tensor(f.epistatic),
             "theta": [b.theta for b in f.fits], "freq": torch.as_tensor(self.freq)}
        if self.uses_latents:
            d.update(phi=[b.phi for b in f.fits],
                     latent_effects=torch.as_tensor(f.latent_effects),
                     latent_mean=torch.as_tensor(self.latent_mean),
                     latent_inv_sd=torch.as_tensor(self.latent_inv_sd))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LinearPath:
        mu = np.asarray(d["mu"], np.float64)
        effects = np.asarray(d["effects"], np.float32).reshape(len(mu), -1)
        if "top" not in d:  # written before the interaction part: additive effects alone
            d = {**d, "top": np.zeros(0, np.int64), "top_scale": np.zeros(0, np.float32),
                 "z_top": np.zeros((0, 0), np.float32), "epistatic": np.zeros((len(mu), 0)),
                 "theta": [0.0] * len(mu)}
        fits = [BlockFit(float(t), 0, phi=float(phi))
                for t, phi in zip(d["theta"], d.get("phi", [0.0] * len(mu)), strict=True)]
        latent = {k: np.asarray(d[k], np.float32) if k in d else None
                  for k in ("latent_effects", "latent_mean", "latent_inv_sd")}
        fit = MixedFit(mu, effects, np.asarray(d["top"], np.int64),
                       np.asarray(d["top_scale"], np.float32), np.asarray(d["z_top"], np.float32),
                       np.asarray(d["epistatic"], np.float64), fits, latent["latent_effects"])
        return cls(fit, np.asarray(d["freq"], np.float64), latent["latent_mean"],
                   latent["latent_inv_sd"])


def fit_linear(ds: xr.Dataset, response: np.ndarray, rows: np.ndarray, seed: int,
               out_of_fold_predictions: bool = True, latents: np.ndarray | None = None,
               max_bytes: int | None = None, progress: bool = False,
               theta: float | None = None) -> tuple[LinearPath, np.ndarray | None]:
    """Fit every block on the observed responses of sample rows `rows`.

    `response` is (samples, blocks), NaN where a row is not for training. Returns
    the path and, unless `out_of_fold_predictions` is false, each of those rows'
    out-of-fold predictions (len(rows), blocks; NaN where a block is unobserved),
    with the inner-CV MSE per block in the path's `fits` (that of the chosen share: the
    least of THETAS on these folds, so slightly optimistic); the interaction share
    theta is the one of THETAS whose out-of-fold predictions err least (`inner_theta`),
    else `theta`, else chosen by REML. `latents` (samples, ...):
    a pretrained encoder's latents of every sample of `ds`, for the latent kernel
    (standardised over all of them: genotypes only, no phenotype). `max_bytes`: what
    the training lines' genotypes may take (`Dosages.read`). `progress`: a bar over
    the kernels' work (most of the time: lines squared x markers per kernel).
    """
    freq = np.asarray(ds["variant_allele_frequency"].values, np.float64)
    z = Dosages.read(ds, rows, freq, max_bytes)
    y = response[rows]
    x, mean, inv = (None, None, None) if latents is None else standardised(latents)
    x_rows = None if x is None else np.ascontiguousarray(x[rows])
    folds = inner_folds(len(rows), seed)
    # every fit makes REWEIGHTS + 1 kernels over its lines; the inner folds take the
    # first (unweighted) one out of the training lines'
    inner = ([int((folds != f).sum()) for f in np.unique(folds)]
             if out_of_fold_predictions else [])
    total = z.shape[1] * ((REWEIGHTS + 1) * len(rows) ** 2
                          + REWEIGHTS * sum(n * n for n in inner))
    bar = progress_bar(total, "marker path", "", progress, share=True)
    z.tick = bar.update
    # no block to fit (none in the inner folds either, they are subsets): no kernel
    unweighted = z.gram(np.ones(z.shape[1], np.float32)) if _fitted_blocks(y) else None
    oof = None
    if out_of_fold_predictions:
        by_theta = out_of_fold(z, y, folds, x_rows, unweighted)
        chosen = inner_theta(by_theta, y)
        theta, oof = THETAS[chosen], by_theta[chosen]
    fit = fit_rows(z, y, x_rows, unweighted, theta)
    if oof is not None:
        for b, block in enumerate(fit.fits):
            seen = ~np.isnan(oof[:, b])
            block.inner_mse = float(np.mean((oof[seen, b] - y[seen, b]) ** 2)) if seen.any() \
                else None
    bar.update(total - bar.n)  # blocks too small to fit make no kernels
    bar.close()
    return LinearPath(fit, freq, mean, inv), oof

