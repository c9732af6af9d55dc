"""The marker path's dosages held as int8 counts give exactly the float32 values."""

from __future__ import annotations

import numpy as np
import pytest

from gperceiver import dosages
from gperceiver.dosages import Dosages, centred_dosages
from gperceiver.errors import UsageError
from gperceiver.store import open_store
from tests.tiny_stores import founder_store


@pytest.mark.parametrize("ploidy, n_alleles, padded, packed", [
    (2, 2, 0, None), (4, 3, 5, None), (2, 2, 0, 2), (4, 3, 5, 4), (1, 2, 0, 2)])
def test_counts_give_the_standardised_dosages_and_their_products(tmp_path, monkeypatch,
                                                                 ploidy, n_alleles, padded,
                                                                 packed):
    """Missing calls, three alleles and mixed ploidy (padded copies); slabs of a few
    columns at a time give the same kernel, effects and predictions as the array;
    so do counts packed in 2 or 4 bits when int8 would pass the bytes allowed."""
    store = tmp_path / "s.zarr"
    founder_store(store, n_samples=40, n_variants=50, ploidy=ploidy, n_alleles=n_alleles,
                  missing=0.05, padded_samples=padded)
    ds = open_store(store)
    freq = np.asarray(ds["variant_allele_frequency"].values, np.float64)
    rows = np.array([0, 3, 4, 9, 17, 22, 30, 39])
    gt = ds["call_genotype"].values[:, rows]
    want = centred_dosages(gt, freq, standardise=True).reshape(len(rows), -1)
    monkeypatch.setattr(dosages, "SLAB_BYTES", 8 * len(rows) * 7)  # 7 columns a slab
    n_columns = want.shape[1]
    z = Dosages.read(ds, rows, freq, len(rows) * n_columns - (packed is not None))
    if packed is None:
        assert z.counts.dtype == np.int8
    else:
        assert isinstance(z.counts, dosages.Packed) and z.counts.bits == packed
        assert z.counts.bytes.nbytes == len(rows) * -(-n_columns * packed // 8)
    assert (z.copies is not None) == bool(padded)
    np.testing.assert_array_equal(z.to_array(), want)
    rng = np.random.default_rng(0)
    w = rng.random(want.shape[1]).astype(np.float32)
    np.testing.assert_allclose(z.gram(w), (want * w) @ want.T, rtol=1e-5, atol=1e-5)
    alpha = rng.standard_normal(len(rows))
    pick = np.arange(len(rows)) % 3 > 0
    np.testing.assert_allclose(z.t_dot(alpha[pick], pick), want[pick].T @ alpha[pick],
                               rtol=1e-5, atol=1e-5)
    effects = rng.standard_normal((2, want.shape[1])).astype(np.float32)
    np.testing.assert_allclose(z.dot(effects), want @ effects.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(z.rows(pick).columns(np.array([1, 8, 30])),
                                  want[pick][:, [1, 8, 30]])
    # a selection of a selection: the same lines, sharing the genotypes, not a copy
    inner, lines = z.rows(pick).rows(np.array([4, 0, 2])), want[pick][[4, 0, 2]]
    assert inner.counts is z.counts and inner.shape == (3, want.shape[1])
    np.testing.assert_array_equal(inner.to_array(), lines)
    np.testing.assert_allclose(inner.gram(w), (lines * w) @ lines.T, rtol=1e-5, atol=1e-5)


def test_too_many_lines_and_markers_are_refused_before_reading(tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    founder_store(store)
    ds = open_store(store)
    freq = np.asarray(ds["variant_allele_frequency"].values, np.float64)
    n_columns = int(ds.sizes["variants"]) * (freq.shape[1] - 1)
    with pytest.raises(UsageError, match="holds the training lines.* packed, over"):
        Dosages.read(ds, np.arange(10), freq, 10 * n_columns // 4 - 1)  # 2 bits a count
    monkeypatch.setattr(dosages, "MAX_BYTES", 100)  # the default allowance
    with pytest.raises(UsageError, match="holds the training lines"):
        Dosages.read(ds, np.arange(10), freq)
