"""Task builders: turn a batch of genotypes into the model's tensors (the batch contract).

Every builder takes int8 genotypes `geno` (B, V, P) as stored (allele index per
copy, -1 missing, -2 padded copy) and returns a dict of torch tensors. Allele
TOKENS are call_genotype + 1: 0 = missing copy, 1..A = allele 0..A-1, -1 = padded
copy (the model ignores those). Variant indices index the store's `variants` dim.

Sizes, constant within an epoch so batches stack (V = number of variants):
Ly = max(1, round(prop_y * V)) targets (at most V - 1); for masked/contrastive
Lx = min(V - Ly, max(1, round(prop_x * V))) inputs drawn uniformly among the
non-target loci; for plain/phenotype Lx = max(1, round(prop_x * V)) (prop_x = 1:
all V loci in store order). x_index is sorted ascending within each sample.

The contract (what `make_loader`'s loader yields; dtypes after `widen`):
- every task: "sample_index" int64 (B,) store sample index (contrastive: (B, 2)).
- "plain": "x_index" int64 (B, Lx), "x_alleles" int64 (B, Lx, P). With all loci
  (prop_x = 1) x_index is one arange row expanded over the batch (stride 0 on
  dim 0): read it freely, call .contiguous() before writing into it.
- "masked": plain fields with the targets never among the inputs, plus
  "y_index" int64 (B, Ly) targets drawn per sample without replacement with weight
  prod over copies (1 - freq of the copy's allele) ** frequency_scaler (loci with a
  missing copy never), "y_counts" int64 (B, Ly, A) count of each allele at the
  target, "y_mask" bool (B, Ly) False for padding when a sample has fewer than Ly
  eligible loci (padding: y_index 0, y_counts 0). Drawn targets come first in
  each row, ascending; padding follows.
- "contrastive": two genotypes per row sharing x_index/y_index: "x_alleles" int64
  (B, 2, Lx, P) (targets hidden in both), "y_shared" int64 (B, Ly) size of the
  multiset intersection of the two genotypes' alleles at the target (0..P),
  "y_mask" (B, Ly), "sample_index" (B, 2): the partner is another sample of the
  same shuffle buffer. A locus is eligible when neither genotype has a missing
  copy there; its weight is the product of the two genotypes' weights.
- "phenotype": plain fields plus "y" float32 (B, n_blocks) (NaN -> 0) and
  "y_mask" bool (B, n_blocks), True where observed.

Builders (and so `GenotypeDataset`, in the DataLoader workers) make COMPACT
batches: the same keys and shapes, but x_alleles/y_counts/y_shared int8 and
x_index/y_index int32, 8x less shared memory per batch to hand to the main
process. `widen` gives the int64 contract; `make_loader(..., compact=True)`
skips it, for a model that widens on its device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import get_worker_info

from gperceiver.data.sampling import (
    Scratch,
    locus_weights,
    sample_without_replacement,
    weight_table,
)

TASKS = ("plain", "masked", "contrastive", "phenotype")
TARGET_TASKS = ("masked", "contrastive")
INDEX = torch.int32  # locus indices in compact batches
WIDE = ("x_index", "x_alleles", "y_index", "y_counts", "y_shared")  # int64 in the contract


def task_sizes(task: str, n_variants: int, prop_x: float, prop_y: float) -> tuple[int, int]:
    """(Lx, Ly) for `task` over `n_variants` loci; Ly is 0 for tasks without targets."""
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}' (expected one of {', '.join(TASKS)})")
    if not 0 < prop_x <= 1 or not 0 < prop_y < 1:
        raise ValueError(f"prop_x must be in (0, 1] and prop_y in (0, 1), got {prop_x}, {prop_y}")
    lx = max(1, round(prop_x * n_variants))
    if task not in TARGET_TASKS:
        return lx, 0
    if n_variants < 2:
        raise ValueError(f"the {task} task needs at least 2 variants, the store has {n_variants}")
    ly = min(n_variants - 1, max(1, round(prop_y * n_variants)))
    return min(n_variants - ly, lx), ly


@dataclass
class TaskBuilder:
    """Builds one task's batches; holds the per-locus weight table for target draws."""

    task: str
    n_variants: int
    n_alleles: int
    frequency: np.ndarray | None = None  # (V, A) variant_allele_frequency, target tasks only
    prop_x: float = 1.0
    prop_y: float = 0.1
    frequency_scaler: float = 1.0

    def __post_init__(self) -> None:
        self.lx, self.ly = task_sizes(self.task, self.n_variants, self.prop_x, self.prop_y)
        self.table, self.scratch = None, Scratch()
        if self.task in TARGET_TASKS:
            if self.frequency is None:
                raise ValueError(f"the {self.task} task needs allele frequencies")
            self.table = weight_table(self.frequency, self.frequency_scaler)

    def __call__(
        self,
        geno: np.ndarray,
        sample_index: np.ndarray,
        rng: np.random.Generator,
        *,
        partner: np.ndarray | None = None,
        partner_index: np.ndarray | None = None,
        phenotypes: np.ndarray | None = None,
    ) -> dict[str, torch.Tensor]:
        """The batch for genotypes `geno` (B, V, P) of store samples `sample_index` (B,)."""
        if self.task == "masked":
            return self.masked(geno, sample_index, rng)
        if self.task == "contrastive":
            return self.contrastive(geno, partner, sample_index, partner_index, rng)
        batch = self.plain(geno, sample_index, rng)
        if self.task == "phenotype":
            batch.update(phenotype_fields(phenotypes))
        return batch

    def plain(self, geno: np.ndarray, sample_index: np.ndarray, rng) -> dict[str, torch.Tensor]:
        x_index, chosen = choose_inputs(rng, geno.shape[0], self.n_variants, self.lx)
        if chosen is None:  # all loci in order: one row, expanded (stride 0) over the batch
            x = torch.arange(self.n_variants).expand(geno.shape[0], -1)
        else:
            x = to_shared(x_index, INDEX)
        return {
            "sample_index": _tensor(sample_index, np.int64),
            "x_index": x,
            "x_alleles": tokens(geno, chosen),
        }

    def masked(self, geno: np.ndarray, sample_index: np.ndarray, rng) -> dict[str, torch.Tensor]:
        weights = locus_weights(geno, self.table, self.scratch)
        y_index, y_mask = sample_without_replacement(weights, self.ly, rng, self.scratch)
        x_index, chosen = choose_inputs(
            rng, geno.shape[0], self.n_variants, self.lx, y_index, y_mask
        )
        counts = allele_counts(gather(geno, y_index), self.n_alleles)
        counts[~y_mask] = 0
        return {
            "sample_index": _tensor(sample_index, np.int64),
            "x_index": to_shared(x_index, INDEX),
            "x_alleles": tokens(geno, chosen),
            "y_index": to_shared(y_index, INDEX),
            "y_counts": to_shared(counts, torch.int8),
            "y_mask": torch.from_numpy(y_mask),
        }

    def contrastive(
        self,
        geno: np.ndarray,
        partner: np.ndarray,
        sample_index: np.ndarray,
        partner_index: np.ndarray,
        rng,
    ) -> dict[str, torch.Tensor]:
        if partner is None or partner_index is None:
            raise ValueError("the contrastive task needs a partner genotype per sample")
        weights = locus_weights(geno, self.table, self.scratch)
        weights *= locus_weights(partner, self.table, self.scratch)
        y_index, y_mask = sample_without_replacement(weights, self.ly, rng, self.scratch)
        x_index, chosen = choose_inputs(
            rng, geno.shape[0], self.n_variants, self.lx, y_index, y_mask
        )
        shared = shared_alleles(gather(geno, y_index), gather(partner, y_index), self.n_alleles)
        shared[~y_mask] = 0
        return {
            "sample_index": _tensor(np.stack([sample_index, partner_index], axis=1), np.int64),
            "x_index": to_shared(x_index, INDEX),
            "x_alleles": tokens(np.stack([geno, partner], axis=1), chosen),
            "y_index": to_shared(y_index, INDEX),
            "y_shared": to_shared(shared, torch.int8),
            "y_mask": torch.from_numpy(y_mask),
        }


def choose_inputs(
    rng: np.random.Generator,
    n_rows: int,
    n_variants: int,
    lx: int,
    y_index: np.ndarray | None = None,
    y_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(B, lx) sorted input loci per row, uniform among loci that are not targets,
    and the (B, V) bool mask of them (None when every row is all loci in order).
    """
    if y_index is None and lx == n_variants:
        return np.broadcast_to(np.arange(n_variants, dtype=np.int64), (n_rows, lx)), None
    chosen = np.ones((n_rows, n_variants), dtype=bool)
    available = np.full(n_rows, n_variants)
    if y_index is not None:
        np.put_along_axis(chosen, y_index, False, axis=1)
        chosen[:, 0] |= ~y_mask.all(axis=1) & ~_drawn(y_index, y_mask, 0)
        available -= y_mask.sum(axis=1)
    if np.any(available != lx):
        keys = rng.random((n_rows, n_variants), dtype=np.float32)
        keys[~chosen] = 2.0
        picked = np.argpartition(keys, lx - 1, axis=1)[:, :lx]
        chosen = np.zeros((n_rows, n_variants), dtype=bool)
        np.put_along_axis(chosen, picked, True, axis=1)
    flat = np.flatnonzero(chosen).reshape(n_rows, lx)
    flat -= np.arange(0, n_rows * n_variants, n_variants)[:, None]
    return flat, chosen


def _drawn(y_index: np.ndarray, y_mask: np.ndarray, locus: int) -> np.ndarray:
    """(B,) True where `locus` is a real (not padding) target of the row."""
    return np.any((y_index == locus) & y_mask, axis=1)


def packed(geno: np.ndarray) -> np.ndarray:
    """(B, V) view of genotypes (B, V, P) with one item per locus (all P copies)."""
    width = geno.shape[-1]
    kind = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}.get(width, np.dtype(f"V{width}"))
    return np.ascontiguousarray(geno).view(kind)[..., 0]


def unpacked(items: np.ndarray, ploidy: int) -> np.ndarray:
    """Inverse of `packed`: (B, L) items -> (B, L, P) int8."""
    return items.view(np.int8).reshape(*items.shape, ploidy)


def tokens(geno: np.ndarray, chosen: np.ndarray | None) -> torch.Tensor:
    """int8 allele tokens (B, [2,] Lx, P) = call_genotype + 1 at the loci where
    `chosen` (B, V) is True (None: all loci); `geno` is (B, [2,] V, P)."""
    if chosen is not None:
        items = packed(geno)  # (B, [2,] V)
        if items.ndim == 3:  # a pair per row: the same loci in both
            items = items.transpose(1, 0, 2)[:, chosen].reshape(2, len(chosen), -1)
            items = np.ascontiguousarray(items.transpose(1, 0, 2))
        else:
            items = items[chosen].reshape(len(chosen), -1)
        geno = unpacked(items, geno.shape[-1])
    return to_shared(geno + np.int8(1), torch.int8)


def to_shared(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """`array` as a new tensor of `dtype`; inside a DataLoader worker it is made in
    shared memory, so handing it to the main process copies nothing more."""
    source = torch.from_numpy(np.asarray(array))
    if get_worker_info() is None:
        return source.to(dtype, copy=True)
    size = math.prod(source.shape) * dtype.itemsize
    storage = torch.UntypedStorage._new_shared(size)
    return torch.empty(0, dtype=dtype).set_(storage, 0, source.shape).copy_(source)


def widen(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch contract's dtypes (int64) from a compact batch, in place; returns it."""
    for key in WIDE:
        if key in batch and batch[key].dtype != torch.int64:
            batch[key] = batch[key].to(torch.int64)
    return batch


def gather(geno: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Genotypes (B, L, P) int8 at loci `index` (B, L)."""
    return unpacked(np.take_along_axis(packed(geno), index, axis=1), geno.shape[-1])


def allele_counts(geno: np.ndarray, n_alleles: int) -> np.ndarray:
    """(..., A) int8 count of each allele over the copies (last axis) of `geno`."""
    alleles = np.arange(n_alleles, dtype=np.int8)
    counts = np.zeros((*geno.shape[:-1], n_alleles), dtype=np.int8)
    for copy in range(geno.shape[-1]):
        counts += geno[..., copy, None] == alleles
    return counts


def shared_alleles(geno_a: np.ndarray, geno_b: np.ndarray, n_alleles: int) -> np.ndarray:
    """(...) int8 size of the multiset intersection of the copies of two genotypes."""
    both = np.minimum(allele_counts(geno_a, n_alleles), allele_counts(geno_b, n_alleles))
    return both.sum(-1, dtype=np.int8)


def phenotype_fields(phenotypes: np.ndarray | None) -> dict[str, torch.Tensor]:
    """"y" float32 (B, n_blocks) with NaN -> 0 and "y_mask" True where observed."""
    if phenotypes is None:
        raise ValueError("the phenotype task needs phenotypes")
    values = np.asarray(phenotypes, dtype=np.float32)
    observed = ~np.isnan(values)
    return {
        "y": torch.from_numpy(np.where(observed, values, np.float32(0.0))),
        "y_mask": torch.from_numpy(observed),
    }


def _tensor(array: np.ndarray, dtype: type) -> torch.Tensor:
    """A torch tensor owning a writable, contiguous copy when `array` is a view."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))
