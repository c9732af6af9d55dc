"""Task builders: turn a batch of genotypes into the model's tensors (the batch contract).

Every builder takes int8 genotypes `geno` (B, V, P) as stored (allele index per
copy, -1 missing, -2 padded copy) and returns a dict of torch tensors. Allele
TOKENS are call_genotype + 1: 0 = missing copy, 1..A = allele 0..A-1, -1 = a
padded copy (the model ignores those). Variant indices index the store's
`variants` dim.

Sizes, constant within an epoch so batches stack (V = number of variants):
Lx = max(1, round(prop_x * V)) input loci (prop_x = 1: all V loci in store order,
otherwise drawn uniformly once per batch and sorted, or with `window` one
contiguous run of Lx loci around a uniform locus; every row of a batch gives the
same loci, so the model lays out those alone, and a step costs what Lx loci cost
however large the panel); for masked/contrastive,
Ly = max(1, round(prop_y * Lx)) targets among the inputs (at most Lx - 1).

The contract (what the loader yields; `DTYPES` declares every field's dtype).
Batches are compact: tokens int8, locus indices int32, so a batch costs the
workers, the shared memory and a host-to-device copy 1 byte per call; the model
widens them on its device.
- every task: "sample_index" (B,) the sample's row in the store, or in the Dataset
  selected from it that the loader was given (contrastive: (B, 2)),
  "x_index" (B, Lx) ascending input loci (one row expanded over the batch, stride 0
  on dim 0: call .contiguous() before writing into it),
  "x_alleles" (B, Lx, P) the tokens there.
- "masked" (BERT-style): plus "y_index" (B, Ly) target loci, drawn per sample
  among the inputs without replacement with weight prod over copies
  (1 - freq of the copy's allele) ** frequency_scaler (loci with a missing copy
  never); the targets stay in x_index but are HIDDEN: every copy's token is 0
  (missing) in x_alleles, exactly as an untyped call looks when imputing.
  "y_counts" (B, Ly, A) count of each allele at the target, "y_mask" (B, Ly)
  False for padding when a sample has fewer than Ly eligible loci (padding:
  y_index 0, y_counts 0). Drawn targets come first in each row, ascending.
- "contrastive": two genotypes per row sharing x_index/y_index: "x_alleles"
  (B, 2, Lx, P) with the targets hidden in both, "y_shared" (B, Ly) size of the
  multiset intersection of the two genotypes' alleles at the target (0..P),
  "y_mask" (B, Ly), "y_counts" (B, 2, Ly, A) each twin's allele counts there,
  "sample_index" (B, 2): the partner is another sample of the same shuffle buffer.
  A locus is eligible when neither genotype has a missing copy there; its weight
  is the product of the two genotypes' weights.
- "phenotype": plain fields plus "y" (B, n_blocks) (NaN -> 0) and "y_mask"
  (B, n_blocks), True where observed.

The per-call loops (tokens, hidden targets and their labels, gathered loci) are
compiled kernels (`gperceiver.data.kernels`). A DataLoader worker hands each batch
over through its shared-memory ring (`gperceiver.data.handoff`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gperceiver.choices import LOADER_TASKS, PRETRAIN_TASKS
from gperceiver.data.kernels import hidden_tokens, plus_one
from gperceiver.data.sampling import Scratch, draw_targets, weight_table

TASKS = LOADER_TASKS
TARGET_TASKS = PRETRAIN_TASKS
DTYPES = {  # every field of the batch contract
    "sample_index": torch.int64,
    "x_index": torch.int32,
    "x_alleles": torch.int8,
    "y_index": torch.int32,
    "y_counts": torch.int8,
    "y_shared": torch.int8,
    "y_mask": torch.bool,
    "y": torch.float32,
}


def task_sizes(task: str, n_variants: int, prop_x: float, prop_y: float) -> tuple[int, int]:
    """(Lx, Ly) for `task` over `n_variants` loci; Ly is 0 for tasks without targets."""
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}' (expected one of {', '.join(TASKS)})")
    if not 0 < prop_x <= 1 or not 0 < prop_y < 1:
        raise ValueError(f"prop_x must be in (0, 1] and prop_y in (0, 1), got {prop_x}, {prop_y}")
    lx = max(1, round(prop_x * n_variants))
    if task not in TARGET_TASKS:
        return lx, 0
    if lx < 2:
        raise ValueError(f"the {task} task needs at least 2 input loci, prop_x gives {lx} "
                         f"of the store's {n_variants} variants")
    return lx, min(lx - 1, max(1, round(prop_y * lx)))


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
    window: bool = False  # prop_x < 1: inputs are one contiguous run of loci per batch

    def __post_init__(self) -> None:
        self.lx, self.ly = task_sizes(self.task, self.n_variants, self.prop_x, self.prop_y)
        self.table, self.scratch = None, Scratch()
        if self.task in TARGET_TASKS:
            if self.frequency is None:
                raise ValueError(f"the {self.task} task needs allele frequencies")
            self.table = weight_table(self.frequency, self.frequency_scaler)
        self.all_loci = torch.arange(self.n_variants, dtype=DTYPES["x_index"])

    def __call__(
        self,
        geno: np.ndarray,
        sample_index: np.ndarray,
        rng: np.random.Generator,
        *,
        partner: np.ndarray | None = None,
        partner_index: np.ndarray | None = None,
        phenotypes: np.ndarray | None = None,
        tokens_out: torch.Tensor | None = None,
        rows: np.ndarray | None = None,
    ) -> dict[str, torch.Tensor]:
        """The batch for genotypes `geno` (B, V, P) of store samples `sample_index` (B,);
        `tokens_out`: where to write "x_alleles" (a new tensor when None); `rows`:
        the genotypes are geno[rows] (default: all of geno), read there by the
        kernels rather than copied out first (a batch of a shuffle buffer)."""
        if self.task == "contrastive":
            if partner is None or partner_index is None:
                raise ValueError("the contrastive task needs a partner genotype per sample")
            sample_index = np.stack([sample_index, partner_index], axis=1)
        rows = np.arange(len(geno)) if rows is None else np.asarray(rows, dtype=np.int64)
        x_index, loci = self.inputs(rng, len(rows))
        inputs = [geno]
        if loci is not None or partner is not None:  # subsets and pairs are copies anyway:
            # the batch's rows at its loci, not whole rows copied first
            inputs = [geno[rows] if loci is None else geno[rows[:, None], loci]]
            if partner is not None:  # one row per row of the batch already
                inputs.append(partner if loci is None else partner[:, loci])
            rows = np.arange(len(rows))
        x_alleles = self.empty_tokens(len(rows), geno.shape[2], tokens_out)
        batch = {"sample_index": as_tensor(sample_index, DTYPES["sample_index"]),
                 "x_index": x_index, "x_alleles": x_alleles}
        if self.task in TARGET_TASKS:
            batch.update(self.targets(rng, inputs, rows, x_index, x_alleles))
        else:
            tokens(*inputs, out=x_alleles, rows=rows)
        if self.task == "phenotype":
            batch.update(phenotype_fields(phenotypes))
        return batch

    def tokens_shape(self, n_rows: int, ploidy: int) -> tuple[int, ...]:
        """The shape of the tokens ("x_alleles", int8) of a batch of `n_rows`:
        (B, Lx, P), or (B, 2, Lx, P) with the contrastive task's twins."""
        twins = (2,) if self.task == "contrastive" else ()
        return (n_rows, *twins, self.lx, ploidy)

    def empty_tokens(self, n_rows: int, ploidy: int,
                     out: torch.Tensor | None = None) -> torch.Tensor:
        """`out` (checked to have `tokens_shape`), or a new int8 tensor of that shape."""
        shape = self.tokens_shape(n_rows, ploidy)
        if out is None:
            return torch.empty(shape, dtype=torch.int8)
        if tuple(out.shape) != shape:
            raise ValueError(f"tokens_out has shape {tuple(out.shape)}, expected {shape}")
        return out

    def inputs(self, rng, n_rows: int) -> tuple[torch.Tensor, np.ndarray | None]:
        """(x_index (n_rows, Lx), the batch's input loci: None for all of them)."""
        if self.lx == self.n_variants:  # all loci in order: one row, expanded (stride 0)
            return self.all_loci.expand(n_rows, -1), None
        if self.window:  # one run of loci for the batch: one row too
            # centred on a uniform locus, then moved inside the panel: the first and
            # last loci are inputs half as often as the others, not 1 / Lx as often
            centre = int(rng.integers(0, self.n_variants))
            start = min(max(0, centre - self.lx // 2), self.n_variants - self.lx)
            run = self.all_loci[start : start + self.lx]
            return run.expand(n_rows, -1), np.arange(start, start + self.lx)
        keys = rng.random(self.n_variants, dtype=np.float32)  # one uniform draw for the batch
        picked = np.sort(np.argpartition(keys, self.lx - 1)[: self.lx])
        return as_tensor(picked, DTYPES["x_index"]).expand(n_rows, -1), picked

    def targets(self, rng, inputs: list[np.ndarray], rows: np.ndarray, x_index: torch.Tensor,
                x_alleles: torch.Tensor) -> dict:
        """Draw targets among the inputs (at `rows`), write the tokens into `x_alleles`
        with the targets hidden, and label the targets."""
        index = None if self.lx == self.n_variants else x_index.numpy()
        partner = inputs[1] if len(inputs) > 1 else None
        y_pos, y_mask = draw_targets(inputs[0], self.table, self.ly, rng, index, partner,
                                     self.scratch, rows)
        y_index = y_pos if index is None else np.take_along_axis(index, y_pos, axis=1)
        y_index[~y_mask] = 0
        n_rows, ploidy = len(rows), inputs[0].shape[2]
        calls = [np.ascontiguousarray(g).reshape(len(g), -1) for g in inputs]  # flat rows
        labels = np.zeros((*y_pos.shape, self.n_alleles) if self.task == "masked"
                          else y_pos.shape, dtype=np.int8)
        hidden_tokens(calls[0], calls[-1], rows, ploidy, y_pos, y_mask, self.n_alleles,
                      x_alleles.numpy().reshape(n_rows, len(inputs), -1), labels)
        label = "y_counts" if self.task == "masked" else "y_shared"
        out = {
            "y_index": as_tensor(y_index, DTYPES["y_index"]),
            "y_mask": torch.from_numpy(y_mask),
            label: torch.from_numpy(labels),
        }
        if self.task == "contrastive":  # each twin's own alleles there, for reconstruction
            twins = np.stack([g[rows[:, None], y_pos] for g in inputs], axis=1)  # (B,2,k,P)
            counts = (twins[..., None] == np.arange(self.n_alleles)).sum(-2, dtype=np.int8)
            counts[~np.broadcast_to(y_mask[:, None], counts.shape[:3])] = 0
            out["y_counts"] = torch.from_numpy(counts)
        return out


def tokens(*genos: np.ndarray, out: torch.Tensor, rows: np.ndarray | None = None) -> None:
    """Write the int8 allele tokens = call_genotype + 1 of one genotype array
    (B, L, P), or of several stacked on dim 1 (B, n, L, P), into `out`; of their
    `rows` when given (one compiled pass, no copy of the rows first)."""
    n_rows = len(out)
    array = out.numpy()
    parts = [array] if len(genos) == 1 else [array[:, i] for i in range(len(genos))]
    for part, geno in zip(parts, genos, strict=True):
        if rows is None:
            np.add(geno, np.int8(1), out=part)
        else:  # one genotype array: `out` is `part`, contiguous
            plus_one(geno.reshape(len(geno), -1), rows, part.reshape(n_rows, -1))


def as_tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A copy of `array` as a new tensor of `dtype`."""
    array = np.asarray(array)
    out = torch.empty(array.shape, dtype=dtype)
    np.copyto(out.numpy(), array, casting="unsafe")
    return out


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

