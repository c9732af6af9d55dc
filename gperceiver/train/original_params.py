"""The original tool's params files, read into ours.

The original (darcyabjones/gperceiver) wrote and read JSON with the keys of its
`Params` class; its pretraining saved them, with the
panel's `nmarkers`, `chrom_pos` and `marker_pos`, as `MODEL/params.json`. Two of
its names mean something else here: its `latent_dim` counts the latents (our
`num_latents`) and its `output_dim` is their width (our `latent_dim`).
`MAPPING` says, key by key, what each becomes; README.md shows it as a table.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from gperceiver.choices import HEADS
from gperceiver.errors import InputFormatError, Note

# original key -> (our key or None, how its value maps, the note shown when it is used:
# text, or a function of the value giving text or None)
Rule = tuple[str | None, Callable[[Any], Any] | None, str | Callable[[Any], str | None] | None]


def _same(value: Any) -> Any:
    return value


def _allele_embed_kind(value: Any) -> bool:
    if str(value) not in ("1", "2", "3"):
        raise ValueError("must be '1', '2' or '3'")
    return str(value) != "1"  # '2' and '3' embed alleles per locus


def _choice(table: dict[Any, Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value not in table:
            raise ValueError(f"must be one of {', '.join(map(str, table))}")
        return table[value]

    return convert


SHARE_WEIGHTS = {True: True, False: False, "after_first": True, "after_first_xa": True,
                 "xa_only": True, "sa_only": True}

MAPPING: dict[str, Rule] = {
    "nalleles": ("nalleles", _same, None),
    "ploidy": ("ploidy", _same, None),
    "allele_embed_kind": ("locus_allele_embed", _allele_embed_kind,
                          lambda v: f"allele_embed_kind '{v}' maps to locus_allele_embed "
                          + ("false (one embedding per allele)" if str(v) == "1" else
                             "true (embeddings per allele and locus)")
                          if str(v) in ("1", "2", "3") else None),
    "allele_embed_dim": ("allele_embed_dim", _same, None),
    "allele_combiner": ("position_embed_combine", _choice({"add": "add", "concat": "concat"}),
                        None),
    "position_embed_kind": ("position_embed_kind",
                            _choice({"random": "learned", "fourier": "fourier"}), None),
    "position_embed_dim": ("position_embed_dim", _same, None),
    "position_embed_trainable": ("position_embed_trainable", _same, None),
    "share_weights": ("share_weights", _choice(SHARE_WEIGHTS),
                      lambda v: f"share_weights '{v}' maps to true: every iteration after the "
                      "first shares one set of weights here" if isinstance(v, str) else None),
    "projection_dim": ("projection_dim", _same, None),
    "feedforward_dim": ("feedforward_dim", _same, None),
    "latent_dim": ("num_latents", _same, None),
    "output_dim": ("latent_dim", _same, None),
    "num_self_attention_heads": ("num_self_attention_heads", _same, None),
    "num_self_attention": ("num_self_attention", _same, None),
    "num_encode_iters": ("num_encode_iters", _same, None),
    "num_decode_iters": ("num_decode_iters", _same, None),
    "contrastive": ("contrastive", _same, None),
    "contrastive_weight": ("contrastive_weight", _same, None),
    "block_strategy": ("head", _choice({head: head for head in HEADS}), None),
    "nblocks": (None, None, "nblocks is ignored: the blocks come from the phenotype file"),
    "nmarkers": (None, None, "nmarkers, chrom_pos and marker_pos are ignored: the markers "
                 "and their positions come from the genotype store"),
    "chrom_pos": (None, None, None),
    "marker_pos": (None, None, None),
    "allele_decoder": (None, None, "allele_decoder is used to read the markers TSV"),
}


def is_original(d: dict[str, Any], ours: frozenset[str]) -> bool:
    """Whether params `d` are written in the original's dialect: a key only the original
    has, or a value only it uses ('random' positions, a share_weights mode)."""
    if any(k in MAPPING and k not in ours for k in d):
        return True
    return d.get("position_embed_kind") == "random" or isinstance(d.get("share_weights"), str)


def from_original(d: dict[str, Any], where: str, ours: frozenset[str]) -> dict[str, Any]:
    """Our params dict for the original's `d`; a note (warning) for each key that maps to
    something else or is ignored; a key neither tool knows is refused."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key not in MAPPING:
            if key in ours:
                raise InputFormatError(
                    where, f"key '{key}': a gperceiver key in a params file of the original "
                    f"tool (keys such as {', '.join(sorted(set(d) & set(MAPPING) - ours))} are "
                    "its own); write the file in one dialect")
            raise InputFormatError(where, f"key '{key}': unknown parameter of the original "
                                   f"tool (known: {', '.join(MAPPING)})")
        target, convert, note = MAPPING[key]
        if callable(note):
            note = note(value)
        if note is not None:
            warnings.warn(f"{where}: {note}", Note, stacklevel=3)
        if target is None or value is None:
            continue
        try:
            out[target] = convert(value)
        except ValueError as e:
            raise InputFormatError(where, f"key '{key}': {e}, got {value!r}") from None
    return out


def original_decoder(d: dict[str, Any]) -> list[list[int]] | None:
    """The allele decoder an original params file carries, if any."""
    decoder = d.get("allele_decoder")
    return decoder if isinstance(decoder, list) else None
