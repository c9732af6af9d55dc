"""Task builders: turn a batch of genotypes into the model's tensors (the batch contract).

Every builder takes int8 genotypes `geno` (B, V, P) as stored (allele index per
copy, -1 missing, -2 padded copy) and returns a dict of torch tensors. Allele
TOKENS are call_genotype + 1: 0 = missing copy, 1..A = allele 0..A-1, -1 = padded
copy (the model ignores those). Variant indices index the store's `variants` dim.

Sizes, constant within an epoch so batches stack (V = number of variants):
Ly = max(1, round(prop_y * V)) targets; for masked/contrastive
Lx = min(V - Ly, max(1, round(prop_x * V))) inputs drawn uniformly among the
non-target loci; for plain/phenotype Lx = max(1, round(prop_x * V)) (prop_x = 1:
all V loci in store order). x_index is sorted ascending within each sample.

- every task: "sample_index" int64 (B,) store sample index (contrastive: (B, 2)).
- "plain": "x_index" int64 (B, Lx), "x_alleles" int64 (B, Lx, P).
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
  "y_mask" (B, Ly), "sample_index" (B, 2). A locus is eligible when neither
  genotype has a missing copy there; its weight is the product of the two
  genotypes' weights.
- "phenotype": plain fields plus "y" float32 (B, n_blocks) (NaN -> 0) and
  "y_mask" bool (B, n_blocks), True where observed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gperceiver.data.sampling import locus_weights, sample_without_replacement, weight_table

TASKS = ("plain", "masked", "contrastive", "phenotype")
TARGET_TASKS = ("masked", "contrastive")


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
        self.table = None
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
        x_index = choose_inputs(rng, geno.shape[0], self.n_variants, self.lx)
        return {
            "sample_index": _tensor(sample_index, np.int64),
            "x_index": _tensor(x_index, np.int64),
            "x_alleles": tokens(geno, x_index),
        }

    def masked(self, geno: np.ndarray, sample_index: np.ndarray, rng) -> dict[str, torch.Tensor]:
        weights = locus_weights(geno, self.table)
        y_index, y_mask = sample_without_replacement(weights, self.ly, rng)
        x_index = choose_inputs(rng, geno.shape[0], self.n_variants, self.lx, y_index, y_mask)
        counts = allele_counts(np.take_along_axis(geno, y_index[..., None], axis=1), self.n_alleles)
        counts[~y_mask] = 0
        return {
            "sample_index": _tensor(sample_index, np.int64),
            "x_index": _tensor(x_index, np.int64),
            "x_alleles": tokens(geno, x_index),
            "y_index": torch.from_numpy(y_index),
            "y_counts": torch.from_numpy(counts),
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
        weights = locus_weights(geno, self.table) * locus_weights(partner, self.table)
        y_index, y_mask = sample_without_replacement(weights, self.ly, rng)
        x_index = choose_inputs(rng, geno.shape[0], self.n_variants, self.lx, y_index, y_mask)
        shared = shared_alleles(
            np.take_along_axis(geno, y_index[..., None], axis=1),
            np.take_along_axis(partner, y_index[..., None], axis=1),
            self.n_alleles,
        )
        shared[~y_mask] = 0
        return {
            "sample_index": torch.from_numpy(
                np.stack([sample_index, partner_index], axis=1).astype(np.int64)
            ),
            "x_index": _tensor(x_index, np.int64),
            "x_alleles": torch.stack([tokens(geno, x_index), tokens(partner, x_index)], dim=1),
            "y_index": torch.from_numpy(y_index),
            "y_shared": torch.from_numpy(shared),
            "y_mask": torch.from_numpy(y_mask),
        }


def choose_inputs(
    rng: np.random.Generator,
    n_rows: int,
    n_variants: int,
    lx: int,
    y_index: np.ndarray | None = None,
    y_mask: np.ndarray | None = None,
) -> np.ndarray:
    """(B, lx) sorted input loci per row: uniform among loci that are not targets.

    With no targets and lx == V, every row is all loci in store order.
    """
    if y_index is None and lx == n_variants:
        return np.broadcast_to(np.arange(n_variants, dtype=np.int64), (n_rows, n_variants))
    excluded = np.zeros((n_rows, n_variants), dtype=bool)
    if y_index is not None:
        rows = np.broadcast_to(np.arange(n_rows)[:, None], y_index.shape)
        excluded[rows[y_mask], y_index[y_mask]] = True
    available = n_variants - excluded.sum(axis=1)
    if np.all(available == lx):
        chosen = ~excluded
    else:
        keys = rng.random((n_rows, n_variants), dtype=np.float32)
        keys[excluded] = 2.0
        picked = np.argpartition(keys, lx - 1, axis=1)[:, :lx]
        chosen = np.zeros((n_rows, n_variants), dtype=bool)
        np.put_along_axis(chosen, picked, True, axis=1)
    return np.nonzero(chosen)[1].reshape(n_rows, lx)


def tokens(geno: np.ndarray, x_index: np.ndarray) -> torch.Tensor:
    """int64 allele tokens (B, Lx, P) = call_genotype + 1 at loci `x_index` (B, Lx)."""
    n_rows, n_variants = geno.shape[:2]
    if x_index.shape[1] == n_variants and x_index.strides[0] == 0:
        picked = geno  # all loci in store order
    else:
        picked = np.take_along_axis(geno, x_index[..., None], axis=1)
    out = torch.from_numpy(picked).to(torch.int64)
    return out.add_(1)


def allele_counts(geno: np.ndarray, n_alleles: int) -> np.ndarray:
    """(..., A) int64 count of each allele over the copies (last axis) of `geno`."""
    counts = np.zeros((*geno.shape[:-1], n_alleles), dtype=np.int64)
    for allele in range(n_alleles):
        counts[..., allele] = (geno == allele).sum(axis=-1)
    return counts


def shared_alleles(geno_a: np.ndarray, geno_b: np.ndarray, n_alleles: int) -> np.ndarray:
    """(...) int64 size of the multiset intersection of the copies of two genotypes."""
    return np.minimum(allele_counts(geno_a, n_alleles), allele_counts(geno_b, n_alleles)).sum(-1)


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
