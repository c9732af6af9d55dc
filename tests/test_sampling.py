"""Inverse-frequency locus weights and weighted sampling without replacement."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from gperceiver.data import kernels
from gperceiver.data.sampling import (
    draw_targets,
    locus_weights,
    sample_without_replacement,
    weight_table,
)


def brute_weight(genotype, frequency, scaler):
    """The definition, one locus at a time."""
    if any(g == -1 for g in genotype):
        return 0.0
    w = 1.0
    for g in genotype:
        if g >= 0:
            w *= (1.0 - frequency[g]) ** scaler
    return w


@pytest.mark.parametrize("ploidy,n_alleles,scaler", [
    (1, 3, 1.0), (2, 2, 1.0), (2, 6, 1.0), (2, 7, 0.5), (4, 3, 0.5), (6, 4, 2.0),
])  # (2, 6): the largest tabulated pair code; (2, 7): copy by copy
def test_locus_weights_follow_the_definition(ploidy, n_alleles, scaler):
    rng = np.random.default_rng(ploidy)
    n_rows, n_loci = 5, 40
    frequency = rng.dirichlet(np.ones(n_alleles), n_loci).astype(np.float32)
    geno = rng.integers(-1, n_alleles, (n_rows, n_loci, ploidy)).astype(np.int8)
    geno[0, :, -1] = -2  # a padded copy (mixed ploidy) contributes nothing
    weights = locus_weights(geno, weight_table(frequency, scaler))
    index = rng.integers(0, n_loci, (n_rows, 7))  # at given loci: the same weights there
    at = locus_weights(np.take_along_axis(geno, index[..., None], axis=1),
                       weight_table(frequency, scaler), index)
    np.testing.assert_array_equal(at, np.take_along_axis(weights, index, axis=1))
    expected = np.array(
        [[brute_weight(geno[b, v], frequency[v], scaler) for v in range(n_loci)]
         for b in range(n_rows)]
    )
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    assert np.all(weights[(geno == -1).any(axis=2)] == 0)


def test_unknown_frequency_means_never_a_target():
    frequency = np.array([[np.nan, np.nan], [0.5, 0.5]], dtype=np.float32)
    weights = locus_weights(np.zeros((1, 2, 2), np.int8), weight_table(frequency, 1.0))
    assert weights[0, 0] == 0 and weights[0, 1] == pytest.approx(0.25)


def test_draws_are_distinct_sorted_and_skip_zero_weights():
    rng = np.random.default_rng(0)
    weights = rng.random((200, 30)).astype(np.float32)
    weights[:, ::3] = 0  # 10 of 30 loci can never be drawn
    weights[0] = 0
    weights[0, 4] = 0.5  # one row with a single eligible locus
    index, mask = sample_without_replacement(weights, 12, rng)
    assert index.shape == mask.shape == (200, 12) and index.dtype == np.int64
    assert mask[0].sum() == 1 and index[0, 0] == 4 and np.all(index[0, 1:] == 0)
    full = mask[1:].all(axis=1)
    assert full.all()  # 20 eligible >= 12 draws
    for row, m in zip(index[1:], mask[1:], strict=True):
        drawn = row[m]
        assert np.all(np.diff(drawn) > 0) and np.all(drawn % 3 != 0)


def test_first_draw_frequencies_match_weights():
    """Goodness of fit: k = 1 draws a locus with probability weight / total."""
    rng = np.random.default_rng(1)
    weights = np.array([0.05, 0.1, 0.2, 0.0, 0.4, 0.8, 1.0, 0.3], dtype=np.float32)
    n_draws = 40_000
    index, mask = sample_without_replacement(np.tile(weights, (n_draws, 1)), 1, rng)
    assert mask.all()
    observed = np.bincount(index[:, 0], minlength=len(weights))
    assert observed[3] == 0
    positive = weights > 0
    expected = n_draws * weights[positive] / weights[positive].sum()
    assert stats.chisquare(observed[positive], expected).pvalue > 1e-3


def test_pair_frequencies_match_successive_sampling():
    """k = 2: each unordered pair appears with its Plackett-Luce probability."""
    rng = np.random.default_rng(2)
    weights = np.array([0.1, 0.25, 0.5, 1.0, 2.0], dtype=np.float32)
    total = weights.sum()
    pairs = list(itertools.combinations(range(len(weights)), 2))
    prob = np.array([
        weights[i] / total * weights[j] / (total - weights[i])
        + weights[j] / total * weights[i] / (total - weights[j])
        for i, j in pairs
    ])
    n_draws = 40_000
    index, _ = sample_without_replacement(np.tile(weights, (n_draws, 1)), 2, rng)
    weights = weights.astype(np.float64)
    code = {pair: k for k, pair in enumerate(pairs)}
    observed = np.bincount([code[(a, b)] for a, b in index.tolist()], minlength=len(pairs))
    prob /= prob.sum()  # (float32 weights: sums to 1 within rounding)
    assert stats.chisquare(observed, n_draws * prob).pvalue > 1e-3
    # and the wrong model (inclusion proportional to weight) is rejected
    naive = np.array([weights[i] * weights[j] for i, j in pairs])
    assert stats.chisquare(observed, n_draws * naive / naive.sum()).pvalue < 1e-6


def test_same_generator_state_same_draws():
    weights = np.random.default_rng(3).random((4, 100)).astype(np.float32)
    a = sample_without_replacement(weights, 10, np.random.default_rng(7))
    b = sample_without_replacement(weights, 10, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])


def test_bad_k_is_refused():
    with pytest.raises(ValueError):
        sample_without_replacement(np.ones((1, 3), np.float32), 4, np.random.default_rng())



@pytest.mark.parametrize("n_alleles,ploidy", [(3, 2), (2, 2), (2, 3)])
@pytest.mark.parametrize("indexed,paired", [(False, False), (True, False), (False, True),
                                            (True, True)])
def test_draw_targets_is_sampling_by_locus_weights(indexed, paired, n_alleles, ploidy):
    """The fused per-tile kernel draws exactly what sample_without_replacement draws
    from locus_weights (times the partner's), from the same generator state; also on
    its diploid biallelic path, with padded, missing and out-of-table codes."""
    rng = np.random.default_rng(4)
    n_loci = 9000  # more than one tile of loci
    table = weight_table(rng.random((n_loci, n_alleles)).astype(np.float32) / 3, 1.5)
    geno = rng.integers(-2, 3, (5, n_loci, ploidy)).astype(np.int8)
    partner = rng.integers(-2, 3, (5, n_loci, ploidy)).astype(np.int8) if paired else None
    index = None
    if indexed:
        index = np.sort(rng.choice(n_loci, (5, 7000)), axis=1).astype(np.int32)
        geno = np.take_along_axis(geno, index[..., None], axis=1)
        if paired:
            partner = np.take_along_axis(partner, index[..., None], axis=1)
    weights = locus_weights(geno, table, index)
    if paired:
        weights *= locus_weights(partner, table, index)
    expected = sample_without_replacement(weights, 600, np.random.default_rng(9))
    drawn = draw_targets(geno, table, 600, np.random.default_rng(9), index, partner)
    np.testing.assert_array_equal(drawn[0], expected[0])
    np.testing.assert_array_equal(drawn[1], expected[1])
    # the same rows of a larger buffer (a shuffle buffer), in another order
    order = rng.permutation(5)
    rows = np.empty(5, np.int64)
    rows[order] = np.arange(5) + 3
    buffer = np.concatenate([geno[:3] * 0, geno[order]])
    partners = None if partner is None else np.concatenate([partner[:3], partner[order]])
    in_buffer = draw_targets(buffer, table, 600, np.random.default_rng(9), index, partners,
                             rows=rows)
    np.testing.assert_array_equal(in_buffer[0], expected[0])
    np.testing.assert_array_equal(in_buffer[1], expected[1])


@pytest.mark.parametrize("order", ["random", "adversarial", "coarse"])
def test_selection_is_exact(order):
    """_smallest returns the k smallest finite keys, ascending, ties broken by
    position; also when every 8th key (its sample) misleads the bracket, and when
    the k-th key is one of many equal keys (coarse keys: ties at every threshold,
    many keys 0, with denormals flushed to zero as the model sets it)."""
    rng = np.random.default_rng(5)
    n = 20_000
    keys = rng.exponential(size=n).astype(np.float32) / rng.random(n).astype(np.float32)
    keys[rng.random(n) < 0.1] = np.inf  # ineligible loci
    keys[100:140] = keys[99]  # ties
    if order == "adversarial":  # the sampled keys are all tiny
        keys[::8] = rng.random(len(keys[::8])).astype(np.float32) * 1e-6
    if order == "coarse":
        keys = np.floor(keys * 4) / np.float32(4)
    lower, inside = np.empty(n, np.int32), np.empty(n, np.int32)
    torch.set_flush_denormal(order == "coarse")
    for k in (1, 7, 500, 5000, 17_000, n):
        out = np.full(k, -1, np.int64)
        drawn = kernels.smallest(keys, k, out, lower, inside)
        finite = np.flatnonzero(np.isfinite(keys))
        ranked = finite[np.lexsort((finite, keys[finite]))][:k]  # by key, then position
        assert drawn == min(k, len(finite))
        np.testing.assert_array_equal(out[:drawn], np.sort(ranked))
    torch.set_flush_denormal(False)
