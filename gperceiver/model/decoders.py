"""Perceiver IO decoders for pretraining, and the genotype classes they predict.

Masked task: a query per target locus (its position embedding) reads the latents
and scores every genotype class, a multiset of 1..P alleles (phase-free; fewer
than P copies for padded, mixed-ploidy samples). A softmax over classes gives a
proper distribution over genotypes, so imputation takes its most probable class.

Contrastive task: the same queries read the latents of each twin; a symmetric
combination scores the number of alleles the two share at the locus (0..P).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from gperceiver.model.attention import CrossLayer

MAX_CLASSES = 20_000


def genotype_classes(n_alleles: int, ploidy: int) -> torch.Tensor:
    """(K, A) allele counts of every multiset of 1..ploidy alleles, sorted by key."""
    rows = []
    for size in range(1, ploidy + 1):
        for combo in itertools.combinations_with_replacement(range(n_alleles), size):
            rows.append(torch.bincount(torch.tensor(combo), minlength=n_alleles))
            if len(rows) > MAX_CLASSES:
                raise ValueError(
                    f"{n_alleles} alleles at ploidy {ploidy} make over {MAX_CLASSES} "
                    "genotype classes")
    classes = torch.stack(rows)
    return classes[torch.argsort(counts_key(classes, ploidy))]


def counts_key(counts: torch.Tensor, ploidy: int) -> torch.Tensor:
    """A unique integer per allele-count vector (base ploidy + 1)."""
    base = (ploidy + 1) ** torch.arange(counts.shape[-1], device=counts.device)
    return (counts.long() * base).sum(-1)


class Decoder(nn.Module):
    """Queries from target-locus embeddings cross-attend to the latents."""

    def __init__(self, position: nn.Module, position_dim: int, latent_dim: int,
                 output_dim: int, inner_dim: int, heads: int, hidden: int, iters: int,
                 dropout: float = 0.0):
        super().__init__()
        self.position = position
        self.query = nn.Linear(position_dim, output_dim)
        self.layers = nn.ModuleList(
            CrossLayer(output_dim, latent_dim, inner_dim, heads, hidden, dropout)
            for _ in range(iters)
        )
        self.register_load_state_dict_pre_hook(_renamed_layers)

    def forward(self, latents: torch.Tensor, index: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) latents, (B, L) loci -> (B, L, output_dim); `mask` (B, 1, L, N)."""
        q = self.query(self.position(index))
        for layer in self.layers:
            q = layer(q, latents, mask)
        return q


def _renamed_layers(module: nn.Module, state: dict, prefix: str, *args) -> None:
    """Checkpoints written before the decoder's layers were renamed call them 'blocks'."""
    old = prefix + "blocks."
    for key in [k for k in state if k.startswith(old)]:
        state[prefix + "layers." + key[len(old):]] = state.pop(key)


class MaskedDecoder(nn.Module):
    """Logits over genotype classes at target loci.

    With `n_variants`, a per-locus read-out adds, for each allele, the dot product
    of the decoded state with that locus' vector for the allele, times the allele's
    count in the class: the score of a genotype can then depend on the locus and
    the latent state jointly (a sum of locus-specific allele dosage effects), which
    a shared output layer can only approximate.
    """

    def __init__(self, decoder: Decoder, output_dim: int, classes: torch.Tensor,
                 n_variants: int | None = None):
        super().__init__()
        self.decoder = decoder
        self.norm = nn.LayerNorm(output_dim)
        self.logits = nn.Linear(output_dim, len(classes))
        self.n_alleles = classes.shape[1]
        self.readout = None
        if n_variants is not None:
            self.readout = nn.Embedding(n_variants * self.n_alleles, output_dim)
            nn.init.normal_(self.readout.weight, std=output_dim**-0.5)

    def forward(self, latents: torch.Tensor, index: torch.Tensor,
                classes: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(self.decoder(latents, index, mask))
        logits = self.logits(h)
        if self.readout is not None and classes is not None:
            rows = index.unsqueeze(-1) * self.n_alleles + torch.arange(
                self.n_alleles, device=index.device)
            dosage = torch.einsum("blo,blao->bla", h, self.readout(rows))  # (B, L, A)
            logits = logits + dosage @ classes.to(dosage.dtype).T
        return logits


class ContrastiveDecoder(nn.Module):
    """Logits over 0..P shared alleles between two genotypes, symmetric in the twins.

    With `n_variants`, per-locus allele read-outs (as in `MaskedDecoder`) give each
    twin an allele-dosage score at the locus, fed to the head with the states.
    """

    def __init__(self, decoder: Decoder, output_dim: int, ploidy: int, hidden: int,
                 n_alleles: int, n_variants: int | None = None):
        super().__init__()
        self.decoder = decoder
        self.n_alleles = n_alleles
        self.readout = None
        width = 2 * output_dim
        if n_variants is not None:
            self.readout = nn.Embedding(n_variants * n_alleles, output_dim)
            nn.init.normal_(self.readout.weight, std=output_dim**-0.5)
            width += 2 * n_alleles
        self.norm = nn.LayerNorm(output_dim)
        self.head = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(),
            nn.Linear(hidden, ploidy + 1),
        )

    def _features(self, latents: torch.Tensor, index: torch.Tensor, mask=None):
        h = self.norm(self.decoder(latents, index, mask))
        if self.readout is None:
            return h, None
        rows = index.unsqueeze(-1) * self.n_alleles + torch.arange(
            self.n_alleles, device=index.device)
        return h, torch.einsum("blo,blao->bla", h, self.readout(rows))

    def forward(self, latents_a: torch.Tensor, latents_b: torch.Tensor,
                index: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        (a, da), (b, db) = (self._features(latents_a, index, mask),
                            self._features(latents_b, index, mask))
        parts = [a + b, a * b]
        if da is not None:
            parts += [da + db, da * db]
        return self.head(torch.cat(parts, -1))
