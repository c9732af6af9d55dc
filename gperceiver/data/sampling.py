"""Inverse-frequency target-locus sampling, vectorised over a batch of genotypes.

A locus' weight for one sample is the product over its chromosome copies of
(1 - frequency of that copy's allele), raised to `frequency_scaler`: loci where
the sample carries rare alleles are drawn more often, so after accounting for
allele frequencies rare and common alleles are predicted about equally often.
Loci with a missing copy get weight 0 and are never targets; padded copies
(mixed ploidy, call_genotype -2) contribute a factor 1.

Draws are without replacement with the exponential-keys form of the Gumbel
top-k trick: key = -E / weight with E = -log U ~ Exp(1) (the order of
log weight + Gumbel), and the k largest keys are the sample. That is successive
sampling proportional to weight (Plackett-Luce), for a whole batch with one
argpartition.
"""

from __future__ import annotations

import numpy as np

from gperceiver.schema import FILL, MISSING


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


class LocusWeights:
    """Weights (B, L) of genotypes (B, L, P) under a `weight_table`.

    For ploidy <= 2 with few alleles, each locus' weight of every ordered pair of
    copies is tabulated, and a batch costs one gather: a lookup table turns the
    P bytes of a call into the pair's code. Otherwise the factors of the copies
    are gathered and multiplied one copy at a time.
    """

    def __init__(self, table: np.ndarray, ploidy: int):
        self.table, self.ploidy = table, ploidy
        n_loci, width = table.shape
        self.codes = None
        if ploidy <= 2 and width**ploidy <= 64:
            calls = np.arange(2**(8 * ploidy), dtype=np.uint32)
            code = np.zeros(len(calls), dtype=np.int64)
            valid = np.ones(len(calls), dtype=bool)
            for copy in range(ploidy):  # byte `copy` of the packed call (little-endian)
                column = ((calls >> (8 * copy)) & 0xFF).astype(np.uint8).view(np.int8) + 2
                valid &= (column >= 0) & (column < width)
                code = code * width + column
            self.codes = np.where(valid, code, MISSING + 2)  # impossible calls: weight 0
            self.n_codes = width**ploidy
            product = table if ploidy == 1 else table[:, :, None] * table[:, None, :]
            self.by_code = np.ascontiguousarray(product).reshape(-1)  # (locus, code)

    def __call__(self, geno: np.ndarray, index: np.ndarray | None = None,
                 scratch: Scratch | None = None) -> np.ndarray:
        """(B, L) float32 weights of `geno` (B, L, P) int8 at the store's loci
        `index` (B, L) (None: L is every locus, in order)."""
        n_loci, width = self.table.shape
        if index is None and geno.shape[1] != n_loci:
            raise ValueError(f"genotypes have {geno.shape[1]} loci, the weight table {n_loci}")
        scratch = scratch or Scratch()
        weights = np.empty(geno.shape[:2], dtype=np.float32)
        rows = scratch.get("rows", geno.shape[:2], np.int64)
        if self.codes is not None:
            step = self.n_codes
            calls = np.ascontiguousarray(geno).view(np.uint16 if self.ploidy == 2 else np.uint8)
            np.take(self.codes, calls[..., 0], out=rows, mode="wrap")
            rows += _offsets(index, n_loci, step)
            return np.take(self.by_code, rows, out=weights, mode="wrap")
        flat = self.table.reshape(-1)
        offsets = _offsets(index, n_loci, width) + 2
        factor = scratch.get("factor", geno.shape[:2], np.float32)
        np.add(offsets, geno[..., 0], out=rows)
        np.take(flat, rows, out=weights, mode="wrap")
        for copy in range(1, geno.shape[2]):
            np.add(offsets, geno[..., copy], out=rows)
            weights *= np.take(flat, rows, out=factor, mode="wrap")
        return weights


def _offsets(index: np.ndarray | None, n_loci: int, step: int) -> np.ndarray:
    """Start of each locus' row in a flattened (n_loci, step) table."""
    if index is None:
        return np.arange(0, n_loci * step, step, dtype=np.int64)
    return index.astype(np.int64) * step


def locus_weights(geno: np.ndarray, table: np.ndarray, index: np.ndarray | None = None,
                  scratch: Scratch | None = None) -> np.ndarray:
    """(B, L) float32 weights of genotypes `geno` (B, L, P) under `weight_table`."""
    return LocusWeights(table, geno.shape[2])(geno, index, scratch)


def sample_without_replacement(
    weights: np.ndarray, k: int, rng: np.random.Generator, scratch: Scratch | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `k` distinct columns per row of `weights` (B, V), proportional to weight.

    Returns (index (B, k) int64, mask (B, k) bool). Columns of weight 0 are never
    drawn: a row with fewer than k positive weights is padded with index 0 and
    mask False. Within a row, drawn indices come first in ascending order.
    """
    n_rows, n_cols = weights.shape
    if not 1 <= k <= n_cols:
        raise ValueError(f"cannot draw {k} of {n_cols} loci")
    if k < n_cols:
        # key = log(U) / weight = -E / weight with E ~ Exp(1): the same order as
        # weight / E, and a vectorised log beats drawing exponentials. U is kept
        # off 0 so eligible keys are finite; weight-0 loci get -inf and lose.
        keys = (scratch or Scratch()).get("keys", weights.shape, np.float32)
        rng.random(dtype=np.float32, out=keys)
        keys += np.float32(2.0**-30)
        np.log(keys, out=keys)
        with np.errstate(divide="ignore"):
            np.divide(keys, weights, out=keys)
        index = np.argpartition(keys, n_cols - k, axis=1)[:, n_cols - k :]
    else:
        index = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    drawn = np.take_along_axis(weights, index, axis=1) > 0
    index = np.sort(np.where(drawn, index, n_cols), axis=1)
    mask = index < n_cols
    index[~mask] = 0
    return index.astype(np.int64, copy=False), mask

