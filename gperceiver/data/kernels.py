"""The loader's compiled kernels: every per-call and per-locus loop of a batch.

The loader (`loader.samples_major`: chunks transposed into sample rows), the
task builders (`tasks`: tokens, hidden targets and their labels, gathered
loci) and the target draws (`sampling`: locus weights, exponential keys and
the selection of the k smallest) call these; they prepare the arrays and keep
the Python objects. The kernels are numba functions because each is a loop over
every call or locus of a batch, which numpy would do in several passes over
temporaries (or not at all): compiled, they see only arrays and numbers, release
the GIL (`nogil`: a worker's hand-off thread runs meanwhile) and are kept in
numba's on-disk cache (`cache=True`), so a process loads them instead of
compiling them again. Where numba's compiler does not find the vector
instructions by itself, the kernels call LLVM intrinsics from `simd`.

Words: a "span" is a run of loci handled while its data stays in cache; a
"tile" is the 8 x 8 items that `simd.transpose_tile` moves in registers.
"""

from __future__ import annotations

import numba
import numpy as np

from gperceiver.data.simd import LANES, TILE, compress_lanes, transpose_tile
from gperceiver.store.schema import FILL

# Floating-point shortcuts that keep infinities: a weight-0 locus has key +inf.
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_LN2 = np.float32(np.log(2.0))
_SQRT2 = np.float32(np.sqrt(2.0))
_INF_BIN = 0x7F800000 >> 20  # the top 12 bits of +inf (float32)
_SAMPLE_STEP = 8  # `smallest` brackets the k-th key from every 8th key
DRAW_SPAN = 4096  # loci per span in `draw_target_rows`: their weights (16 KB) stay in L1


# -- chunks into sample rows (loader) ---------------------------------------------------


@numba.njit(cache=True, nogil=True)
def transpose(source, columns, out, rows, start, span, tiles, flat_source, flat_out):
    """out[rows[j], start + i] = source[i, columns[j]] (source (V, S), or (V, S, n)
    with its items per call), in spans of `span` loci whose source lines stay in
    cache; with `tiles`, runs of 8 adjacent columns move as 8 x 8 tiles through
    `flat_source` and `flat_out` (the arrays' flat views)."""
    # slices, then indices from 0: numba elides negative-index handling, 2x faster;
    # four columns per pass over the span: each source cache line serves four
    n_loci, n_columns = source.shape[0], columns.shape[0]
    for span_start in range(0, n_loci, span):
        span_stop = min(n_loci, span_start + span)
        part = source[span_start:span_stop]
        first, last = start + span_start, start + span_stop
        j = 0
        while j < n_columns:
            if tiles and j + TILE <= n_columns and _adjacent(columns, j, TILE):
                _transpose_tiles(source, columns[j], out, rows[j : j + TILE], start,
                                 span_start, span_stop, flat_source, flat_out)
                j += TILE
            elif j + 4 <= n_columns:
                a, b = out[rows[j], first:last], out[rows[j + 1], first:last]
                c, d = out[rows[j + 2], first:last], out[rows[j + 3], first:last]
                ca, cb, cc, cd = columns[j], columns[j + 1], columns[j + 2], columns[j + 3]
                for i in range(a.shape[0]):
                    a[i], b[i], c[i], d[i] = (part[i, ca], part[i, cb], part[i, cc],
                                              part[i, cd])
                j += 4
            else:
                target, column = out[rows[j], first:last], columns[j]
                for i in range(target.shape[0]):
                    target[i] = part[i, column]
                j += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _adjacent(columns, j, n):
    """Whether columns[j : j + n] are n adjacent columns, in order."""
    for c in range(1, n):
        if columns[j + c] != columns[j] + c:
            return False
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def _transpose_tiles(source, column, out, rows, start, span_start, span_stop, flat_source,
                     flat_out):
    """Columns column..column+7 of source[span_start:span_stop] (2-d) into out[rows]
    from start + span_start: 8 loci at a time as 8 x 8 tiles, then the rest."""
    width, n_out = source.shape[1], out.shape[1]
    t0, t1, t2, t3 = (rows[0] * n_out + start, rows[1] * n_out + start,
                      rows[2] * n_out + start, rows[3] * n_out + start)
    t4, t5, t6, t7 = (rows[4] * n_out + start, rows[5] * n_out + start,
                      rows[6] * n_out + start, rows[7] * n_out + start)
    i = span_start
    while i + TILE <= span_stop:
        transpose_tile(flat_source, i * width + column, width, flat_out,
                       (t0 + i, t1 + i, t2 + i, t3 + i, t4 + i, t5 + i, t6 + i, t7 + i))
        i += TILE
    for locus in range(i, span_stop):
        for c in range(TILE):
            out[rows[c], start + locus] = source[locus, column + c]


# -- tokens and labels (tasks) ----------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def hidden_tokens(calls, partner, rows, ploidy, positions, mask, n_alleles, tokens, labels):
    """Tokens with the targets hidden, and the targets' labels, a batch row at a time
    (its calls still in cache): tokens (B, G, L * P) = calls[rows] + 1 (and
    partner[rows] + 1 when G = 2; calls flat, L * P per row); then at each drawn
    target (positions (B, k) where mask) every real copy's token becomes 0
    (missing), and the label is written: labels (B, k, A) the count of each
    allele of the calls (the masked task), or labels (B, k) the size of the
    multiset intersection of the alleles of calls and partner (contrastive)."""
    mine, theirs = np.zeros(n_alleles, np.int8), np.zeros(n_alleles, np.int8)
    for b in range(positions.shape[0]):
        row = rows[b]
        for g in range(tokens.shape[1]):
            _add_one(calls[row] if g == 0 else partner[row], tokens[b, g])
        for j in range(positions.shape[1]):
            if not mask[b, j]:
                continue
            first = positions[b, j] * ploidy
            for g in range(tokens.shape[1]):  # tokens > 0 (alleles) become 0, while
                for i in range(first, first + ploidy):  # padded copies (-1) stay padded
                    tokens[b, g, i] = min(tokens[b, g, i], 0)
            if labels.ndim == 3:
                _count_alleles(calls[row, first : first + ploidy], labels[b, j])
                continue
            _count_alleles(calls[row, first : first + ploidy], mine)
            _count_alleles(partner[row, first : first + ploidy], theirs)
            shared = 0
            for allele in range(n_alleles):
                shared += min(mine[allele], theirs[allele])
                mine[allele], theirs[allele] = 0, 0
            labels[b, j] = shared


@numba.njit(cache=True, nogil=True, inline="always")
def _count_alleles(copies, counts):
    """counts[a] += the copies carrying allele a; missing (-1) and padded (-2)
    copies, and codes past counts' alleles, count for none."""
    for allele in copies:
        if 0 <= allele < counts.shape[0]:
            counts[allele] += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _add_one(source, target):
    """target = source + 1 (int8 tokens from calls; the loop vectorises)."""
    for i in range(target.shape[0]):
        target[i] = source[i] + np.int8(1)


@numba.njit(cache=True, nogil=True)
def plus_one(calls, rows, out):
    """out[b] = calls[rows[b]] + 1 (flat rows: the loop vectorises)."""
    for b in range(rows.shape[0]):
        _add_one(calls[rows[b]], out[b])


# -- target draws (sampling) ------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def draw_rows(weights, k, seeds, keys, index, mask):
    """The k smallest exponential keys of each row of `weights` (B, V): their
    positions into index[row], mask[row] True for as many as were drawn."""
    lower, inside = np.empty(keys.shape[0], np.int32), np.empty(keys.shape[0], np.int32)
    for row in range(weights.shape[0]):
        _exponential_keys(weights[row], seeds[row], keys, 0)
        drawn = smallest(keys, k, index[row], lower, inside)
        mask[row, :drawn] = True


@numba.njit(cache=True, nogil=True)
def draw_target_rows(geno, partner, rows, paired, table, index, indexed, diploid, factors, k,
                     seeds, keys, weights, other, positions, mask):
    """`draw_rows` of the weights of geno[rows] (times partner[rows]'s when
    `paired`), computed a span of DRAW_SPAN loci at a time into `weights` and
    `other` and turned into keys there: the weights never leave L1."""
    n = geno.shape[1]
    lower, inside = np.empty(n, np.int32), np.empty(n, np.int32)
    for row in range(rows.shape[0]):  # a row's keys stay in cache for its selection
        source = rows[row]
        for start in range(0, n, DRAW_SPAN):  # its weights a span at a time (in L1)
            stop = min(n, start + DRAW_SPAN)
            span, more = weights[: stop - start], other[: stop - start]
            _span_weights(geno[source], table, index, indexed, diploid, factors, row, start,
                          span)
            if paired:
                _span_weights(partner[source], table, index, indexed, diploid, factors, row,
                              start, more)
                for i in range(span.shape[0]):
                    span[i] *= more[i]
            _exponential_keys(span, seeds[row], keys[start:stop], start)
        drawn = smallest(keys, k, positions[row], lower, inside)
        mask[row, :drawn] = True


@numba.njit(cache=True, nogil=True, inline="always")
def _span_weights(calls, table, index, indexed, diploid, factors, row, first, weights):
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
def locus_weights_into(geno, table, index, indexed, out):
    """out[b] = the weights of geno[b] (B, L, P) at loci index[b] when `indexed`,
    else at loci 0..L-1."""
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


# -- the k smallest keys (sampling) -----------------------------------------------------


@numba.njit(cache=True, nogil=True, inline="always")
def _bits(key):
    """A non-negative float32's bits: they order like the floats."""
    return np.float32(key).view(np.uint32)


@numba.njit(cache=True, nogil=True)
def smallest(keys, k, out, lower, inside):
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
    """`smallest` by a histogram of every key; `work`: int32, as long as `keys`."""
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


@numba.njit(cache=True, nogil=True)
def positions_in_range(values, lo, hi, out):
    """Write the positions i (ascending) of values[i] in [lo, hi) to out (int32,
    as long as the number of such values); return how many. `values`: 1-d
    contiguous uint32 (the bits of non-negative float32 order like the floats,
    and no floating-point mode, such as flushing denormals, changes them), fewer
    than 2^31. LANES values at a time through `simd.compress_lanes`."""
    lo, hi = np.uint32(lo), np.uint32(hi)
    n, count, start = values.shape[0], 0, 0
    while start + LANES <= n:
        count += compress_lanes(values, start, lo, hi, out, count)
        start += LANES
    for i in range(start, n):
        if lo <= values[i] < hi:
            out[count] = i
            count += 1
    return count
