"""The network's architecture: every setting that shapes its weights or its masks.

A `ModelConfig` is all `GPerceiver` needs besides the store's variant table, and
what a checkpoint stores to rebuild the network. Training settings (learning rate,
dropout, epochs, ...) live in `gperceiver.train.params.Params`, which holds one
of these. A params file stays flat: its architecture keys fill the config.
Each field carries its help text and allowed range (`setting`), checked by
whoever reads a file or flags.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any


def setting(default: Any, help: str, *, low: float | None = None, high: float | None = None,
            choices: tuple | None = None, low_open: bool = False,
            high_open: bool = False) -> Any:
    """A dataclass field with its help text and allowed range or choices."""
    meta = {"help": help, "low": low, "high": high, "choices": choices, "low_open": low_open,
            "high_open": high_open}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of a GPerceiver (a pretrained model's is taken whole)."""

    # -- data (taken from the store when null)
    nalleles: int | None = setting(
        None, "allele tokens per copy including 0 = missing (store alleles + 1); "
        "null: from the store", low=2)
    ploidy: int | None = setting(None, "copies per genotype; null: from the store", low=1)
    # -- embeddings
    allele_embed_dim: int = setting(32, "allele embedding width (summed over copies)", low=1)
    locus_allele_embed: bool = setting(
        True, "per-locus allele embeddings at the input (which allele sits where) and "
        "per-locus allele read-outs in the masked decoder")
    position_embed_kind: str = setting(
        "learned", "'learned' (one vector per locus) or 'fourier' (of the within-contig "
        "position, plus a contig embedding)", choices=("learned", "fourier"))
    position_embed_dim: int = setting(32, "position embedding width (even for fourier)",
                                      low=2)
    position_embed_combine: str = setting(
        "concat", "'concat' or 'add' allele and position embeddings (add: equal widths)",
        choices=("concat", "add"))
    # -- encoder
    num_latents: int = setting(64, "latent array length", low=1)
    local_latents: bool = setting(
        True, "latent i reads only the i-th contiguous run of loci and decoders read the "
        "latents around their locus (self-attention stays global): learns LD fast")
    latent_dim: int = setting(128, "latent width", low=1)
    projection_dim: int = setting(64, "query/key/value width of the cross-attention", low=1)
    num_cross_attention_heads: int = setting(1, "heads of the cross-attention", low=1)
    num_self_attention_heads: int = setting(4, "heads of each self-attention layer", low=1)
    num_self_attention: int = setting(4, "self-attention layers per encoder iteration", low=0)
    num_encode_iters: int = setting(1, "cross-attention + self-attention iterations", low=1)
    share_weights: bool = setting(False, "iterations after the first share their weights")
    feedforward_dim: int = setting(256, "hidden width of every feed-forward layer", low=1)
    # -- decoders (Perceiver IO)
    output_dim: int = setting(64, "decoder query width", low=1)
    num_decode_iters: int = setting(1, "decoder cross-attention layers", low=1)
    # -- inputs (shapes the latents' masks)
    input_window: bool = setting(
        False, "pretraining with prop_x < 1: the input loci are one contiguous window "
        "(a random start per batch) instead of scattered; impute then slides windows of "
        "that length over the panel. A step costs the same however large the panel, and "
        "local latents split the window, not the panel")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, problem) for each setting that contradicts another."""
        if self.position_embed_kind == "fourier" and self.position_embed_dim % 2:
            yield "position_embed_dim", "must be even for fourier embeddings"
        if (self.position_embed_combine == "add"
                and self.position_embed_dim != self.allele_embed_dim):
            yield ("position_embed_dim",
                   "must equal allele_embed_dim when position_embed_combine is 'add'")
        if self.latent_dim % self.num_self_attention_heads:
            yield "num_self_attention_heads", "must divide latent_dim"
        if self.projection_dim % self.num_cross_attention_heads:
            yield "num_cross_attention_heads", "must divide projection_dim"


ARCHITECTURE = tuple(f.name for f in fields(ModelConfig))
