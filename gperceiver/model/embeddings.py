"""Input embeddings: alleles summed over copies, plus a per-locus position embedding.

Allele tokens are `call_genotype + 1`: 0 = missing copy, 1..A = allele 0..A-1, and
-1 = a padded copy (mixed ploidy) that contributes nothing. Summing over copies
makes the embedding phase-free and valid for any ploidy.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class AlleleEmbedding(nn.Module):
    """One vector per allele token, summed over the ploidy copies of a locus."""

    def __init__(self, n_tokens: int, dim: int):
        super().__init__()
        self.table = nn.Embedding(n_tokens, dim)
        nn.init.normal_(self.table.weight, std=0.5)

    def forward(self, alleles: torch.Tensor) -> torch.Tensor:
        """(..., P) int tokens -> (..., dim); padded copies (-1) add nothing."""
        present = (alleles >= 0).unsqueeze(-1).to(self.table.weight.dtype)
        return (self.table(alleles.clamp(min=0)) * present).sum(-2)


class LearnedPosition(nn.Module):
    """One trainable (or fixed random) vector per locus of the store."""

    def __init__(self, n_variants: int, dim: int, trainable: bool):
        super().__init__()
        self.table = nn.Embedding(n_variants, dim)
        nn.init.normal_(self.table.weight, std=0.5)
        self.table.weight.requires_grad_(trainable)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.table(index)


class FourierPosition(nn.Module):
    """Sines and cosines of the within-contig position, plus a contig embedding.

    Positions are scaled to [0, 1] within each contig; frequencies run geometrically
    from one period per contig up to about one per locus of the longest contig.
    """

    def __init__(self, position: torch.Tensor, contig: torch.Tensor, n_contigs: int,
                 dim: int, trainable: bool):
        super().__init__()
        position = position.double()
        low = torch.full((n_contigs,), math.inf, dtype=torch.float64)
        high = torch.full((n_contigs,), -math.inf, dtype=torch.float64)
        low = low.scatter_reduce(0, contig, position, "amin")
        high = high.scatter_reduce(0, contig, position, "amax")
        span = (high - low).clamp(min=1e-12)[contig]
        self.register_buffer("scaled", ((position - low[contig]) / span).float())
        per_contig = torch.bincount(contig, minlength=n_contigs).max().item()
        bands = dim // 2
        max_freq = max(2.0, float(per_contig))
        freqs = math.pi * torch.logspace(0, math.log10(max_freq), bands)
        self.freqs = nn.Parameter(freqs, requires_grad=trainable)
        self.register_buffer("contig", contig.long())
        self.contig_table = nn.Embedding(n_contigs, dim)
        nn.init.normal_(self.contig_table.weight, std=0.5)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        angle = self.scaled[index].unsqueeze(-1) * self.freqs
        return torch.cat([angle.sin(), angle.cos()], -1) + self.contig_table(self.contig[index])


class LocusAlleleEmbedding(nn.Module):
    """One vector per (locus, allele token), summed over copies like `AlleleEmbedding`.

    Added to the shared allele embedding, it makes an input's value depend on which
    allele sits at which locus, so even evenly spread attention reads a sketch of
    the whole genotype rather than allele counts only.
    """

    def __init__(self, n_variants: int, n_tokens: int, dim: int, std: float):
        super().__init__()
        self.n_tokens = n_tokens
        self.table = nn.Embedding(n_variants * n_tokens, dim)
        nn.init.normal_(self.table.weight, std=std)

    def rows(self, alleles: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, L, P) row numbers into `table` (padded copies point at row 0)."""
        return index.unsqueeze(-1) * self.n_tokens + alleles.clamp(min=0)

    def forward(self, alleles: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        present = (alleles >= 0).unsqueeze(-1).to(self.table.weight.dtype)
        return (self.table(self.rows(alleles, index)) * present).sum(-2)


class InputEmbedding(nn.Module):
    """Allele embedding combined (added or concatenated) with the position embedding."""

    def __init__(self, *, n_tokens: int, allele_dim: int, position_kind: str,
                 position_dim: int, position_trainable: bool, combine: str,
                 variant_position: torch.Tensor, variant_contig: torch.Tensor, n_contigs: int,
                 locus_alleles: bool = False):
        super().__init__()
        self.alleles = AlleleEmbedding(n_tokens, allele_dim)
        self.locus_alleles = (
            LocusAlleleEmbedding(len(variant_position), n_tokens, allele_dim, std=0.5)
            if locus_alleles else None)
        if position_kind == "learned":
            self.position: nn.Module = LearnedPosition(
                len(variant_position), position_dim, position_trainable)
        elif position_kind == "fourier":
            self.position = FourierPosition(
                variant_position, variant_contig, n_contigs, position_dim, position_trainable)
        else:
            raise ValueError(f"unknown position embedding kind {position_kind!r}")
        self.combine = combine
        self.dim = allele_dim if combine == "add" else allele_dim + position_dim

    def forward(self, alleles: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, L, P) tokens at (B, L) loci -> (B, L, dim)."""
        a, p = self.alleles(alleles), self.position(index)
        if self.locus_alleles is not None:
            a = a + self.locus_alleles(alleles, index)
        return a + p if self.combine == "add" else torch.cat([a, p], -1)
