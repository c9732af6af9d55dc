"""Sharding: which selected samples each (rank, DataLoader worker) yields, in which order.

The loader reads samples in read groups: whole sample chunks (all variants of a
few hundred samples), at least MIN_GROUP_SAMPLES samples when the store's
sample chunks are small. Each epoch the selected samples are ordered by read
group (groups shuffled with (seed, epoch), identically in every process), that
sequence is cut into `world_size` contiguous near-equal ranges, one per
distributed rank, and each rank's range into one range per DataLoader worker.
So every selected sample is yielded exactly once per epoch, with no padding or
duplication; ranks get sample counts that differ by at most one, and their
batch counts by at most one per worker (each worker ends with its own partial
batch). A range boundary that falls inside a read group makes both neighbours
read that group (each keeps only its part).

Plain functions of the selection, the chunk layout and (rank, world size,
worker, workers): the dataset (`loader.GenotypeDataset`) calls them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gperceiver.errors import UsageError

# Aim for reads of at least this many samples when the store's sample chunks are small.
MIN_GROUP_SAMPLES = 256


def group_size(samples_chunk: int) -> int:
    """Samples per read group: whole sample chunks, at least MIN_GROUP_SAMPLES of them."""
    return samples_chunk * max(1, MIN_GROUP_SAMPLES // samples_chunk)


def distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world size): as given, else torch.distributed's when initialised, else (0, 1)."""
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        rank = 0 if rank is None else rank
        world_size = 1 if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise UsageError(f"rank {rank} is outside 0..{world_size - 1}")
    return int(rank), int(world_size)


def shard_samples(selected: np.ndarray, group_samples: int, *, rank: int, world_size: int,
                  worker: int, num_workers: int, shuffle: bool = False, seed: int = 0,
                  epoch: int = 0) -> np.ndarray:
    """Positions (into `selected`, store indices) of (rank, worker)'s shard, in group order."""
    order = np.argsort(selected, kind="stable")
    group = selected[order] // group_samples
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    groups = np.split(order, starts[1:])
    if shuffle:
        perm = np.random.default_rng([seed, epoch]).permutation(len(groups))
        groups = [groups[i] for i in perm]
    sequence = np.concatenate(groups) if groups else order
    rank_bounds = bounds(len(sequence), world_size)
    mine = sequence[rank_bounds[rank] : rank_bounds[rank + 1]]
    worker_bounds = bounds(len(mine), num_workers)
    return mine[worker_bounds[worker] : worker_bounds[worker + 1]]


def read_groups(selected: np.ndarray, positions: np.ndarray,
                group_samples: int) -> list[np.ndarray]:
    """`positions` (into `selected`) split into runs whose samples share a read group."""
    group = selected[positions] // group_samples
    cuts = np.flatnonzero(group[1:] != group[:-1]) + 1
    return np.split(positions, cuts)


def shard_counts(n_selected: int, world_size: int, num_workers: int) -> list[int]:
    """Samples yielded per (rank, worker) shard, rank-major (0 workers count as 1)."""
    workers = max(1, num_workers)
    return [c for n in split(n_selected, world_size) for c in split(n, workers)]


def batches_per_rank(n_selected: int, world_size: int, num_workers: int, batch_size: int,
                     drop_last: bool) -> list[int]:
    """Batches each rank yields per epoch: every worker's shard in batches of its own."""
    workers = max(1, num_workers)
    round_ = math.floor if drop_last else math.ceil
    counts = [round_(n / batch_size) for n in shard_counts(n_selected, world_size, workers)]
    return [sum(counts[r * workers : (r + 1) * workers]) for r in range(world_size)]


def split(n: int, parts: int) -> list[int]:
    """Sizes of `n` items cut into `parts` contiguous near-equal ranges."""
    return np.diff(bounds(n, parts)).tolist()


def bounds(n: int, parts: int) -> np.ndarray:
    """The parts + 1 boundaries of `n` items cut into `parts` contiguous near-equal ranges."""
    return (np.arange(parts + 1) * n) // parts
