"""The original tool's integer genotype codes and their decoder."""

from __future__ import annotations

import itertools

import numpy as np

from gperceiver.store.schema import VARIABLES


def gen_allele_decoder(ploidy: int = 2, nalleles: int = 3) -> list[list[int]]:
    """Every sorted combination with replacement of `ploidy` numbers from range(nalleles).

    Code k of the integer-coded marker table decodes to `decoder[k]`, one allele
    number per chromosome copy; allele 0 means missing. `(2, 3)` gives
    `[[0,0],[0,1],[0,2],[1,1],[1,2],[2,2]]`.
    """
    if ploidy < 1:
        raise ValueError(f"ploidy must be >= 1, got {ploidy}")
    if nalleles < 2:
        raise ValueError(f"nalleles must be >= 2 (allele 0 is 'missing'), got {nalleles}")
    return [list(c) for c in itertools.combinations_with_replacement(range(nalleles), ploidy)]


def decoder_table(decoder: list[list[int]]) -> np.ndarray:
    """The decoder as a lookup table of store calls (call_genotype's declared dtype):
    code -> (ploidy,) allele - 1."""
    return (np.asarray(decoder, dtype=np.int16) - 1).astype(VARIABLES["call_genotype"].dtype)
