"""The streaming loader: sharding, determinism and every task's batch, on real stores."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch

from gperceiver.data import sharding
from gperceiver.data.loader import GenotypeDataset, make_loader
from gperceiver.data.tasks import DTYPES
from gperceiver.errors import UsageError
from gperceiver.store.write import create_store, finish_store


def write_store(path: Path, geno: np.ndarray, n_alleles: int, samples_chunk: int = 8) -> Path:
    """A real store holding `geno` (variants, samples, ploidy) int8."""
    n_variants, n_samples, ploidy = geno.shape
    calls = create_store(
        path,
        sample_id=np.array([f"s{i}" for i in range(n_samples)]),
        variant_id=np.array([f"v{i}" for i in range(n_variants)]),
        contig_id=np.array(["1", "2"]),
        variant_contig=(np.arange(n_variants) >= n_variants // 2).astype(np.int32),
        variant_position=np.arange(n_variants, dtype=np.int64),
        ploidy=ploidy,
        n_alleles=n_alleles,
        samples_chunk=samples_chunk,
        variants_chunk=16,
    )
    calls[:] = geno
    finish_store(path)
    return path


def random_genotypes(rng, n_variants, n_samples, ploidy, n_alleles, missing=0.05):
    geno = rng.integers(0, n_alleles, (n_variants, n_samples, ploidy)).astype(np.int8)
    geno[rng.random(geno.shape) < missing] = -1
    return geno


@pytest.fixture(scope="module")
def diploid(tmp_path_factory):
    """45 samples (chunks of 8, the last one short) x 50 biallelic diploid variants."""
    geno = random_genotypes(np.random.default_rng(0), 50, 45, 2, 2)
    path = write_store(tmp_path_factory.mktemp("diploid") / "d.zarr", geno, 2)
    return path, geno


def epoch_samples(loader) -> list[int]:
    out = []
    for batch in loader:
        out += batch["sample_index"].reshape(len(batch["x_index"]), -1)[:, 0].tolist()
    return out


@pytest.mark.parametrize(
    "num_workers,world_size", [(0, 1), (0, 2), (0, 3), (2, 1), (2, 2), (2, 3)]
)
def test_every_selected_sample_once_per_epoch(diploid, num_workers, world_size):
    path, _ = diploid
    subset = np.random.default_rng(1).choice(45, 31, replace=False)
    seen, per_rank = collections.Counter(), []
    for rank in range(world_size):
        loader = make_loader(
            path, "masked", batch_size=4, num_workers=num_workers, samples=subset,
            shuffle_buffer=10, rank=rank, world_size=world_size, seed=5,
        )
        if rank == 0:
            check_masked(next(iter(loader)), diploid[1], 2, 50, 5)
        got = epoch_samples(loader)
        assert sum(1 for _ in loader) == len(loader)  # second epoch: same batch count
        seen.update(got)
        per_rank.append(len(got))
    assert sorted(seen) == sorted(subset.tolist())
    assert max(seen.values()) == 1
    assert max(per_rank) - min(per_rank) <= 1  # ranks are balanced to one sample


def all_shards(selected, group, world_size, num_workers, **order):
    """Every (rank, worker) shard of `selected`, rank-major."""
    return [sharding.shard_samples(selected, group, rank=r, world_size=world_size, worker=w,
                                   num_workers=num_workers, **order)
            for r in range(world_size) for w in range(num_workers)]


@pytest.mark.parametrize("n,group,world_size,num_workers,shuffle", [
    (31, 8, 1, 1, False), (31, 8, 2, 2, True), (45, 16, 3, 2, True), (100, 256, 4, 3, False),
    (5, 8, 3, 3, True), (1000, 64, 2, 5, True),
])
def test_shards_cover_the_selection_once_balanced_in_group_order(n, group, world_size,
                                                                 num_workers, shuffle):
    """Sharding as plain functions: the shards, rank-major, are one sequence of whole
    read groups (ascending store order within each, groups in order unless
    shuffled); each selected position is in exactly one shard; shard sizes are
    `shard_counts`, ranks differ by at most one sample, and so do one rank's workers."""
    rng = np.random.default_rng(n)
    selected = rng.choice(3 * n, n, replace=False).astype(np.int64)  # store indices
    order = {"shuffle": shuffle, "seed": 7, "epoch": 2}
    shards = all_shards(selected, group, world_size, num_workers, **order)
    sequence = np.concatenate(shards)
    assert sorted(sequence.tolist()) == list(range(n))  # every position, exactly once
    counts = sharding.shard_counts(n, world_size, num_workers)
    assert [len(s) for s in shards] == counts and sum(counts) == n
    per_rank = [sum(counts[r * num_workers : (r + 1) * num_workers]) for r in range(world_size)]
    assert max(per_rank) - min(per_rank) <= 1
    for r in range(world_size):
        mine = counts[r * num_workers : (r + 1) * num_workers]
        assert max(mine) - min(mine) <= 1
    groups = selected[sequence] // group  # the read group of each position, in sequence
    runs = groups[np.r_[True, groups[1:] != groups[:-1]]]
    assert len(runs) == len(set(runs.tolist()))  # each group is one contiguous run
    for g in runs:  # ascending store order inside a group
        assert np.all(np.diff(selected[sequence[groups == g]]) > 0)
    if not shuffle:
        assert np.all(np.diff(selected[sequence]) > 0)  # the whole selection in store order
    again = all_shards(selected, group, world_size, num_workers, **order)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again, strict=True))


def test_shard_order_follows_seed_and_epoch_only():
    selected = np.arange(200, dtype=np.int64)

    def sequence(**order):
        return np.concatenate(all_shards(selected, 8, 2, 2, shuffle=True, **order)).tolist()

    first = sequence(seed=1, epoch=0)
    assert first == sequence(seed=1, epoch=0)
    assert first != sequence(seed=1, epoch=1) and first != sequence(seed=2, epoch=0)
    assert sorted(first) == list(range(200))


def test_read_groups_cut_positions_at_group_boundaries():
    selected = np.array([3, 9, 1, 20, 17, 8, 31], np.int64)
    positions = np.array([2, 0, 5, 1, 4, 3, 6])  # store indices 1, 3, 8, 9, 17, 20, 31
    groups = sharding.read_groups(selected, positions, 8)
    assert [g.tolist() for g in groups] == [[2, 0], [5, 1], [4, 3], [6]]
    assert sharding.group_size(8) == 256 and sharding.group_size(100) == 200
    assert sharding.group_size(300) == 300  # chunks past MIN_GROUP_SAMPLES: one a group


def test_split_bounds_and_batches_per_rank():
    assert sharding.split(10, 3) == [3, 3, 4] and sharding.split(2, 4) == [0, 1, 0, 1]
    assert sharding.bounds(10, 3).tolist() == [0, 3, 6, 10]
    assert sharding.shard_counts(31, 2, 0) == [15, 16]  # no workers: one shard per rank
    assert sharding.shard_counts(31, 2, 2) == [7, 8, 8, 8]
    assert sharding.batches_per_rank(31, 2, 2, 5, drop_last=False) == [4, 4]
    assert sharding.batches_per_rank(31, 2, 2, 5, drop_last=True) == [2, 2]
    assert sharding.batches_per_rank(31, 2, 0, 5, drop_last=False) == [3, 4]


def test_distributed_defaults_and_checks():
    assert sharding.distributed(None, None) == (0, 1)  # torch.distributed not initialised
    assert sharding.distributed(2, 3) == (2, 3)
    assert sharding.distributed(None, 4) == (0, 4)
    with pytest.raises(UsageError, match="rank 3 is outside 0..2"):
        sharding.distributed(3, 3)


def test_even_ranks_yield_the_same_number_of_batches(diploid):
    path, _ = diploid
    counts = []
    for even in (False, True):
        for rank in range(2):
            loader = make_loader(path, "plain", batch_size=5, samples=np.arange(31),
                                 rank=rank, world_size=2, even_ranks=even)
            assert loader.dataset.batches_per_rank() == [3, 4]  # 15 and 16 samples
            n = sum(1 for _ in loader)
            assert n == len(loader)
            counts.append(n)
    assert counts == [3, 4, 3, 3]


def test_same_seed_same_batches_and_epochs_differ(diploid):
    path, _ = diploid

    def batches(seed, epoch):
        loader = make_loader(path, "masked", batch_size=5, seed=seed, shuffle_buffer=12)
        loader.set_epoch(epoch)
        return list(loader)

    a, b = batches(3, 0), batches(3, 0)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key
    order = [b["sample_index"].tolist() for b in a]
    assert order != [b["sample_index"].tolist() for b in batches(3, 1)]
    assert order != [b["sample_index"].tolist() for b in batches(4, 0)]


def test_loader_advances_epoch_by_itself(diploid):
    path, _ = diploid
    loader = make_loader(path, "plain", batch_size=45, shuffle_buffer=45)
    first, second = next(iter(loader)), next(iter(loader))
    assert sorted(first["sample_index"].tolist()) == list(range(45))
    assert first["sample_index"].tolist() != second["sample_index"].tolist()
    loader.set_epoch(0)
    assert next(iter(loader))["sample_index"].tolist() == first["sample_index"].tolist()


def check_dtypes(batch):
    """Every field in the contract's (compact) dtype."""
    for key, value in batch.items():
        assert value.dtype == DTYPES[key], key


def check_hidden(tokens, geno_s, x, targets):
    """Tokens of one genotype: the store's calls + 1 at the inputs, except the
    targets, where every real copy is 0 (missing) and padded copies stay -1."""
    expected = geno_s[x] + 1
    hidden = np.isin(x, targets)
    expected[hidden] = np.where(expected[hidden] > 0, 0, expected[hidden])
    np.testing.assert_array_equal(tokens, expected)
    assert hidden.sum() == len(targets)  # every target is among the inputs


def check_masked(batch, geno, n_alleles, lx, ly):
    """Targets: real, never missing, hidden among the inputs, counted right."""
    B = len(batch["sample_index"])
    P = geno.shape[2]
    check_dtypes(batch)
    assert batch["x_index"].shape == (B, lx) and batch["x_alleles"].shape == (B, lx, P)
    assert batch["y_index"].shape == (B, ly) and batch["y_counts"].shape == (B, ly, n_alleles)
    for k, s in enumerate(batch["sample_index"].tolist()):
        x = batch["x_index"][k].numpy()
        assert np.all(np.diff(x) > 0)
        m = batch["y_mask"][k].numpy()
        y = batch["y_index"][k].numpy()
        assert np.all(y[~m] == 0) and np.all(batch["y_counts"][k].numpy()[~m] == 0)
        targets = y[m]
        assert len(np.unique(targets)) == len(targets) and np.all(np.diff(targets) > 0)
        check_hidden(batch["x_alleles"][k].numpy(), geno[:, s], x, targets)
        assert np.all(geno[targets, s] != -1)  # never missing
        calls = geno[targets, s]  # (targets, P): missing -1 and padded -2 count for none
        counts = (calls[..., None] == np.arange(n_alleles)).sum(1)
        np.testing.assert_array_equal(batch["y_counts"][k].numpy()[m], counts)


def test_target_frequencies_fit_the_store_weights(diploid):
    """Goodness of fit, end to end: one sample's first target over many draws
    against prod over copies (1 - store frequency) ** frequency_scaler."""
    from scipy import stats

    from gperceiver.store import open_store

    path, geno = diploid
    freq = open_store(path)["variant_allele_frequency"].values
    dataset = GenotypeDataset(path, "masked", prop_y=0.02, frequency_scaler=1.5)
    assert dataset.sizes[1] == 1
    sample, n_draws = 7, 20_000
    one = np.ascontiguousarray(geno[:, sample])  # (V, P)
    batch = dataset.builder(np.broadcast_to(one, (n_draws, *one.shape)).copy(),
                            np.full(n_draws, sample), np.random.default_rng(0))
    assert batch["y_mask"].all()
    observed = np.bincount(batch["y_index"][:, 0].numpy(), minlength=len(one))
    weight = np.array([
        0.0 if (g < 0).any() else np.prod([(1 - freq[v, a]) ** 1.5 for a in g])
        for v, g in enumerate(one)
    ])
    assert np.all(observed[weight == 0] == 0)
    expected = weight[weight > 0] / weight.sum()
    expected *= n_draws / expected.sum()
    assert stats.chisquare(observed[weight > 0], expected).pvalue > 1e-3


def test_masked_batches_match_the_store(diploid):
    path, geno = diploid
    loader = make_loader(path, "masked", batch_size=6, prop_y=0.2, shuffle_buffer=16)
    lx, ly = loader.dataset.sizes
    assert (lx, ly) == (50, 10)  # all loci are inputs; a fifth of them targets
    for batch in loader:
        check_masked(batch, geno, 2, lx, ly)


def test_input_subsampling_with_prop_x(diploid):
    path, geno = diploid
    loader = make_loader(path, "masked", batch_size=8, prop_x=0.5, prop_y=0.2)
    assert loader.dataset.sizes == (25, 5)  # prop_y is a share of the input loci
    draws = set()
    for batch in loader:
        check_masked(batch, geno, 2, 25, 5)
        x = batch["x_index"]
        assert (x == x[:1]).all()  # one draw for the batch: the model lays out those loci
        draws.add(tuple(x[0].tolist()))
    assert len(draws) > 1  # and another for the next batch
    plain = make_loader(path, "plain", batch_size=8, prop_x=0.3, shuffle=False)
    batches = list(plain)
    assert batches[0]["x_index"].shape == (8, 15)
    assert len({tuple(b["x_index"][0].tolist()) for b in batches}) > 1
    for b in batches:  # each row's tokens are its own calls at the batch's loci
        rows, x = b["sample_index"].numpy(), b["x_index"][0].numpy()
        np.testing.assert_array_equal(b["x_alleles"].numpy(),
                                      geno[x][:, rows].transpose(1, 0, 2) + 1)


def test_input_window_is_one_contiguous_run_per_batch(diploid):
    path, geno = diploid
    loader = make_loader(path, "masked", batch_size=8, prop_x=0.4, input_window=True,
                         prop_y=0.2)
    assert loader.dataset.sizes == (20, 4)
    starts = set()
    for batch in loader:
        check_masked(batch, geno, 2, 20, 4)  # targets hidden among the window's loci
        x = batch["x_index"]
        assert (x == x[:1]).all() and torch.equal(x[0], torch.arange(x[0, 0], x[0, 0] + 20,
                                                                      dtype=x.dtype))
        starts.add(int(x[0, 0]))
    assert len(starts) > 1 and max(starts) <= 30  # windows move, and stay in the panel


def test_plain_in_order_is_the_store(diploid):
    path, geno = diploid
    loader = make_loader(path, "plain", batch_size=7, shuffle=False)
    batches = list(loader)
    assert [len(b["sample_index"]) for b in batches] == [7] * 6 + [3]
    index = torch.cat([b["sample_index"] for b in batches]).numpy()
    np.testing.assert_array_equal(index, np.arange(45))
    alleles = torch.cat([b["x_alleles"] for b in batches]).numpy()
    np.testing.assert_array_equal(alleles, geno.transpose(1, 0, 2) + 1)
    np.testing.assert_array_equal(batches[0]["x_index"][3].numpy(), np.arange(50))
    dropped = make_loader(path, "plain", batch_size=7, shuffle=False, drop_last=True)
    assert len(dropped) == 6 and len(list(dropped)) == 6


def test_sample_subset_by_name_and_phenotypes(diploid):
    path, geno = diploid
    names = ["s40", "s3", "s17", "s8"]
    phenotypes = np.array([[1.0, np.nan], [2.0, 0.5], [np.nan, np.nan], [4.0, -1.0]],
                          dtype=np.float32)
    loader = make_loader(path, "phenotype", batch_size=3, samples=names, phenotypes=phenotypes)
    rows = {}
    for batch in loader:
        np.testing.assert_array_equal(batch["x_alleles"].numpy(),
                                      geno[:, batch["sample_index"].numpy()].transpose(1, 0, 2)
                                      + 1)
        for s, y, m in zip(batch["sample_index"].tolist(), batch["y"], batch["y_mask"], strict=True):
            rows[s] = (y.numpy(), m.numpy())
    assert sorted(rows) == [3, 8, 17, 40]
    for name, values in zip(names, phenotypes, strict=True):
        y, m = rows[int(name[1:])]
        np.testing.assert_array_equal(m, ~np.isnan(values))
        np.testing.assert_array_equal(y, np.nan_to_num(values, nan=0.0))


def test_contrastive_pairs_share_loci_and_count_shared_alleles(diploid):
    path, geno = diploid
    for prop_x, lx, shuffle in ((1.0, 50, True), (0.6, 30, True), (1.0, 50, False)):
        loader = make_loader(path, "contrastive", batch_size=8, prop_x=prop_x, prop_y=0.2,
                             shuffle=shuffle)
        ly = loader.dataset.sizes[1]
        n = 0
        for batch in loader:
            check_dtypes(batch)
            B = len(batch["sample_index"])
            assert batch["x_alleles"].shape == (B, 2, lx, 2)
            assert batch["y_shared"].shape == (B, ly) == (B, round(0.2 * lx))
            for k, (a, b) in enumerate(batch["sample_index"].tolist()):
                assert a != b
                x, y = batch["x_index"][k].numpy(), batch["y_index"][k].numpy()
                m = batch["y_mask"][k].numpy()
                for side, s in enumerate((a, b)):  # the same targets hidden in both
                    check_hidden(batch["x_alleles"][k, side].numpy(), geno[:, s], x, y[m])
                    assert np.all(geno[y[m], s] != -1)
                brute = [
                    sum((collections.Counter(geno[v, a]) & collections.Counter(geno[v, b]))
                        .values())
                    for v in y[m]
                ]
                np.testing.assert_array_equal(batch["y_shared"][k].numpy()[m], brute)
                n += 1
        assert n == 45


def test_every_task_yields_the_contract_dtypes_from_workers(diploid):
    """Compact batches (int8 tokens, int32 loci) come out of worker processes too,
    through their shared-memory rings exactly as each worker built them, and the
    model widens them itself."""
    from gperceiver.model.perceiver import GPerceiver
    from gperceiver.train.params import Params

    path, _ = diploid
    extra = {"phenotype": {"phenotypes": np.zeros((45, 2), np.float32)}}
    for task in ("plain", "masked", "contrastive", "phenotype"):
        for workers in (0, 2):
            loader = make_loader(path, task, batch_size=9, num_workers=workers,
                                 **extra.get(task, {}))
            batches = list(loader)
            assert sum(len(b["sample_index"]) for b in batches) == 45
            for batch in batches:
                check_dtypes(batch)
            if workers:  # the same batches, built here shard by shard
                loader.dataset.set_epoch(0)
                built = {tuple(b["sample_index"].flatten().tolist()): b
                         for w in range(workers) for b in loader.dataset._batches(w, workers)}
                assert len(built) == len(batches)
                for batch in batches:
                    expected = built[tuple(batch["sample_index"].flatten().tolist())]
                    assert batch.keys() == expected.keys()
                    for name, value in batch.items():
                        assert torch.equal(value, expected[name]), (task, name)
    params = Params.build(nalleles=3, ploidy=2, num_latents=4, latent_dim=8, projection_dim=8,
                          feedforward_dim=8, output_dim=8, num_self_attention=1,
                          allele_embed_dim=4, position_embed_dim=4)
    model = GPerceiver(params.model, torch.arange(50.0), torch.zeros(50, dtype=torch.long), 1)
    batch = next(iter(make_loader(path, "masked", batch_size=3)))
    compact = model.masked_logits(batch["x_alleles"], batch["x_index"], batch["y_index"])
    wide = model.masked_logits(batch["x_alleles"].long(), batch["x_index"].long(),
                               batch["y_index"].long())
    torch.testing.assert_close(compact, wide)


@pytest.mark.parametrize("ploidy,n_alleles", [(4, 3), (6, 4)])
def test_polyploid_multiallelic_store(tmp_path, ploidy, n_alleles):
    rng = np.random.default_rng(ploidy)
    geno = random_genotypes(rng, 30, 20, ploidy, n_alleles, missing=0.02)
    geno[:, :5, ploidy // 2:] = -2  # five samples of half the ploidy (padded copies)
    path = write_store(tmp_path / "poly.zarr", geno, n_alleles, samples_chunk=6)
    loader = make_loader(path, "masked", batch_size=7, prop_y=0.2, shuffle_buffer=8)
    seen = []
    for batch in loader:
        check_masked(batch, geno, n_alleles, 30, 6)
        seen += batch["sample_index"].tolist()
        assert batch["x_alleles"].min() >= -1 and batch["x_alleles"].max() <= n_alleles
    assert sorted(seen) == list(range(20))
    plain = next(iter(make_loader(path, "plain", batch_size=20, shuffle=False)))
    assert (plain["x_alleles"][:5, :, ploidy // 2:] == -1).all()
    # contrastive: shared alleles as multisets, padded copies counting for none
    for batch in make_loader(path, "contrastive", batch_size=7, prop_y=0.2):
        for k, (a, b) in enumerate(batch["sample_index"].tolist()):
            y = batch["y_index"][k].numpy()[batch["y_mask"][k].numpy()]
            brute = [sum((collections.Counter(geno[v, a][geno[v, a] >= 0])
                          & collections.Counter(geno[v, b][geno[v, b] >= 0])).values())
                     for v in y]
            np.testing.assert_array_equal(batch["y_shared"][k].numpy()[:len(y)], brute)


def test_samples_without_enough_eligible_loci_are_padded(tmp_path):
    geno = random_genotypes(np.random.default_rng(5), 20, 6, 2, 3, missing=0.0)
    geno[3:, 1, 0] = -1  # sample 1: only loci 0..2 are eligible
    path = write_store(tmp_path / "pad.zarr", geno, 3)
    batch = next(iter(make_loader(path, "masked", batch_size=6, prop_y=0.25, shuffle=False)))
    assert batch["y_mask"].shape == (6, 5)
    assert batch["y_mask"][1].tolist() == [True] * 3 + [False] * 2
    assert batch["y_index"][1].tolist() == [0, 1, 2, 0, 0]
    assert batch["y_mask"][[0, 2, 3, 4, 5]].all()
    check_masked(batch, geno, 3, 20, 5)


def test_rare_and_common_alleles_are_targeted_about_equally(tmp_path):
    """The original's claim: with frequency_scaler = 1 the copies at target loci
    carry rare and common alleles about equally often; unweighted, they do not."""
    rng = np.random.default_rng(6)
    n_variants, n_samples = 200, 300
    freq = rng.uniform(0.03, 0.3, n_variants)  # allele 1 is the rare one
    geno = (rng.random((n_variants, n_samples, 2)) < freq[:, None, None]).astype(np.int8)
    path = write_store(tmp_path / "panel.zarr", geno, 2, samples_chunk=64)

    def rare_to_common(scaler):
        loader = make_loader(path, "masked", batch_size=50, prop_y=0.01,
                             frequency_scaler=scaler)
        counts = np.zeros(2)
        for _ in range(4):
            for batch in loader:
                counts += batch["y_counts"][batch["y_mask"]].sum(0).numpy()
        return counts[1] / counts[0]

    assert 0.85 < rare_to_common(1.0) < 1.15
    assert rare_to_common(0.0) < 0.3


def test_example_store_from_tsv(example_store):
    loader = make_loader(example_store, "masked", batch_size=16, num_workers=0)
    ds = loader.dataset
    assert (ds.n_samples, ds.n_variants, ds.ploidy) == (40, 60, 2)
    assert sum(len(b["sample_index"]) for b in loader) == 40


def test_bad_arguments_are_usage_errors(diploid):
    path, _ = diploid
    with pytest.raises(UsageError, match="'nobody' is not in the store"):
        GenotypeDataset(path, samples=["s1", "nobody"])
    with pytest.raises(UsageError, match="outside"):
        GenotypeDataset(path, samples=[0, 45])
    with pytest.raises(UsageError, match="twice"):
        GenotypeDataset(path, samples=[1, 1])
    with pytest.raises(UsageError, match="unknown task"):
        GenotypeDataset(path, "nonsense")
    with pytest.raises(UsageError, match="phenotypes"):
        GenotypeDataset(path, "phenotype")
    with pytest.raises(UsageError, match="shape"):
        GenotypeDataset(path, "phenotype", phenotypes=np.zeros((3, 1)))
    with pytest.raises(UsageError, match="rank"):
        GenotypeDataset(path, rank=2, world_size=2)


def test_prefetch_shrinks_for_large_batches(diploid):
    """Six batches ahead per worker, unless their tokens would pass 64 MB."""
    from gperceiver.data.loader import default_prefetch

    path, _ = diploid
    dataset = GenotypeDataset(path, "plain", batch_size=8)
    assert default_prefetch(dataset) == 6
    assert make_loader(path, "plain", batch_size=8, num_workers=2).prefetch_factor == 6
    dataset.batch_size = (64 << 20) // (50 * 2 * 3)  # 3 batches fit in 64 MB
    assert default_prefetch(dataset) == 3
    dataset.batch_size *= 100
    assert default_prefetch(dataset) == 2


@pytest.mark.parametrize("ploidy", [1, 2, 3, 4, 6, 8])
def test_samples_major_transposes_any_columns_into_any_rows(ploidy):
    """The chunk transpose: any subset of a chunk's columns (runs of 8 adjacent
    columns as 8 x 8 tiles, then four at a time, then one), written into any
    rows at an offset, across spans of loci and a tail of fewer than 8 loci."""
    from gperceiver.data.loader import TRANSPOSE_LOCI, samples_major

    rng = np.random.default_rng(ploidy)
    n_loci, width = TRANSPOSE_LOCI + 37, 21
    for n_columns, adjacent in ((1, False), (3, False), (7, False), (9, False),
                                (8, True), (16, True), (19, True), (21, True), (8, None)):
        chunk = rng.integers(-2, 4, (n_loci, width, ploidy)).astype(np.int8)
        if adjacent:  # a run, then a few more columns after a gap
            first = rng.integers(0, width - n_columns + 1)
            columns = np.arange(first, first + n_columns)
        elif adjacent is None:  # first and last 7 apart, but not in order
            columns = np.array([3, 8, 6, 5, 4, 7, 9, 10])
        else:
            columns = np.sort(rng.choice(width, n_columns, replace=False))
        rows = rng.choice(25, n_columns, replace=False)
        out = np.zeros((25, n_loci + 5, ploidy), np.int8)
        samples_major(chunk, columns, out, rows, 5)
        expected = np.zeros_like(out)
        expected[rows, 5:] = chunk[:, columns].transpose(1, 0, 2)
        np.testing.assert_array_equal(out, expected)


def test_kernels_compiled_in_a_child_are_loaded_from_the_cache(diploid, tmp_path):
    """With a cold numba cache, make_loader's process loads the batch kernels from
    the cache a forked child filled, rather than compiling them itself (which
    would keep compiler state that every forked worker maps again)."""
    import os
    import subprocess
    import sys

    path, _ = diploid
    script = (
        "import sys\n"
        "from gperceiver.data import kernels, loader\n"
        f"loader.make_loader({str(path)!r}, 'plain', num_workers=2)\n"
        "stats = kernels.transpose.stats\n"
        "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    hits, misses = map(int, run.stdout.split())
    assert (hits, misses) == (1, 0)
