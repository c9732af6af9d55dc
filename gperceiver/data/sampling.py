"""Inverse-frequency target-locus sampling, vectorised over a batch of genotypes.

A locus' weight for one sample is the product over its chromosome copies of
(1 - frequency of that copy's allele), raised to `frequency_scaler`: loci where
the sample carries rare alleles are drawn more often, so after accounting for
allele frequencies rare and common alleles are predicted about equally often.
Loci with a missing copy get weight 0 and are never targets; padded copies
(mixed ploidy, call_genotype -2) contribute a factor 1.

Draws are without replacement with the exponential-keys form of the Gumbel
top-k trick: key = E / weight with E ~ Exp(1) (the order of -(log weight +
Gumbel)), and the k smallest keys are the sample. That is successive sampling
proportional to weight (Plackett-Luce). The keys and their selection are
compiled (`kernels`): per locus one counter-based random number, a logarithm and a
compare, about 40x less CPU than numpy's random + log + argpartition.
"""

from __future__ import annotations

import numpy as np

from gperceiver.data.kernels import DRAW_SPAN, draw_rows, draw_target_rows, locus_weights_into
from gperceiver.store.schema import FILL, MISSING


def weight_table(frequency: np.ndarray, frequency_scaler: float) -> np.ndarray:
    """(V, A + 2) float32 factor per (locus, call + 2): column 0 is a padded copy
    (factor 1), column 1 a missing copy (factor 0), column 2 + a allele a:
    (1 - frequency) ** frequency_scaler, 0 where the frequency is unknown (NaN).
    """
    freq = np.asarray(frequency, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        factor = np.power(np.clip(1.0 - freq, 0.0, 1.0), float(frequency_scaler))
    factor = np.where(np.isnan(freq), 0.0, factor)
    table = np.empty((freq.shape[0], freq.shape[1] + 2), dtype=np.float32)
    table[:, FILL + 2] = 1.0
    table[:, MISSING + 2] = 0.0
    table[:, 2:] = factor
    return table


class Scratch:
    """Reusable work arrays, so a worker does not fault in fresh pages per batch."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self._arrays[name] = np.empty(shape, dtype=dtype)
        return array


def locus_weights(geno: np.ndarray, table: np.ndarray,
                  index: np.ndarray | None = None) -> np.ndarray:
    """(B, L) float32 weights of genotypes `geno` (B, L, P) int8 under `weight_table`,
    at the store's loci `index` (B, L) (None: L is every locus, in order).

    One compiled pass: per call, the product of its copies' factors from the
    locus' row of the table (a few bytes, read in locus order). A code outside
    the table (which a valid store never has) weighs 0.
    """
    n_loci = table.shape[0]
    if index is None and geno.shape[1] != n_loci:
        raise ValueError(f"genotypes have {geno.shape[1]} loci, the weight table {n_loci}")
    weights = np.empty(geno.shape[:2], dtype=np.float32)
    rows = np.empty((1, 0), np.int32) if index is None else np.ascontiguousarray(index)
    locus_weights_into(np.ascontiguousarray(geno), table, rows, index is not None, weights)
    return weights


def sample_without_replacement(
    weights: np.ndarray, k: int, rng: np.random.Generator, scratch: Scratch | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `k` distinct columns per row of `weights` (B, V), proportional to weight.

    Returns (index (B, k) int64, mask (B, k) bool). Columns of weight 0 are never
    drawn: a row with fewer than k positive weights is padded with index 0 and
    mask False. Within a row, drawn indices come first in ascending order. Each
    row's exponentials come from a seed drawn from `rng`.
    """
    n_rows, n_cols = weights.shape
    if not 1 <= k <= n_cols:
        raise ValueError(f"cannot draw {k} of {n_cols} loci")
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    seeds = rng.integers(0, 2**63, size=n_rows, dtype=np.uint64)
    keys = (scratch or Scratch()).get("keys", (n_cols,), np.float32)
    index = np.zeros((n_rows, k), dtype=np.int64)
    mask = np.zeros((n_rows, k), dtype=bool)
    draw_rows(weights, k, seeds, keys, index, mask)
    return index, mask


def draw_targets(
    geno: np.ndarray, table: np.ndarray, k: int, rng: np.random.Generator,
    index: np.ndarray | None = None, partner: np.ndarray | None = None,
    scratch: Scratch | None = None, rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`k` target loci per row of genotypes `geno` (B, L, P), drawn as
    `sample_without_replacement(locus_weights(geno, table, index), k, rng)` would
    (times the weights of `partner` (B, L, P) when given), with the same draws
    for the same `rng` state, but a span of loci at a time: the weights never
    leave the cache. `rows`: the genotypes are geno[rows] (and partner[rows])."""
    rows = np.arange(len(geno)) if rows is None else np.asarray(rows, dtype=np.int64)
    n_rows, n_cols = len(rows), geno.shape[1]
    if not 1 <= k <= n_cols:
        raise ValueError(f"cannot draw {k} of {n_cols} loci")
    if index is None and n_cols != table.shape[0]:
        raise ValueError(f"genotypes have {n_cols} loci, the weight table {table.shape[0]}")
    seeds = rng.integers(0, 2**63, size=n_rows, dtype=np.uint64)
    scratch = scratch or Scratch()
    keys = scratch.get("keys", (n_cols,), np.float32)
    weights, other = (scratch.get(name, (DRAW_SPAN,), np.float32)
                      for name in ("weights", "partner_weights"))
    loci = np.empty((1, 0), np.int32) if index is None else np.ascontiguousarray(index)
    geno = np.ascontiguousarray(geno)
    paired = partner is not None
    partner = np.ascontiguousarray(partner) if paired else geno
    # diploid biallelic calls at every locus in order (most panels): a vectorised path
    diploid = index is None and geno.shape[2] == 2 and table.shape[1] == 4
    factors = np.ascontiguousarray(table[:, 2:].T) if diploid else np.empty((2, 0), np.float32)
    positions = np.zeros((n_rows, k), dtype=np.int64)
    mask = np.zeros((n_rows, k), dtype=bool)
    draw_target_rows(geno, partner, rows, paired, table, loci, index is not None, diploid,
                     factors, k, seeds, keys, weights, other, positions, mask)
    return positions, mask
