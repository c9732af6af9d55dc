"""Stream batches from a genotype store: a torch IterableDataset and its DataLoader.

The dataset never loads the genotype array: it reads whole sample chunks (all
variants of a few hundred samples) a read group at a time (`sharding`), keeps a
bounded shuffle buffer of them, and builds each batch with a task builder
(`gperceiver.data.tasks`), target loci drawn on the fly and vectorised over the
batch. Metadata comes from `open_store` (xarray); a group is read a chunk at a
time, decoded by `store.LocalChunks` for local stores (zarr's own decoder
without its async machinery) and through zarr otherwise: computing the same
Dask slices measured about 1.5x the CPU per sample.

Batches come in the contract's compact dtypes (`tasks.DTYPES`: int8 tokens,
int32 loci); the model widens them on its device. A worker hands its batches to
the main process through a ring of shared-memory slots (`handoff`): the task
builder writes the tokens straight into a free slot, and the loader lends the
slot to the batch it yields (views, no copy) until no field of it is alive.
The shuffle buffer keeps samples in fixed slots (a yielded sample's slot is
refilled, nothing moves), and the per-locus work (transposing chunks, target
draws, hiding, counting) is compiled with numba (`gperceiver.data.kernels`);
`make_loader` loads it before forking its workers (`load_kernels`). Persistent
workers are not used: each epoch's workers get the epoch set on the dataset.

Sharding (`gperceiver.data.sharding`): every selected sample is yielded exactly
once per epoch, by one (rank, worker); ranks get sample counts that differ by at
most one, and batch counts by at most one per worker. DDP needs equal counts:
`even_ranks=True` makes every rank stop after the smallest rank's count (the
surplus, at most one batch per worker, is skipped that epoch; which samples
changes with the epoch's shuffle).

Determinism: batches depend only on (seed, epoch, rank, worker, num_workers).
`set_epoch(epoch)` on the dataset or on the loader from `make_loader` picks the
epoch; that loader also advances the epoch by itself at every new iteration.
"""

from __future__ import annotations

import math
import multiprocessing
import sys
import warnings
from collections.abc import Iterator, Sequence

import numcodecs.blosc
import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from gperceiver.data import sharding
from gperceiver.data.handoff import Receiver, Ring
from gperceiver.data.kernels import transpose
from gperceiver.data.tasks import TARGET_TASKS, TaskBuilder
from gperceiver.errors import GPerceiverWarning, UsageError
from gperceiver.memory import plan_loader
from gperceiver.store import CheckedReader, LocalChunks, Store, resolve, schema

# Loci per span of the chunk transpose in `samples_major`: the span's source cache
# lines (one per locus, shared by 32 diploid samples, read for four samples per
# pass) stay in a core's L1/L2.
TRANSPOSE_LOCI = 512
# A worker's GIL switch interval (seconds; Python's default is 0.005). Each batch's
# message leaves through the result queue's feeder thread; with the default, that
# thread waits for the busy batch-building thread up to 5 ms, during which the
# main process (and then the other workers) idle.
SWITCH_INTERVAL = 0.0002
# make_loader's default prefetch_factor: PREFETCH batches per worker, fewer (down
# to torch's 2) when that many would hold more than PREFETCH_BYTES of tokens.
PREFETCH, PREFETCH_BYTES = 6, 64 << 20


class GenotypeDataset(IterableDataset):
    """Batches of one task over the (selected) samples of the store at `store`.

    It yields batches of the contract in `gperceiver.data.tasks`.

    `samples`: sample names or store indices (None: all samples); `phenotypes`
    (n_selected, n_blocks) float32 aligned with `samples` (phenotype task).
    `input_window`: with prop_x < 1, a batch's inputs are one contiguous run of loci
    (see `gperceiver.data.tasks`).
    `shuffle_buffer` bounds the samples held in memory per worker (it is raised to
    one read group plus one batch when smaller).
    `rank`/`world_size` default to torch.distributed when it is initialised.
    `even_ranks`: the loader from `make_loader` stops every rank after the
    smallest rank's batch count (`len`), so DDP ranks step together; the
    surplus (at most one batch per worker on some ranks) is skipped that epoch.
    """

    def __init__(
        self,
        store: Store,
        task: str = "plain",
        *,
        batch_size: int = 16,
        samples: Sequence[str] | Sequence[int] | np.ndarray | None = None,
        phenotypes: np.ndarray | None = None,
        prop_x: float = 1.0,
        input_window: bool = False,
        prop_y: float = 0.1,
        frequency_scaler: float = 1.0,
        shuffle: bool = True,
        shuffle_buffer: int = 1024,
        drop_last: bool = False,
        even_ranks: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {batch_size}")
        # a selection of a store: read only its samples and variants
        view = resolve(store)
        ds, full, store_samples, self.variants = view.ds, view.full, view.samples, view.variants
        self.path = view.path
        self.n_variants = int(ds.sizes[schema.VARIANTS])
        self.ploidy = int(ds.sizes[schema.PLOIDY])
        self.n_alleles = int(ds.sizes[schema.ALLELES])
        # reads address the store itself: its sample count and chunks
        calls = full["call_genotype"].data
        self.n_samples = int(calls.shape[1])
        self.variants_chunk, self.samples_chunk = (int(c) for c in calls.chunksize[:2])
        self.group_samples = sharding.group_size(self.samples_chunk)
        if self.samples_chunk > schema.MAX_TRAINING_SAMPLES_CHUNK:
            warnings.warn(
                f"{self.path}: {self.samples_chunk:,} samples per chunk (a bio2zarr default?): "
                f"every read decompresses them all; `gperceiver convert vcz {self.path} -o OUT` "
                f"rechunks it for training", GPerceiverWarning, stacklevel=2)
        # `reported`: the samples as the caller counts them (rows of the Dataset it gave,
        # the `sample_index` of batches); `selected`: the same samples in the store
        self.reported = _select_samples(ds, samples, self.path)
        self.selected = self.reported if store_samples is None else store_samples[self.reported]
        frequency = None
        if task in TARGET_TASKS:
            frequency = ds["variant_allele_frequency"].values.astype(np.float32)
        try:
            self.builder = TaskBuilder(
                task, self.n_variants, self.n_alleles, frequency,
                prop_x=prop_x, prop_y=prop_y, frequency_scaler=frequency_scaler,
                window=input_window,
            )
        except ValueError as e:
            raise UsageError(str(e)) from None
        self.phenotypes = _check_phenotypes(task, phenotypes, len(self.selected))
        self.task, self.batch_size, self.drop_last = task, batch_size, drop_last
        self.even_ranks = even_ranks
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, max(1, shuffle_buffer), seed
        self.rank, self.world_size = sharding.distributed(rank, world_size)
        self.num_workers = 0  # the DataLoader's, to size __len__; make_loader sets it
        self.ring_slots = 0  # > 0: workers hand batches over through a handoff.Ring
        self.epoch = 0
        self._calls: CheckedReader | None = None
        self._chunks: LocalChunks | None = None
        self._ring: Ring | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def compile(self) -> None:
        """Compile (or load from numba's cache) the kernels this dataset's batches
        use, by building a one-sample batch: workers forked afterwards start with
        them instead of loading them again, every epoch."""
        rng = np.random.Generator(np.random.SFC64(0))
        geno = np.zeros((1, self.n_variants, self.ploidy), dtype=np.int8)
        chunk = np.zeros((1, 1, self.ploidy), dtype=np.int8)
        samples_major(chunk, np.zeros(1, np.int64), geno, np.zeros(1, np.int64))
        extra = {}
        if self.task == "contrastive":
            extra = {"partner": geno, "partner_index": np.zeros(1, np.int64)}
        if self.task == "phenotype":
            extra = {"phenotypes": self.phenotypes[:1]}
        self.builder(geno, np.zeros(1, np.int64), rng, **extra)

    @property
    def sizes(self) -> tuple[int, int]:
        """(Lx, Ly): input and target loci per sample (Ly = 0 without targets)."""
        return self.builder.lx, self.builder.ly

    def batches_per_rank(self) -> list[int]:
        """Batches each rank yields per epoch (given `num_workers`)."""
        return sharding.batches_per_rank(len(self.selected), self.world_size, self.num_workers,
                                         self.batch_size, self.drop_last)

    def __len__(self) -> int:
        """Batches this rank yields per epoch; with `even_ranks`, every rank's count."""
        counts = self.batches_per_rank()
        return min(counts) if self.even_ranks else counts[self.rank]

    def __getstate__(self) -> dict:
        # each process opens the store itself
        return {**self.__dict__, "_calls": None, "_chunks": None, "_ring": None}

    # -- reading ----------------------------------------------------------------------

    def read(self, positions: np.ndarray, out: np.ndarray | None = None,
             rows: np.ndarray | None = None) -> np.ndarray:
        """Genotypes (n, V, P) int8 of selected samples at `positions` (one read
        group, in ascending store order); with `out` (N, V, P), written into its
        `rows` (default 0..n-1) instead.

        The group is read one chunk at a time, each transposed straight into
        `out`: no group-sized temporary, and each chunk is still in cache. Local
        stores are decoded by `LocalChunks`, others through zarr.
        """
        if self._calls is None:  # read errors name the store, variable and region
            array = zarr.open_group(self.path, mode="r")["call_genotype"]
            self._chunks = LocalChunks.open(array, self.path, "call_genotype")
            if get_worker_info() is not None:  # workers run in parallel already, and
                numcodecs.blosc.use_threads = False  # blosc's threads would only compete
                sys.setswitchinterval(SWITCH_INTERVAL)
            if self._chunks is not None and self._chunks.chunks[2] != self.ploidy:
                self._chunks = None  # a chunk must hold every copy of its calls
            self._calls = CheckedReader(array, self.path, "call_genotype")
        index = self.selected[positions]
        if out is None:
            out = np.empty((len(index), self.n_variants, self.ploidy), dtype=np.int8)
        rows = np.arange(len(index)) if rows is None else np.asarray(rows)
        s_step = self.samples_chunk
        # positions per sample chunk: contiguous, as `index` ascends
        first, last = index[0] // s_step, index[-1] // s_step
        bounds = np.searchsorted(index, np.arange(first, last + 2) * s_step)
        for v_chunk, start, stop, at, keep in self._variant_chunks():
            for s_chunk, a, b in zip(range(first, last + 1), bounds[:-1], bounds[1:],
                                     strict=True):
                if a == b:
                    continue
                lo = s_chunk * s_step
                if self._chunks is not None:
                    chunk = self._chunks[v_chunk, s_chunk, 0]
                else:
                    chunk = self._calls[start:stop, lo : min(self.n_samples, lo + s_step), :]
                if keep is not None:
                    chunk = chunk[keep]  # the selected variants of this chunk
                samples_major(chunk, index[a:b] - lo, out, rows[a:b], at)
        return out

    def _variant_chunks(self) -> Iterator[tuple[int, int, int, int, np.ndarray | None]]:
        """(chunk, store start, store stop, first output locus, the chunk's selected rows
        or None for all) of every variant chunk that holds a locus to read."""
        v_step = self.variants_chunk
        if self.variants is None:
            for v_chunk, start in enumerate(range(0, self.n_variants, v_step)):
                yield v_chunk, start, min(self.n_variants, start + v_step), start, None
            return
        chunk = self.variants // v_step
        cuts = np.flatnonzero(np.diff(chunk)) + 1
        for at, part in zip(np.r_[0, cuts], np.split(self.variants, cuts), strict=True):
            v_chunk = int(part[0] // v_step)
            start = v_chunk * v_step
            stop = start + v_step if self._chunks is not None else int(part[-1]) + 1
            yield v_chunk, start, stop, int(at), part - start

    # -- iteration --------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        self._ring = None
        if self.ring_slots and info is not None:  # make_loader's loader receives them
            self._ring = Ring(worker, self.ring_slots, *self.batch_bytes())
            yield from map(self._ring.send, self._batches(worker, num_workers))
        else:
            yield from self._batches(worker, num_workers)

    def batch_bytes(self) -> tuple[int, int]:
        """(bytes of a batch's tokens, a bound on the bytes of its other fields)."""
        lx, ly = self.sizes
        n_blocks = 0 if self.phenotypes is None else self.phenotypes.shape[1]
        per_sample = 16 + 4 * lx + ly * (6 + self.n_alleles) + 5 * n_blocks
        tokens_bytes = math.prod(self.builder.tokens_shape(self.batch_size, self.ploidy))
        return tokens_bytes, self.batch_size * per_sample + 1024

    def _batches(self, worker: int, num_workers: int) -> Iterator[dict[str, torch.Tensor]]:
        positions = sharding.shard_samples(
            self.selected, self.group_samples, rank=self.rank, world_size=self.world_size,
            worker=worker, num_workers=num_workers, shuffle=self.shuffle, seed=self.seed,
            epoch=self.epoch)
        # SFC64: the target draws need one uniform per locus, and it makes them fastest
        seeds = np.random.SeedSequence([self.seed, self.epoch, self.rank, worker])
        rng = np.random.Generator(np.random.SFC64(seeds))
        groups = iter(sharding.read_groups(self.selected, positions, self.group_samples))
        if self.shuffle:
            yield from self._shuffled(groups, rng)
        else:
            yield from self._in_order(groups, rng)

    def _in_order(self, groups, rng) -> Iterator[dict[str, torch.Tensor]]:
        # One buffer of a read group and a batch: each group is read in after what the
        # last one left over (less than a batch), which then moves to the front.
        capacity = self.group_samples + self.batch_size
        geno = np.empty((capacity, self.n_variants, self.ploidy), dtype=np.int8)
        pos = np.empty(capacity, dtype=np.int64)
        held = 0
        for group in groups:
            self.read(group, geno, np.arange(held, held + len(group)))
            pos[held : held + len(group)] = group
            held, start = held + len(group), 0
            while held - start >= self.batch_size:  # (a contrastive partner: any held row)
                yield self._batch(geno[:held], pos[:held],
                                  np.arange(start, start + self.batch_size), rng)
                start += self.batch_size
            geno[: held - start], pos[: held - start] = geno[start:held], pos[start:held]
            held -= start
        if held and not self.drop_last:
            yield self._batch(geno[:held], pos[:held], np.arange(held), rng)

    def _shuffled(self, groups, rng) -> Iterator[dict[str, torch.Tensor]]:
        # The buffer holds at most `shuffle_buffer` samples (at least a read group and
        # a batch): a group is read whenever it fits, before each batch is drawn.
        capacity = max(self.shuffle_buffer, self.group_samples + self.batch_size)
        pool = _Pool(self.n_variants, self.ploidy, capacity)
        group = next(groups, None)
        while True:
            while group is not None and len(pool) + len(group) <= capacity:
                self.read(group, pool.geno, pool.add(group))
                group = next(groups, None)
            size = min(self.batch_size, len(pool))
            if size == 0 or (size < self.batch_size and self.drop_last):
                return
            slots = pool.take(rng.choice(len(pool), size, replace=False))
            yield self._batch(pool.geno, pool.pos, slots, rng, pool.held)

    def _batch(self, geno, pos, rows, rng, others=None) -> dict[str, torch.Tensor]:
        """Build the task's batch from rows `rows` of a buffer (geno, positions); a
        contrastive partner is another of `rows` or of `others` (default: any row)."""
        extra = {}
        if self.task == "contrastive":
            candidates = np.arange(len(pos)) if others is None else np.r_[rows, others]
            n = len(candidates)
            mine = np.arange(len(rows)) if others is not None else rows
            partner = rng.integers(0, max(1, n - 1), size=len(rows))
            partner = np.where((partner >= mine) & (n > 1), partner + 1, partner)
            partner = candidates[np.where(n > 1, partner, mine)]
            extra = {"partner": geno[partner], "partner_index": self.reported[pos[partner]]}
        if self.task == "phenotype":
            extra = {"phenotypes": self.phenotypes[pos[rows]]}
        out = None
        if self._ring is not None:  # the tokens go straight into a free slot of the ring
            out = self._ring.tokens(self.builder.tokens_shape(len(rows), self.ploidy))
        return self.builder(geno, self.reported[pos[rows]], rng, tokens_out=out, rows=rows,
                            **extra)


class _Pool:
    """The shuffle buffer: `capacity` slots of genotypes, those in `held` hold
    samples read but not yet yielded (a yielded sample's slot is reused as it is,
    nothing moves)."""

    def __init__(self, n_variants: int, ploidy: int, capacity: int):
        self.geno = np.empty((capacity, n_variants, ploidy), dtype=np.int8)
        self.pos = np.empty(capacity, dtype=np.int64)
        self.held = np.empty(0, dtype=np.int64)
        self.free = np.arange(capacity)

    def __len__(self) -> int:
        return len(self.held)

    def add(self, pos: np.ndarray) -> np.ndarray:
        """Slots for samples at `pos` (to fill)."""
        if len(pos) > len(self.free):
            raise RuntimeError(f"shuffle buffer overflow: {len(self.held) + len(pos)} > "
                               f"{len(self.geno)} samples")
        slots, self.free = self.free[: len(pos)], self.free[len(pos) :]
        self.pos[slots] = pos
        self.held = np.r_[self.held, slots]
        return slots

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The slots of held samples `rows` (indices into `held`), released."""
        slots = self.held[rows]
        self.held = np.delete(self.held, rows)
        self.free = np.r_[self.free, slots]
        return slots


class GenotypeLoader(DataLoader):
    """A DataLoader over a GenotypeDataset: batches pinned when `pin_memory` (and a
    GPU is there); each new iteration advances the epoch."""

    def __init__(self, dataset: GenotypeDataset, *, pin_memory: bool = False, **kwargs):
        super().__init__(dataset, batch_size=None, collate_fn=collate, **kwargs)
        self.pin = pin_memory
        self._next_epoch = 0
        self.plan = None  # what a memory budget chose (make_loader's `memory`)

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = int(epoch)

    def __iter__(self):
        self.dataset.set_epoch(self._next_epoch)
        self._next_epoch += 1
        limit = len(self.dataset) if self.dataset.even_ranks else None
        pin = self.pin and torch.cuda.is_available()
        receive = Receiver(pin_memory=pin)
        for count, batch in enumerate(super().__iter__()):
            if count == limit:
                break  # the same number of batches on every rank (DDP)
            if "layout" in batch:  # a worker's message
                batch = receive(batch)
            elif pin:
                batch = {k: v.pin_memory() for k, v in batch.items()}
            yield batch


def make_loader(
    store: Store,
    task: str = "plain",
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
    multiprocessing_context: str | None = None,
    memory: int | None = None,
    **dataset_kwargs,
) -> GenotypeLoader:
    """A DataLoader of `task` batches over the store; see GenotypeDataset for options.

    `store`: a path, or a Dataset from `open_store` or a selection of one
    (`ds.isel(variants=keep)`, `Selection.view(ds)`): only its samples and variants
    are read, and no new store is written.

    `prefetch_factor`: batches each worker may have ready ahead (default
    `default_prefetch`). A worker makes batches in bursts (a whole sample chunk
    is read before the samples in it can be drawn), and batches reach the main
    process in worker order, so with torch's default of 2 the other worker soon
    stalls.

    `memory`: a budget in bytes (`gperceiver.memory`) that sizes the shuffle buffer and
    the prefetched batches; `loader.plan` says what it chose (None without a budget).
    """
    dataset = GenotypeDataset(store, task, batch_size=batch_size, **dataset_kwargs)
    dataset.num_workers = num_workers
    plan = None
    if memory is not None:
        plan = plan_loader(memory, n_variants=dataset.n_variants, ploidy=dataset.ploidy,
                           group_samples=dataset.group_samples, batch_size=batch_size,
                           workers=num_workers)
        dataset.shuffle_buffer = min(dataset.shuffle_buffer, plan.shuffle_buffer)
    extra = {}
    if num_workers > 0:
        load_kernels(dataset)
        limit = PREFETCH_BYTES if plan is None else min(PREFETCH_BYTES, plan.prefetch_bytes)
        prefetch = prefetch_factor or default_prefetch(dataset, limit)
        # in flight (prefetch), the batch being used and the one before it, and one spare
        dataset.ring_slots = prefetch + 3
        extra = {"prefetch_factor": prefetch, "multiprocessing_context": multiprocessing_context}
    loader = GenotypeLoader(dataset, num_workers=num_workers, pin_memory=pin_memory, **extra)
    loader.plan = plan
    return loader


_LOADED: set[tuple] = set()  # the (task, ploidy) kernels this process has loaded


def load_kernels(dataset: GenotypeDataset) -> None:
    """Compile the kernels of `dataset`'s batches into this process (`compile`), so
    that the workers it forks start with them.

    The first time per (task, ploidy) in a process, a forked child compiles them
    first and leaves them in numba's on-disk cache, and this process then loads
    them from there: compiled here, they would keep about 100 MB of compiler
    state in this process, which every forked worker maps again (in its RSS).
    Loaded from the cache, they cost about a fifth of that; a warm cache makes
    the child's part a load too (about 0.5 s, once per process).
    """
    key = (dataset.task, dataset.ploidy)
    if key not in _LOADED and "fork" in multiprocessing.get_all_start_methods():
        child = multiprocessing.get_context("fork").Process(target=dataset.compile)
        child.start()
        child.join()
    _LOADED.add(key)
    dataset.compile()


def samples_major(chunk: np.ndarray, columns: np.ndarray, out: np.ndarray,
                  rows: np.ndarray, start: int = 0) -> None:
    """out[rows[j], start : start + V] = chunk[:, columns[j]] for a (V, S, P) int8 chunk.

    Compiled (`kernels.transpose`), in spans of TRANSPOSE_LOCI loci whose source
    lines stay in cache; the copies of a call move together as one wide integer.
    Where a call is one such integer (ploidy 1, 2, 4 or 8), runs of 8 adjacent
    columns move as 8 x 8 tiles transposed in vector registers
    (`simd.transpose_tile`, about 3x faster).
    """
    ploidy = chunk.shape[2]
    width = next(w for w in (8, 4, 2, 1) if ploidy % w == 0)
    kind = {8: np.int64, 4: np.int32, 2: np.int16, 1: np.int8}[width]
    source = np.ascontiguousarray(chunk).view(kind)  # (V, S, P / width)
    target = out.view(kind)  # (N, V, P / width)
    if source.shape[2] == 1:  # one item per call: 2-d, the fast loop
        source, target = source[..., 0], target[..., 0]
    tiles = source.ndim == 2 and target.flags.c_contiguous
    flat_source, flat_target = ((source.reshape(-1), target.reshape(-1)) if tiles
                                else (np.empty(0, kind), np.empty(0, kind)))
    transpose(source, np.asarray(columns, np.int64), target, np.asarray(rows, np.int64),
              start, TRANSPOSE_LOCI, tiles, flat_source, flat_target)


def default_prefetch(dataset: GenotypeDataset, limit: int = PREFETCH_BYTES) -> int:
    """PREFETCH, or fewer batches (at least 2) when their tokens would pass `limit`
    bytes: a million-marker batch is tens of MB."""
    tokens_bytes, _ = dataset.batch_bytes()
    return max(2, min(PREFETCH, limit // max(1, tokens_bytes)))


def collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Batches are built whole in the worker: pass them through unchanged."""
    return batch


def _select_samples(ds, samples, path: str) -> np.ndarray:
    """Store indices (int64) of the selected samples, in the order given."""
    n = int(ds.sizes[schema.SAMPLES])
    if samples is None:
        return np.arange(n, dtype=np.int64)
    samples = np.asarray(samples)
    if samples.size == 0:
        raise UsageError(f"{path}: the sample selection is empty")
    if samples.dtype.kind in "iu":
        index = samples.astype(np.int64)
        bad = index[(index < 0) | (index >= n)]
        if bad.size:
            raise UsageError(f"{path}: sample index {bad[0]} is outside 0..{n - 1}")
    else:
        lookup = {str(name): i for i, name in enumerate(ds["sample_id"].values.tolist())}
        missing = [str(s) for s in samples if str(s) not in lookup]
        if missing:
            raise UsageError(f"{path}: sample '{missing[0]}' is not in the store")
        index = np.array([lookup[str(s)] for s in samples], dtype=np.int64)
    if len(np.unique(index)) != len(index):
        raise UsageError(f"{path}: the sample selection names a sample twice")
    return index


def _check_phenotypes(task: str, phenotypes, n_selected: int) -> np.ndarray | None:
    if task != "phenotype":
        return None
    if phenotypes is None:
        raise UsageError("the phenotype task needs phenotypes")
    values = np.asarray(phenotypes, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] != n_selected:
        raise UsageError(
            f"phenotypes have shape {values.shape}, expected ({n_selected}, n_blocks)"
        )
    return values
