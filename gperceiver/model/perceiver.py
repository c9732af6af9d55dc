"""The Perceiver: a latent array reads the loci, thinks, and is read by decoders.

`GPerceiver` is built from a `ModelConfig` and the store's variant table (positions and
contigs), so batches carry only locus indices and allele tokens (see the batch
contract in gperceiver/data). The encoder iterates `num_encode_iters` times over
cross-attention (latents <- loci) and `num_self_attention` self-attention layers;
with `share_weights` every iteration after the first reuses the second's weights.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from gperceiver.model.attention import FeedForward, SelfLayer
from gperceiver.model.config import ModelConfig
from gperceiver.model.decoders import (
    ContrastiveDecoder,
    Decoder,
    MaskedDecoder,
    counts_key,
    genotype_classes,
)
from gperceiver.model.embeddings import InputEmbedding
from gperceiver.model.input_attention import input_attention

DECODE_ROWS = 16_384  # (sample, target) pairs a decoder reads at once
DECODERS = ("masked", "contrastive")  # the Perceiver IO decoders a model may build


def _in_runs(decode, y_index: torch.Tensor, mask: torch.Tensor | None,
             *latents: torch.Tensor) -> torch.Tensor:
    """`decode(*latents, targets, mask)` over runs of targets of DECODE_ROWS (sample,
    target) pairs: targets are decoded independently, so this is the same result; while
    training, each run's activations are recomputed in the backward pass instead of
    kept (checkpointing), so a step holds one run's, however many loci are targets."""
    step = max(1, DECODE_ROWS // max(1, y_index.shape[0]))
    if y_index.shape[1] <= step:
        return decode(*latents, y_index, mask)
    outs = []
    for lo in range(0, y_index.shape[1], step):
        part = (*latents, y_index[:, lo:lo + step],
                None if mask is None else mask[:, :, lo:lo + step])
        outs.append(checkpoint(decode, *part, use_reentrant=False)
                    if torch.is_grad_enabled() else decode(*part))
    return torch.cat(outs, 1)


class Segments:
    """Latent i reads the i-th of `num_latents` contiguous runs of loci (store order).

    For local latents: the encoder's latent i attends only to input loci of its
    segment (extra latents, e.g. finetuning queries, to all; see `input_attention`);
    a decoder query for locus l reads the latents of l's segment and its two
    neighbours. Self-attention among the latents stays global, so information still
    flows genome-wide.
    `windowed` (input_window pretraining): an input covering only part of the panel
    is read by the latents of the runs it spans alone (`span`), so a step costs the
    same however large the panel, and every latent keeps its own loci.
    """

    def __init__(self, n_latents: int, n_variants: int, windowed: bool = False):
        self.n_latents, self.n_variants, self.windowed = n_latents, n_variants, windowed

    def of(self, index: torch.Tensor) -> torch.Tensor:
        return index * self.n_latents // self.n_variants

    def span(self, x_index: torch.Tensor) -> tuple[int, int]:
        """(first, stop): the latents used for inputs at `x_index` (every one unless
        `windowed`)."""
        if not self.windowed:
            return 0, self.n_latents
        return int(self.of(x_index.min())), int(self.of(x_index.max())) + 1

    def decoder_mask(self, y_index: torch.Tensor, n_keys: int,
                     x_index: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, Ly, n_keys) bool: the latents a query for each target locus reads,
        of those used for inputs at `x_index` (None: every latent)."""
        first = 0 if x_index is None else self.span(x_index)[0]
        seg = self.of(y_index).unsqueeze(-1) - first  # (B, Ly, 1)
        cols = torch.arange(n_keys, device=y_index.device).view(1, 1, -1)
        # two bool comparisons: |seg - cols| <= 1 would make (B, Ly, n_keys) int64 twice
        return ((cols >= seg - 1) & (cols <= seg + 1)).unsqueeze(1)


class InputCross(nn.Module):
    """Latents cross-attend to the input loci, then a feed-forward layer.

    Keys and values are a linear projection of the raw input embedding (no input
    LayerNorm), so `input_attention` computes from the embedding tables alone.
    """

    def __init__(self, p: ModelConfig, input_dim: int, dropout: float):
        super().__init__()
        self.heads = p.num_cross_attention_heads
        self.norm = nn.LayerNorm(p.latent_dim)
        self.to_q = nn.Linear(p.latent_dim, p.projection_dim, bias=False)
        self.to_kv = nn.Linear(input_dim, 2 * p.projection_dim)
        self.out = nn.Linear(p.projection_dim, p.latent_dim)
        self.dropout = nn.Dropout(dropout)
        self.ff = FeedForward(p.latent_dim, p.feedforward_dim, dropout)
        self.local: Segments | None = None  # set by GPerceiver when latents are local

    def forward(self, latents: torch.Tensor, embed: InputEmbedding, x_alleles: torch.Tensor,
                x_index: torch.Tensor) -> torch.Tensor:
        q = self.to_q(self.norm(latents))
        att = input_attention(q, self.to_kv, embed, x_alleles, x_index, self.heads, self.local)
        return self.ff(latents + self.dropout(self.out(att)))


class Iteration(nn.Module):
    """One encoder pass: cross-attend to the inputs, then self-attention layers."""

    def __init__(self, p: ModelConfig, input_dim: int, dropout: float):
        super().__init__()
        self.cross = InputCross(p, input_dim, dropout)
        self.selfs = nn.ModuleList(
            SelfLayer(p.latent_dim, p.num_self_attention_heads, p.feedforward_dim, dropout)
            for _ in range(p.num_self_attention)
        )

    def forward(self, latents: torch.Tensor, embed: InputEmbedding, x_alleles: torch.Tensor,
                x_index: torch.Tensor) -> torch.Tensor:
        latents = self.cross(latents, embed, x_alleles, x_index)
        for layer in self.selfs:
            latents = layer(latents)
        return latents


def per_locus_floats(config: ModelConfig, decoders: Collection[str]) -> int:
    """Weights per locus in the tables `GPerceiver.per_locus_tables` returns, for a
    model with `decoders` (what a panel's size multiplies; the rest is fixed)."""
    if config.nalleles is None:
        raise ValueError("config.nalleles must be resolved from the store")
    floats = config.position_embed_dim if config.position_embed_kind == "learned" else 0
    if config.locus_allele_embed:
        floats += config.nalleles * config.allele_embed_dim
        floats += len(set(decoders) & set(DECODERS)) * (config.nalleles - 1) * config.output_dim
    return floats


class GPerceiver(nn.Module):
    """Perceiver encoder with masked and contrastive Perceiver IO decoders.

    `dropout` and `position_trainable` are training choices, not architecture: the
    same config with other values loads the same weights. `decoders` are those built
    (of DECODERS): a model that never decodes (finetuning) holds none, since each
    carries per-locus read-outs as large as the input tables.
    """

    def __init__(self, config: ModelConfig, variant_position: torch.Tensor,
                 variant_contig: torch.Tensor, n_contigs: int, *, dropout: float = 0.0,
                 position_trainable: bool = True, decoders: Collection[str] = DECODERS):
        super().__init__()
        if config.nalleles is None or config.ploidy is None:
            raise ValueError("config.nalleles and config.ploidy must be resolved from the store")
        p = self.config = config
        self.ploidy, self.n_alleles = p.ploidy, p.nalleles - 1
        self.n_variants = len(variant_position)
        self.embed = InputEmbedding(
            n_tokens=p.nalleles, allele_dim=p.allele_embed_dim,
            position_kind=p.position_embed_kind, position_dim=p.position_embed_dim,
            position_trainable=position_trainable, combine=p.position_embed_combine,
            variant_position=torch.as_tensor(variant_position, dtype=torch.float64),
            variant_contig=torch.as_tensor(variant_contig, dtype=torch.long),
            n_contigs=n_contigs, locus_alleles=p.locus_allele_embed,
        )
        self.latents = nn.Parameter(torch.randn(p.num_latents, p.latent_dim) * 0.02)
        n_distinct = min(p.num_encode_iters, 2) if p.share_weights else p.num_encode_iters
        self.iterations = nn.ModuleList(Iteration(p, self.embed.dim, dropout)
                                        for _ in range(n_distinct))
        self.segments = None
        if p.local_latents:
            self.segments = Segments(p.num_latents, self.n_variants, p.input_window)
        for iteration in self.iterations:
            iteration.cross.local = self.segments
        self.norm = nn.LayerNorm(p.latent_dim)

        self.register_buffer("classes", genotype_classes(self.n_alleles, self.ploidy))
        self.register_buffer("class_keys", counts_key(self.classes, self.ploidy))

        def decoder() -> Decoder:
            return Decoder(self.embed.position, p.position_embed_dim, p.latent_dim,
                           p.output_dim, p.projection_dim, p.num_cross_attention_heads,
                           p.feedforward_dim, p.num_decode_iters, dropout)

        readouts = self.n_variants if p.locus_allele_embed else None
        self.masked = (MaskedDecoder(decoder(), p.output_dim, self.classes, readouts)
                       if "masked" in decoders else None)
        self.contrastive = (
            ContrastiveDecoder(decoder(), p.output_dim, self.ploidy, p.feedforward_dim,
                               self.n_alleles, readouts)
            if "contrastive" in decoders else None)

    def per_locus_tables(self) -> list[nn.Embedding]:
        """The tables with rows per locus: learned positions, per-locus alleles and the
        decoders' read-outs (all others are as small at any panel size)."""
        locus = self.embed.locus_alleles
        tables = [getattr(self.embed.position, "table", None),  # fourier: none
                  None if locus is None else locus.table]
        tables += [d.readout for d in (self.masked, self.contrastive) if d is not None]
        return [t for t in tables if isinstance(t, nn.Embedding)]

    def sparse_tables(self, sparse: bool = True) -> None:
        """Read the per-locus tables so that their gradients are sparse: a step that
        reads a window of loci then updates those rows alone (an optimiser that takes
        sparse gradients, e.g. `train.optimiser.LazyAdamW`, is needed)."""
        for table in self.per_locus_tables():
            table.sparse = sparse

    def encoder_weights(self) -> dict[str, torch.Tensor]:
        """The state dict without the decoders: what finetuning takes from a model."""
        return {k: v for k, v in self.state_dict().items()
                if k.split(".", 1)[0] not in DECODERS}

    def load_weights(self, state: Mapping[str, torch.Tensor], assign: bool = False,
                     fresh_decoders: bool = False) -> None:
        """Load a GPerceiver's weights; every weight of this model must fit, except a
        decoder's that `state` lacks when `fresh_decoders` (it keeps its fresh weights:
        a run starting another task from a pretrained model). A decoder this model
        does not build is skipped. Raises RuntimeError as `load_state_dict` does."""
        skipped = [name for name in DECODERS if getattr(self, name) is None]
        state = {k: v for k, v in state.items() if k.split(".", 1)[0] not in skipped}
        missing, unexpected = self.load_state_dict(state, strict=False, assign=assign)
        if fresh_decoders:
            missing = [k for k in missing if k.split(".", 1)[0] not in DECODERS]
        if missing or unexpected:
            problems = ([f"Missing key(s) in state_dict: {', '.join(missing)}."] if missing
                        else []) + ([f"Unexpected key(s) in state_dict: "
                                     f"{', '.join(unexpected)}."] if unexpected else [])
            raise RuntimeError("Error(s) in loading state_dict:\n\t" + "\n\t".join(problems))

    # -- encoder
    def encode(self, x_alleles: torch.Tensor, x_index: torch.Tensor,
               extra: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, P) tokens at (B, L) loci -> latents (B, N, D).

        `extra` (E, D): trainable queries that join the latents (finetuning heads);
        the result is then (B, N + E, D) with them last. Tokens and loci may come
        compact (int8, int32: the loader's batch contract); they are widened here,
        on the model's device.
        """
        x_alleles, x_index = x_alleles.long(), x_index.long()
        latents = self.latents
        if self.segments is not None:  # a window's latents alone (input_window)
            first, stop = self.segments.span(x_index)
            latents = latents[first:stop]
        if extra is not None:
            latents = torch.cat([latents, extra.to(latents.dtype)], 0)
        latents = latents.unsqueeze(0)  # one for the batch until the inputs are read
        for i in range(self.config.num_encode_iters):
            iteration = self.iterations[min(i, len(self.iterations) - 1)]
            latents = iteration(latents, self.embed, x_alleles, x_index)
        return self.norm(latents)

    # -- masked task
    def masked_logits(self, x_alleles: torch.Tensor, x_index: torch.Tensor,
                      y_index: torch.Tensor) -> torch.Tensor:
        """Logits (B, Ly, K) over `classes` at the target loci."""
        return self.decode_masked(self.encode(x_alleles, x_index), y_index, x_index)

    def decode_masked(self, latents: torch.Tensor, y_index: torch.Tensor,
                      x_index: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, Ly, K) over `classes` at loci `y_index` from latents encoded
        from inputs at `x_index` (None: every locus)."""
        if self.masked is None:
            raise RuntimeError("this model has no masked decoder")
        y_index = y_index.long()
        mask = self._decoder_mask(latents, y_index, x_index)
        masked = self.masked
        return _in_runs(lambda lat, idx, m: masked(lat, idx, self.classes, m),
                        y_index, mask, latents)

    def _decoder_mask(self, latents: torch.Tensor, y_index: torch.Tensor,
                      x_index: torch.Tensor | None):
        if self.segments is None:
            return None
        x_index = None if x_index is None else x_index.long()
        return self.segments.decoder_mask(y_index, latents.shape[1], x_index)

    def class_of(self, counts: torch.Tensor) -> torch.Tensor:
        """(..., A) allele counts -> (...) class index; -1 where no class fits (e.g. 0s)."""
        key = counts_key(counts.clamp(0, self.ploidy), self.ploidy)
        pos = torch.searchsorted(self.class_keys, key).clamp(max=len(self.class_keys) - 1)
        valid = (self.class_keys[pos] == key) & ((counts >= 0) & (counts <= self.ploidy)).all(-1)
        return torch.where(valid, pos, torch.full_like(pos, -1))

    # -- contrastive task
    def shared_logits(self, x_alleles: torch.Tensor, x_index: torch.Tensor,
                      y_index: torch.Tensor) -> torch.Tensor:
        """Twins (B, 2, L, P) -> logits (B, Ly, P + 1) over the number of shared alleles."""
        return self.twin_logits(x_alleles, x_index, y_index)[0]

    def twin_logits(self, x_alleles: torch.Tensor, x_index: torch.Tensor,
                    y_index: torch.Tensor, alleles: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Twins (B, 2, L, P) -> (shared-allele logits (B, Ly, P + 1), and with `alleles`
        each twin's masked logits (B, 2, Ly, K) at the same targets, else None)."""
        if self.contrastive is None:
            raise RuntimeError("this model has no contrastive decoder")
        b, y_index = x_alleles.shape[0], y_index.long()
        flat = self.encode(x_alleles.flatten(0, 1), x_index.repeat_interleave(2, 0))
        latents = flat.view(b, 2, *flat.shape[1:])
        mask = self._decoder_mask(latents[:, 0], y_index, x_index)
        shared = _in_runs(self.contrastive, y_index, mask, latents[:, 0], latents[:, 1])
        if not alleles:
            return shared, None
        masked = self.decode_masked(flat, y_index.repeat_interleave(2, 0),
                                    x_index.repeat_interleave(2, 0))
        return shared, masked.view(b, 2, *masked.shape[1:])
