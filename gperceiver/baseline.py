"""GBLUP, the baseline gperceiver's predictions are measured against.

Model, block by block: y = 1 mu + g + e, g ~ N(0, sigma_g^2 G), e ~ N(0, sigma_e^2 I),
fitted on a block's training rows and predicting every sample of the store.

- G (VanRaden 2008) is built out of core: Dask reads `call_genotype` one slab
  of variants at a time and Z'Z is accumulated over the blocks, so only G and
  one slab are ever held; `baseline` keeps G's columns of the training lines
  alone (samples x training lines: 40,000 lines of which 2,000 phenotyped take
  0.6 GB instead of 12.8 GB, and a twentieth of the arithmetic). Dosages are per-allele
  counts of each non-reference allele (alleles 1..A-1) on the sample's copies,
  one column per (variant, allele), so biallelic diploid data gives the usual
  0/1/2 coding and multi-allelic or polyploid data needs no special case.
  Columns are centred by the sample's copies x the store's allele frequency; a
  call with any missing copy is mean-imputed (0 after centring).
  G = Z Z' / (sum over columns of ploidy p (1 - p)).
- lambda = sigma_e^2 / sigma_g^2 maximises the restricted (REML) likelihood:
  one eigendecomposition of the training rows' G makes each evaluation O(n); a
  grid over log(lambda) then a bounded 1-D search refines the best point.
- BLUP: mu = GLS mean, g_all = G[all, train] (G[train, train] + lambda I)^-1 (y - mu).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from scipy.optimize import minimize_scalar

from gperceiver.atomic import check_writable
from gperceiver.data.phenotypes import (
    one_held_out,
    read_phenotypes,
    require_training_rows,
    responses,
    split_masks,
)
from gperceiver.dosages import centred_dosages, read_slab
from gperceiver.errors import UsageError
from gperceiver.metrics import evaluate
from gperceiver.outputs import predictions_dataset, write_run
from gperceiver.progress import progress_bar
from gperceiver.store import Store, open_view, schema, store_name

LOG_LAMBDA_RANGE = (-12.0, 12.0)  # natural log; lambda from 6e-6 to 1.6e5
GRID_POINTS = 97
MIN_TRAIN_ROWS = 3


# ---------------------------------------------------------------- relationship matrix


def _centred_dosages(gt: np.ndarray, freq: np.ndarray) -> tuple[np.ndarray, float]:
    """Z (variants x alleles-1, samples) float32 of one slab of variants, and its
    VanRaden scale."""
    p = np.nan_to_num(np.asarray(freq, np.float64))[:, 1:]
    scale = float(np.sum(gt.shape[2] * p * (1.0 - p)))
    z = centred_dosages(gt, freq)
    return z.reshape(z.shape[0], -1).T, scale


def genomic_relationship(ds: xr.Dataset, max_slab_bytes: int = 128 << 20,
                         progress: bool = False, columns: np.ndarray | None = None
                         ) -> xr.DataArray:
    """VanRaden G (samples x samples, float64) of a store, accumulated over variant blocks;
    with `columns` (sample indices, ascending), its columns of those samples alone.

    Dask reads `call_genotype` a step of variants at a time, each step's dosages of
    the columns' samples within `max_slab_bytes` (at 8 bytes a dosage). With `columns`,
    a step is whole variant chunks where it can be, and the rows come in runs of
    whole sample chunks, so each chunk is decompressed once for the rows (a step
    cutting a chunk decompresses it whole for each step). Each product is float32,
    as the marker path's kernels (about 1e-7 relative), summed into G in float64.
    `progress`: a bar over the variants (samples x columns x variants of work).
    """
    gt = ds["call_genotype"].data
    freq = np.asarray(ds["variant_allele_frequency"].values)
    n_variants, n_samples, _ = gt.shape
    every = columns is None
    cols = np.arange(n_samples) if every else np.asarray(columns)
    per_variant = 8 * max(1, freq.shape[1] - 1)  # bytes of one line's dosages of a variant
    v_chunk, s_chunk = gt.chunksize[:2] if isinstance(gt, da.Array) else gt.shape[:2]
    fits = max(1, max_slab_bytes // (per_variant * max(1, len(cols))))
    step = fits // v_chunk * v_chunk or fits  # whole variant chunks where they fit
    run = max(s_chunk, max_slab_bytes // (per_variant * step) // s_chunk * s_chunk)

    def read(lo: int, hi: int, rows: slice | np.ndarray | None) -> tuple[np.ndarray, float]:
        return _centred_dosages(read_slab(ds, lo, hi, rows), freq[lo:hi])

    g = np.zeros((n_samples, len(cols)))
    scale = 0.0
    with progress_bar(n_variants, "GBLUP kernel", "variants", progress) as bar:
        for lo in range(0, n_variants, step):
            hi = min(lo + step, n_variants)
            z_cols, slab_scale = read(lo, hi, None if every else cols)
            scale += slab_scale
            if every:
                g += z_cols.T @ z_cols
            else:
                for s_lo in range(0, n_samples, run):
                    z_rows, _ = read(lo, hi, slice(s_lo, s_lo + run))
                    g[s_lo:s_lo + run] += z_rows.T @ z_cols
            bar.update(hi - lo)
    if scale <= 0:
        raise UsageError("no variant is polymorphic in the store; GBLUP needs variation")
    names = np.array([str(s) for s in ds["sample_id"].values])
    return xr.DataArray(
        g / scale, dims=(schema.SAMPLES, "samples_"),
        coords={"sample_id": (schema.SAMPLES, names),
                "sample_id_": ("samples_", names[cols])},
    )


# ---------------------------------------------------------------- REML and BLUP


@dataclass(frozen=True)
class Spectral:
    """A training set's G = U diag(s) U', with y and the intercept rotated by U'."""

    s: np.ndarray
    u: np.ndarray
    y: np.ndarray  # U' y
    x: np.ndarray  # U' 1

    @classmethod
    def of(cls, g_train: np.ndarray, y: np.ndarray) -> Spectral:
        s, u = np.linalg.eigh(g_train)
        return cls(np.clip(s, 0.0, None), u, u.T @ y, u.sum(axis=0))

    def rotate(self, y: np.ndarray) -> Spectral:
        return Spectral(self.s, self.u, self.u.T @ y, self.x)


def restricted_loglik(lam: float, sp: Spectral) -> float:
    """REML log-likelihood at lambda, sigma_g^2 profiled out (constants included)."""
    w = 1.0 / (sp.s + lam)
    n = len(sp.s)
    xhx, xhy, yhy = np.sum(w * sp.x * sp.x), np.sum(w * sp.x * sp.y), np.sum(w * sp.y * sp.y)
    ypy = yhy - xhy * xhy / xhx
    sigma2 = ypy / (n - 1)
    return -0.5 * (
        (n - 1) * (np.log(2 * np.pi * sigma2) + 1) - np.sum(np.log(w)) + np.log(xhx)
    )


def reml_lambda(sp: Spectral) -> float:
    """lambda maximising the restricted likelihood: a log-grid, then a bounded search."""
    grid = np.linspace(*LOG_LAMBDA_RANGE, GRID_POINTS)
    values = np.array([restricted_loglik(np.exp(t), sp) for t in grid])
    best = int(np.nanargmax(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, GRID_POINTS - 1)]
    found = minimize_scalar(
        lambda t: -restricted_loglik(np.exp(t), sp), bounds=(lo, hi), method="bounded",
        options={"xatol": 1e-6},
    )
    t = found.x if -found.fun >= values[best] else grid[best]
    return float(np.exp(t))


def blup(sp: Spectral, lam: float) -> tuple[float, np.ndarray]:
    """(GLS mean, alpha = (G_tt + lambda I)^-1 (y - mu)) of a training set at lambda."""
    w = 1.0 / (sp.s + lam)
    mu = float(np.sum(w * sp.x * sp.y) / np.sum(w * sp.x * sp.x))
    return mu, sp.u @ (w * (sp.y - mu * sp.x))


@dataclass(frozen=True)
class GBLUPFit:
    """One block's fit: variance ratio, components, mean and training size."""

    lam: float
    mu: float
    sigma_g2: float
    sigma_e2: float
    heritability: float
    loglik: float
    n_train: int


def _columns_of(idx: np.ndarray, columns: np.ndarray | None) -> np.ndarray:
    """Where samples `idx` are among G's columns: G's columns are every sample's, or
    those of `columns` (ascending) alone."""
    return idx if columns is None else np.searchsorted(columns, idx)


def gblup(
    g: np.ndarray, y: np.ndarray, train: np.ndarray, lam: float | None = None,
    spectral: Spectral | None = None, columns: np.ndarray | None = None,
) -> tuple[np.ndarray, GBLUPFit]:
    """Fit on rows `train` of y (REML lambda unless given); predict every row of G.

    `spectral`, the eigendecomposition of G[train, train] (any y), saves its cost
    when several blocks share a training set. `columns`: G holds the columns of these
    samples alone (ascending, every training row among them).
    """
    idx = np.flatnonzero(train)
    at = _columns_of(idx, columns)
    if len(idx) < MIN_TRAIN_ROWS:
        raise UsageError(f"GBLUP needs at least {MIN_TRAIN_ROWS} training rows, got {len(idx)}")
    yt = np.asarray(y, np.float64)[idx]
    if np.ptp(yt) == 0:  # nothing to explain: every sample gets the training value
        fit = GBLUPFit(np.inf, float(yt[0]), 0.0, 0.0, 0.0, np.nan, len(idx))
        return np.full(len(g), yt[0]), fit
    sp = Spectral.of(g[np.ix_(idx, at)], yt) if spectral is None else spectral.rotate(yt)
    if lam is None:
        lam = reml_lambda(sp)
    w = 1.0 / (sp.s + lam)
    mu, alpha = blup(sp, lam)
    weights = np.zeros(g.shape[1])
    weights[at] = alpha  # G[:, idx] alpha without copying those columns
    predicted = mu + g @ weights
    ypy = np.sum(w * sp.y * sp.y) - mu * np.sum(w * sp.x * sp.y)
    sigma_g2 = float(ypy / (len(idx) - 1))
    mean_diag = float(np.mean(g[idx, at]))
    fit = GBLUPFit(
        lam=float(lam), mu=mu, sigma_g2=sigma_g2, sigma_e2=float(lam * sigma_g2),
        heritability=mean_diag / (mean_diag + lam), loglik=float(restricted_loglik(lam, sp)),
        n_train=len(idx),
    )
    return predicted, fit


# ---------------------------------------------------------------- the baseline run


def run_gblup(
    store: Store, phenotypes: str | os.PathLike, cv: int | None = None,
    test_fold: int | None = None, progress: bool = False,
) -> tuple[xr.Dataset, dict[str, Any]]:
    """GBLUP on every block: (predictions Dataset, metrics dict) ready for `outputs`.

    Rows of fold `cv` are held out and reported as "validation", as `fit --cv` reports
    them, or those of `test_fold` as "test" (`fit --test-fold`): GBLUP chooses nothing
    on held-out rows, so both are leak-free; only the names differ. `progress`: a
    bar over building G.
    """
    one_held_out(cv, test_fold)
    held_out = cv if test_fold is None else test_fold
    ds = open_view(store)
    phenos = read_phenotypes(phenotypes, ds["sample_id"].values, cv=held_out,
                             fold_flag="--cv" if test_fold is None else "--test-fold")
    train, valid = split_masks(phenos)
    require_training_rows(train, phenotypes)
    columns = np.flatnonzero(train.values.any(axis=1))  # every block's training lines
    g = genomic_relationship(ds, progress=progress, columns=columns).values
    y = phenos["response"].values
    predicted = np.full(y.shape, np.nan, dtype=np.float64)
    fits: dict[str, dict[str, Any] | None] = {}
    cache: dict[bytes, Spectral] = {}
    for b in range(y.shape[1]):
        block = str(phenos["block"].values[b])
        rows = train.values[:, b]
        if rows.sum() < MIN_TRAIN_ROWS:
            warnings.warn(
                f"block {block}: {rows.sum()} training row(s), GBLUP needs {MIN_TRAIN_ROWS}; "
                "its predictions are left empty", RuntimeWarning, stacklevel=2,
            )
            fits[block] = None
            continue
        key = np.packbits(rows).tobytes()
        if key not in cache:
            idx = np.flatnonzero(rows)
            cache[key] = Spectral.of(g[np.ix_(idx, _columns_of(idx, columns))], y[idx, b])
        predicted[:, b], fit = gblup(g, y[:, b], rows, spectral=cache[key], columns=columns)
        fits[block] = asdict(fit)
    preds = predictions_dataset(phenos, predicted)
    held = None if held_out is None else evaluate(
        "regression", preds["observed"], preds["predicted"], valid)
    metrics = {
        "method": "gblup",
        "objective": "regression",
        "store": store_name(store),
        "phenotypes": str(phenotypes),
        "cv": cv,
        "test_fold": test_fold,
        "responses": responses(phenos),
        "samples": int(ds.sizes[schema.SAMPLES]),
        "variants": int(ds.sizes[schema.VARIANTS]),
        "phenotype_rows": {
            "read": phenos.attrs["rows"],
            "not_in_store": phenos.attrs["unmatched_rows"],
            "empty_response": phenos.attrs["empty_responses"],
        },
        "train": evaluate("regression", preds["observed"], preds["predicted"], train),
        "validation": held if cv is not None else None,
        "test": held if test_fold is not None else None,
        "fit": fits,
    }
    return preds, metrics


def baseline(
    store: Store, phenotypes: str | os.PathLike,
    out_dir: str | os.PathLike, cv: int | None = None, force: bool = False,
    test_fold: int | None = None, progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Run GBLUP and write out_dir/{predictions.tsv, metrics.json}, atomically."""
    check_writable(out_dir, force)
    preds, metrics = run_gblup(store, phenotypes, cv, test_fold, progress)
    return write_run(out_dir, preds, metrics, force), metrics
