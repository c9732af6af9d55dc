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
compiled (numba): per locus one counter-based random number, a logarithm and a
compare, about 40x less CPU than numpy's random + log + argpartition.
"""

from __future__ import annotations

import numba
import numpy as np

from gperceiver.data.simd import positions_in_range
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
    _locus_weights(np.ascontiguousarray(geno), table, rows, index is not None, weights)
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
    _draw_rows(weights, k, seeds, keys, index, mask)
    return index, mask


def draw_targets(
    geno: np.ndarray, table: np.ndarray, k: int, rng: np.random.Generator,
    index: np.ndarray | None = None, partner: np.ndarray | None = None,
    scratch: Scratch | None = None, rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`k` target loci per row of genotypes `geno` (B, L, P), drawn as
    `sample_without_replacement(locus_weights(geno, table, index), k, rng)` would
    (times the weights of `partner` (B, L, P) when given), with the same draws
    for the same `rng` state, but a tile of loci at a time: the weights never
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
    weights, other = (scratch.get(name, (_TILE,), np.float32)
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
    _draw_targets(geno, partner, rows, paired, table, loci, index is not None, diploid,
                  factors, k, seeds, keys, weights, other, positions, mask)
    return positions, mask


# -- compiled kernels -------------------------------------------------------------------
# Floating-point shortcuts that keep infinities: a weight-0 locus has key +inf.
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_LN2 = np.float32(np.log(2.0))
_SQRT2 = np.float32(np.sqrt(2.0))
_INF_BIN = 0x7F800000 >> 20  # the top 12 bits of +inf (float32)
_SAMPLE_STEP = 8  # `_smallest` brackets the k-th key from every 8th key
_TILE = 4096  # loci per tile in `draw_targets`: their weights (16 KB) stay in L1


@numba.njit(cache=True, nogil=True)
def _draw_rows(weights, k, seeds, keys, index, mask):
    lower, inside = np.empty(keys.shape[0], np.int32), np.empty(keys.shape[0], np.int32)
    for row in range(weights.shape[0]):
        _exponential_keys(weights[row], seeds[row], keys, 0)
        drawn = _smallest(keys, k, index[row], lower, inside)
        mask[row, :drawn] = True


@numba.njit(cache=True, nogil=True)
def _draw_targets(geno, partner, rows, paired, table, index, indexed, diploid, factors, k,
                  seeds, keys, weights, other, positions, mask):
    n = geno.shape[1]
    lower, inside = np.empty(n, np.int32), np.empty(n, np.int32)
    for row in range(rows.shape[0]):  # a row's keys stay in cache for its selection
        source = rows[row]
        for start in range(0, n, _TILE):  # its weights a tile at a time (in L1)
            stop = min(n, start + _TILE)
            tile, more = weights[: stop - start], other[: stop - start]
            _tile_weights(geno[source], table, index, indexed, diploid, factors, row, start,
                          tile)
            if paired:
                _tile_weights(partner[source], table, index, indexed, diploid, factors, row,
                              start, more)
                for i in range(tile.shape[0]):
                    tile[i] *= more[i]
            _exponential_keys(tile, seeds[row], keys[start:stop], start)
        drawn = _smallest(keys, k, positions[row], lower, inside)
        mask[row, :drawn] = True


@numba.njit(cache=True, nogil=True, inline="always")
def _tile_weights(calls, table, index, indexed, diploid, factors, row, first, weights):
    """weights[i] = the weight of calls[first + i] (one genotype, (L, P)): on the
    diploid biallelic path from `factors`, otherwise through `_weights_into`."""
    stop = first + weights.shape[0]
    if diploid:
        _diploid_weights(calls.reshape(-1)[2 * first : 2 * stop], factors, first, weights)
    else:
        _weights_into(calls[first:stop], table, index, indexed, row, first, weights)


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _diploid_weights(calls, factors, first, weights):
    """`_row_weights` for diploid biallelic calls (2 per locus, flat), from the
    factors (2, V) of alleles 0 and 1: arithmetic instead of table lookups, so it
    vectorises (2x faster). Each copy's factor is exactly one of f0, f1, 1 (padded
    copy) or 0 (missing, or a code outside the table), as in the table."""
    n = weights.shape[0]
    f0, f1 = factors[0, first : first + n], factors[1, first : first + n]
    for i in range(n):
        a, b = calls[2 * i], calls[2 * i + 1]
        weights[i] = ((np.float32(a == 0) * f0[i] + np.float32(a == 1) * f1[i]
                       + np.float32(a == FILL))
                      * (np.float32(b == 0) * f0[i] + np.float32(b == 1) * f1[i]
                         + np.float32(b == FILL)))


@numba.njit(cache=True, nogil=True)
def _locus_weights(geno, table, index, indexed, out):
    for b in range(geno.shape[0]):
        _weights_into(geno[b], table, index, indexed, b, 0, out[b])


@numba.njit(cache=True, nogil=True, inline="always")
def _weights_into(calls, table, index, indexed, row, first, weights):
    """weights[i] = the weight of calls[i] at locus index[row, first + i] when
    `indexed`, else at locus first + i."""
    if indexed:
        _row_weights_at(calls, table, index[row, first : first + calls.shape[0]], weights)
    else:
        _row_weights(calls, table, first, weights)


@numba.njit(cache=True, nogil=True)
def _row_weights(calls, table, first, weights):
    """weights[i] = the weight of calls[i] at locus first + i."""
    width = table.shape[1]
    for i in range(calls.shape[0]):
        weights[i] = _weight(table, first + i, calls, i, width)


@numba.njit(cache=True, nogil=True)
def _row_weights_at(calls, table, loci, weights):
    """weights[i] = the weight of calls[i] at locus loci[i]."""
    width = table.shape[1]
    for i in range(calls.shape[0]):
        weights[i] = _weight(table, loci[i], calls, i, width)


@numba.njit(cache=True, nogil=True, inline="always")
def _weight(table, locus, calls, i, width):
    """The product over the copies of calls[i] of their factors at `locus`."""
    if calls.shape[1] == 2:  # unrolled: a loop over copies costs 3x
        return _factor(table, locus, calls[i, 0], width) * _factor(table, locus, calls[i, 1], width)
    weight = np.float32(1.0)
    for copy in range(calls.shape[1]):
        weight *= _factor(table, locus, calls[i, copy], width)
    return weight


@numba.njit(cache=True, nogil=True, inline="always")
def _factor(table, locus, call, width):
    column = np.uint8(call + 2)  # a code outside the table: column 1 (missing, 0)
    return table[locus, column if column < width else 1]


@numba.njit(cache=True, nogil=True, inline="always")
def _splitmix(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _exponential_keys(weights, seed, keys, first):
    """keys[i] = E_i / weights[i] with E_i ~ Exp(1) (+inf where the weight is 0).

    E = -ln U, U = m / 2^24 with m uniform in 1..2^24 - 1 (24 bits of splitmix64
    of (seed, first + i)); ln U = (e - 24) ln 2 + ln f for U's float32 exponent e and
    mantissa f in [sqrt(1/2), sqrt(2)), with ln f = 2 atanh(s), s = (f - 1) / (f + 1)
    summed to s^11 (|s| < 0.172: float32 precision, relative near U = 1 too).
    """
    for i in range(weights.shape[0]):  # two loops: the second vectorises
        m = _splitmix(seed + np.uint64(first + i) * _GOLDEN) >> np.uint64(40)
        keys[i] = np.float32(m | np.uint64(1))  # exact: m < 2^24
    for i in range(weights.shape[0]):
        b = np.float32(keys[i]).view(np.int32)
        e = np.float32((b >> 23) - 127 - 24)
        f = np.float32(b & 0x7FFFFF) * np.float32(2.0**-23) + np.float32(1.0)
        big = f > _SQRT2
        f = f * np.float32(0.5) if big else f
        e = e + np.float32(1.0) if big else e
        s = (f - np.float32(1.0)) / (f + np.float32(1.0))
        s2 = s * s
        series = np.float32(1.0) + s2 * (np.float32(1 / 3) + s2 * (np.float32(1 / 5) + s2 * (
            np.float32(1 / 7) + s2 * (np.float32(1 / 9) + s2 * np.float32(1 / 11)))))
        log_u = e * _LN2 + np.float32(2.0) * s * series
        keys[i] = -log_u / weights[i]


@numba.njit(cache=True, nogil=True, inline="always")
def _bits(key):
    """A non-negative float32's bits: they order like the floats."""
    return np.float32(key).view(np.uint32)


@numba.njit(cache=True, nogil=True)
def _smallest(keys, k, out, lower, inside):
    """Write the positions of the k smallest finite keys to `out`, ascending; return
    how many there are (fewer than k when fewer are finite). `lower` and `inside`
    are int32 work arrays as long as `keys`.

    Radix selection on the keys' bits (non-negative float32 order like their
    bits). A histogram of every SAMPLE_STEP-th key's top 12 bits brackets the
    k-th key with a margin of 4 standard deviations; one pass counts the keys
    below the bracket, and the keys inside it are collected (`positions_in_range`,
    vectorised); a finer histogram of those finds the k-th exactly, and a last
    vectorised pass collects every key up to it. Where the bracket misses (rare,
    or a pathological order of keys), `_smallest_exact` decides.
    """
    n = keys.shape[0]
    hist = np.zeros(4096, dtype=np.int32)
    for i in range(0, n, _SAMPLE_STEP):
        hist[_bits(keys[i]) >> 20] += 1
    sampled = (n + _SAMPLE_STEP - 1) // _SAMPLE_STEP
    rank = k * sampled / n  # the k-th key's expected rank among the sampled
    margin = 4.0 * np.sqrt(rank * (1.0 - k / n)) + 2.0
    b, below = 0, 0
    while b < _INF_BIN and below + hist[b] <= rank - margin:
        below += hist[b]
        b += 1
    low = np.uint32(b << 20)
    while b < _INF_BIN and below < rank + margin:
        below += hist[b]
        b += 1
    high = np.uint32(b << 20)  # the bracket [low, high) holds no infinite key
    bits = keys.view(np.uint32)
    n_lower = 0
    for i in range(n):  # vectorises
        n_lower += bits[i] < low
    n_inside = positions_in_range(bits, low, high, inside)
    need = k - n_lower
    if need <= 0 or need > n_inside:
        return _smallest_exact(keys, k, out, lower)
    # the need-th smallest inside: a finer histogram of the bracket
    shift = 0
    while ((high - low) >> shift) > 4096:
        shift += 1
    hist[:] = 0
    for j in range(n_inside):
        hist[(_bits(keys[inside[j]]) - low) >> shift] += 1
    threshold = _kth(keys, inside, n_inside, hist, low, shift, need)
    return _winners(keys, k, threshold, out, lower)


@numba.njit(cache=True, nogil=True)
def _winners(keys, k, threshold, out, work):
    """Write the positions of the k smallest keys to `out`, ascending, given the
    bits of the k-th smallest (`threshold`); ties at it go to the first positions.
    `work`: int32, as long as `keys`."""
    # every key up to the threshold: usually exactly k, as ties are rare
    m = positions_in_range(keys.view(np.uint32), 0, threshold + np.uint32(1), work)
    if m == k:
        out[:k] = work[:k]
        return k
    ties = k  # more keys equal the threshold than places left: the first ones win
    for j in range(m):
        ties -= _bits(keys[work[j]]) < threshold
    w = 0
    for j in range(m):
        x = _bits(keys[work[j]])
        if x < threshold or ties > 0:
            ties -= x == threshold
            out[w] = work[j]
            w += 1
    return k


@numba.njit(cache=True, nogil=True)
def _kth(keys, positions, count, hist, low, shift, rank):
    """Bits of the rank-th smallest (from 1) of keys[positions[:count]], given
    `hist`, the histogram of their (bits - low) >> shift."""
    b, before = 0, 0
    while before + hist[b] < rank:
        before += hist[b]
        b += 1
    in_bin = np.empty(hist[b], dtype=np.uint32)
    m = 0
    for j in range(count):
        x = _bits(keys[positions[j]])
        if (x - low) >> shift == b:
            in_bin[m] = x
            m += 1
    in_bin.sort()
    return in_bin[rank - before - 1]


@numba.njit(cache=True, nogil=True)
def _smallest_exact(keys, k, out, work):
    """`_smallest` by a histogram of every key; `work`: int32, as long as `keys`."""
    n = keys.shape[0]
    hist = np.zeros((4, 4096), dtype=np.int32)  # four, so increments do not queue
    quads = n - n % 4
    for i in range(0, quads, 4):
        hist[0, _bits(keys[i]) >> 20] += 1
        hist[1, _bits(keys[i + 1]) >> 20] += 1
        hist[2, _bits(keys[i + 2]) >> 20] += 1
        hist[3, _bits(keys[i + 3]) >> 20] += 1
    for i in range(quads, n):
        hist[0, _bits(keys[i]) >> 20] += 1
    counts = hist.sum(axis=0)
    finite = n - counts[_INF_BIN]
    if finite <= k:  # every eligible locus, in order
        m = positions_in_range(keys.view(np.uint32), 0, _INF_BIN << 20, work)
        out[:m] = work[:m]
        return m
    every = np.arange(n, dtype=np.int32)
    threshold = _kth(keys, every, n, counts, np.uint32(0), 20, k)
    return _winners(keys, k, threshold, out, work)
