"""Standardised dosages of training lines, held as the int8 allele counts they come from.

The marker path (`gperceiver.linear`) multiplies the training lines' standardised
dosages many times over (kernels, effects, out-of-fold fits). As float32 they
take 4 bytes per line and column (0.8 GB for 2,000 lines x 100,000 markers, and
as much again for each inner fold's copy); held as int8 counts, a quarter of
that, and every product turns one slab of columns at a time (SLAB_BYTES) into
float32. When int8 counts would pass the bytes allowed them (a share of the
memory budget), they are packed: 2 bits a count up to ploidy 2, 4 bits up to
ploidy 14 (a million markers of 2,000 diploid lines: 0.5 GB instead of 2 GB).
The values are exactly `centred_dosages(..., standardise=True)`, which GBLUP's
relationship matrix (`gperceiver.baseline`) also reads its slabs through.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import dask
import numpy as np
import xarray as xr

from gperceiver.errors import Note, UsageError
from gperceiver.store import schema

SLAB_BYTES = 64 << 20  # float64 working memory per slab of columns, and genotypes per read
MAX_BYTES = 2 << 30  # the training lines' counts are held in memory: by default at most this


def variant_steps(ds: xr.Dataset, n_samples: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Runs of variants whose genotypes of `n_samples` lines, widened, fit SLAB_BYTES
    (each but the last a multiple of `multiple` variants)."""
    n_variants = int(ds.sizes[schema.VARIANTS])
    per_variant = max(1, n_samples * int(ds.sizes[schema.PLOIDY]) * 4)
    step = max(multiple, SLAB_BYTES // per_variant // multiple * multiple)
    return [(lo, min(lo + step, n_variants)) for lo in range(0, n_variants, step)]


def centred_dosages(gt: np.ndarray, freq: np.ndarray, standardise: bool = False) -> np.ndarray:
    """Z (samples, variants, alleles - 1) float32 of a (variants, samples, ploidy) slab.

    Each non-reference allele's count on a genotype's copies minus copies x its
    frequency; a call with any missing copy is 0. `standardise` divides by
    sqrt(ploidy p (1 - p)) (0 for a monomorphic allele).
    """
    ploidy = gt.shape[2]
    missing = (gt == schema.MISSING).any(axis=2)
    copies = (gt != schema.FILL).sum(axis=2, dtype=np.int8)
    p = np.nan_to_num(np.asarray(freq, np.float64))[:, 1:]
    inv = np.ones_like(p)
    if standardise:
        sd = np.sqrt(ploidy * p * (1.0 - p))
        inv = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 1e-6)
    z = np.empty((gt.shape[1], gt.shape[0], p.shape[1]), np.float32)
    for a in range(p.shape[1]):
        count = (gt == a + 1).sum(axis=2, dtype=np.int8)
        column = (count - copies * p[:, a:a + 1]) * inv[:, a:a + 1]
        column[missing] = 0.0
        z[:, :, a] = column.T
    return z


class Packed:
    """int8 counts (rows, columns) from -1 to 2**bits - 2, held `bits` bits each
    (8 // bits columns a byte); `packed[lines, which]` gives them back as int8."""

    def __init__(self, n_rows: int, n_columns: int, bits: int):
        self.bits, self.per_byte = bits, 8 // bits
        self.shape = (n_rows, n_columns)
        self.bytes = np.zeros((n_rows, -(-n_columns // self.per_byte)), np.uint8)
        shifts = np.arange(self.per_byte) * bits
        self.lut = (((np.arange(256)[:, None] >> shifts) & ((1 << bits) - 1)) - 1).astype(np.int8)

    @staticmethod
    def bits_for(largest: int) -> int | None:
        """The fewest bits (2 or 4) that hold counts -1..largest; None: 8 do."""
        return next((bits for bits in (2, 4) if largest <= (1 << bits) - 2), None)

    def __len__(self) -> int:
        return self.shape[0]

    def put(self, lo: int, counts: np.ndarray) -> None:
        """Columns lo.. (lo a multiple of per_byte) from int8 counts (rows, width)."""
        width = counts.shape[1]
        codes = np.zeros((len(counts), -(-width // self.per_byte) * self.per_byte), np.uint8)
        codes[:, :width] = counts + 1
        codes = codes.reshape(len(counts), -1, self.per_byte)
        shifts = np.arange(self.per_byte, dtype=np.uint8) * np.uint8(self.bits)
        first = lo // self.per_byte
        self.bytes[:, first:first + codes.shape[1]] = np.bitwise_or.reduce(codes << shifts, 2)

    def __getitem__(self, key: tuple) -> np.ndarray:
        lines, which = key
        if isinstance(which, slice):
            lo, hi, _ = which.indices(self.shape[1])
            first = lo // self.per_byte
            out = self.lut[self.bytes[lines, first:-(-hi // self.per_byte)]]
            start = lo - first * self.per_byte
            return out.reshape(*out.shape[:-2], -1)[..., start:start + hi - lo]
        which = np.asarray(which)
        out = self.lut[self.bytes[lines][:, which // self.per_byte]]  # (rows, n, per_byte)
        return np.take_along_axis(out, (which % self.per_byte)[None, :, None], 2)[..., 0]


def chunk_blocks(ds: xr.Dataset, n_rows: int) -> list[tuple[int, int, int, int]]:
    """(row_lo, row_hi, variant_lo, variant_hi) blocks covering `n_rows` lines x every
    variant, row run by row run: whole sample chunks (as many as one variant chunk of
    them holds widened within SLAB_BYTES) over whole variant chunks, so every chunk of
    the store is decompressed once (slabs across all lines decompress each chunk once
    per slab that cuts it)."""
    v_chunk, s_chunk = ds["call_genotype"].data.chunksize[:2]
    per_row = v_chunk * int(ds.sizes[schema.PLOIDY]) * 4
    step = max(s_chunk, SLAB_BYTES // per_row // s_chunk * s_chunk)
    return [(lo, min(lo + step, n_rows), v_lo, v_hi) for lo in range(0, n_rows, step)
            for v_lo, v_hi in variant_steps(ds, min(step, n_rows - lo), v_chunk)]


def read_slab(ds: xr.Dataset, lo: int, hi: int, rows: np.ndarray | slice | None
              ) -> np.ndarray:
    """Genotypes (hi - lo, samples, ploidy) of variants lo..hi-1, of `rows` only if given."""
    gt = ds["call_genotype"].data[lo:hi]
    if rows is not None:
        gt = gt[:, rows]
    with dask.config.set(scheduler="threads"):
        return np.asarray(dask.compute(gt)[0])  # a dask array, or already numpy


class Dosages:
    """Z (rows, columns), columns (variant, allele - 1) flattened:
    Z[:, j] = (count_j - copies x p_j) x inv_j, and 0 for a missing call.

    Held as int8 `counts` (-1: missing; or `Packed`) and, where ploidy varies, int8
    `copies`;
    or, from `standardised`, as the float32 values themselves (simulations, tests).
    A selection of lines (`rows`) shares those arrays and keeps its `index` into
    them: the inner folds of the marker path copy no genotypes, only each slab.
    """

    def __init__(self, counts: np.ndarray, copies: np.ndarray | None, ploidy: int,
                 p: np.ndarray | None, inv: np.ndarray | None,
                 index: np.ndarray | None = None, tick: Callable[[int], Any] | None = None):
        self.counts, self.copies, self.ploidy, self.p, self.inv = counts, copies, ploidy, p, inv
        self.index = index  # rows of `counts` these lines are, in order (None: every row)
        self.tick = tick  # told rows^2 x columns after each slab of a kernel (progress)

    @classmethod
    def standardised(cls, z: np.ndarray | Dosages) -> Dosages:
        """Dosages already standardised, as an array (rows, columns)."""
        if isinstance(z, Dosages):
            return z
        return cls(np.asarray(z, np.float32), None, 0, None, None)

    @classmethod
    def read(cls, ds: xr.Dataset, rows: np.ndarray, freq: np.ndarray,
             max_bytes: int | None = None) -> Dosages:
        """The lines `rows` of a store, centred by the allele frequencies `freq`; their
        counts take at most `max_bytes` (default MAX_BYTES), packed when int8 would
        take more."""
        max_bytes = MAX_BYTES if max_bytes is None else max_bytes
        n_variants, ploidy = int(ds.sizes[schema.VARIANTS]), int(ds.sizes[schema.PLOIDY])
        per_variant = freq.shape[1] - 1
        n_columns = n_variants * per_variant
        bits = Packed.bits_for(ploidy) if len(rows) * n_columns > max_bytes else None
        held = len(rows) * n_columns * (bits or 8) // 8
        if held > max_bytes:
            raise UsageError(
                f"the linear path holds the training lines' genotypes in memory: {len(rows)} "
                f"lines x {n_columns} columns take {held / 2**30:.1f} GiB"
                f"{' packed' if bits else ''}, over the {max_bytes / 2**30:.1f} GiB allowed "
                "them; raise --memory, set \"linear\": false in --params, or filter markers "
                "first")
        if bits is not None:
            warnings.warn(f"the marker path holds the training lines' genotypes packed in "
                          f"{bits} bits ({held / 1e6:,.0f} MB; int8 would pass the "
                          f"{max_bytes / 1e6:,.0f} MB allowed them)", Note, stacklevel=3)
        counts = (np.empty((len(rows), n_columns), np.int8) if bits is None
                  else Packed(len(rows), n_columns, bits))
        copies = None
        for lo, hi in variant_steps(ds, len(rows), 1 if bits is None else 8 // bits):
            gt = read_slab(ds, lo, hi, rows).transpose(1, 0, 2)  # (rows, variants, ploidy)
            missing = (gt == schema.MISSING).any(-1)
            block = np.empty((len(rows), hi - lo, per_variant), np.int8)
            for a in range(per_variant):
                block[..., a] = np.where(missing, -1, (gt == a + 1).sum(-1))
            if bits is None:
                counts[:, lo * per_variant:hi * per_variant] = block.reshape(len(rows), -1)
            else:
                counts.put(lo * per_variant, block.reshape(len(rows), -1))
            padded = gt == schema.FILL
            if padded.any() and copies is None:
                copies = np.full((len(rows), n_variants), ploidy, np.int8)
            if copies is not None:
                copies[:, lo:hi] = ploidy - padded.sum(-1)
        p = np.nan_to_num(np.asarray(freq, np.float64))[:, 1:].reshape(-1)
        sd = np.sqrt(ploidy * p * (1.0 - p))
        inv = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 1e-6)
        if copies is not None:
            copies = np.repeat(copies, per_variant, axis=1)
        return cls(counts, copies, ploidy, p, inv)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.counts.shape[1]

    def __len__(self) -> int:
        return len(self.counts) if self.index is None else len(self.index)

    def rows(self, which: np.ndarray) -> Dosages:
        """The lines `which` (indices or a boolean mask), sharing these arrays."""
        picked = np.arange(len(self))[which]
        index = picked if self.index is None else self.index[picked]
        return Dosages(self.counts, self.copies, self.ploidy, self.p, self.inv, index,
                       self.tick)

    def _lines(self, array: np.ndarray, which: np.ndarray | slice) -> np.ndarray:
        """array[these lines, which]: a view of the columns first, then the lines."""
        part = array[:, which]
        return part if self.index is None else part[self.index]

    def columns(self, which: np.ndarray | slice) -> np.ndarray:
        """Z[:, which] as float32."""
        counts = self._lines(self.counts, which)
        if self.p is None:
            return np.array(counts, np.float32)
        copies = self.ploidy if self.copies is None else self._lines(self.copies, which)
        z = ((counts - copies * self.p[which]) * self.inv[which]).astype(np.float32)
        z[counts < 0] = 0.0
        return z

    def to_array(self) -> np.ndarray:
        """All of Z as float32 (rows, columns)."""
        return self.columns(slice(None))

    def slabs(self):
        """(lo, hi, Z[:, lo:hi]) over the columns, a slab at a time."""
        width = max(1, SLAB_BYTES // (8 * max(1, len(self))))
        for lo in range(0, self.shape[1], width):
            hi = min(lo + width, self.shape[1])
            yield lo, hi, self.columns(slice(lo, hi))

    def gram(self, w: np.ndarray) -> np.ndarray:
        """Z diag(w) Z' (rows, rows), float64."""
        k = np.zeros((len(self), len(self)))
        for lo, hi, z in self.slabs():
            k += (z * w[lo:hi]) @ z.T
            if self.tick is not None:
                self.tick(len(self) ** 2 * (hi - lo))
        return k

    def t_dot(self, alpha: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Z[rows]' alpha (columns,) float32, over every line when `rows` is None."""
        alpha = np.asarray(alpha, np.float32)
        out = np.empty(self.shape[1], np.float32)
        for lo, hi, z in self.slabs():
            out[lo:hi] = (z if rows is None else z[rows]).T @ alpha
        return out

    def dot(self, effects: np.ndarray) -> np.ndarray:
        """Z effects' (rows, blocks) float64, for effects (blocks, columns)."""
        out = np.zeros((len(self), len(effects)))
        for lo, hi, z in self.slabs():
            out += z @ effects[:, lo:hi].T
        return out


def standardised_slab(ds: xr.Dataset, lo: int, hi: int, rows: np.ndarray | slice | None,
                      freq: np.ndarray) -> np.ndarray:
    """Z (samples, hi - lo, alleles - 1) float32 of variants lo..hi-1 (of `rows` if given)."""
    return centred_dosages(read_slab(ds, lo, hi, rows), freq[lo:hi], standardise=True)
