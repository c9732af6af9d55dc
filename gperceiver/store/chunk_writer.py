"""Rows that arrive in order (one per sample, from the in-order loader), written to
output arrays a whole sample chunk at a time: each chunk is written once, whole,
and memory holds at most a chunk and a batch of rows, plus one slab being written
(a chunk of a million markers' imputed calls is 512 MB: it is not copied whole)."""

from __future__ import annotations

from typing import Any

import numpy as np

SLAB_BYTES = 32 << 20  # at most this much of the pending rows is copied out per write


class ChunkWriter:
    """Writes rows 0, 1, 2, ... of every target; `targets` maps a row field to (array,
    sample axis) with the array numpy or zarr. `chunk`: samples per write."""

    def __init__(self, targets: dict[str, tuple[Any, int]], chunk: int):
        self.targets, self.chunk = targets, chunk
        self.start = 0  # the first row not yet written
        self.pending: dict[str, list[np.ndarray]] = {name: [] for name in targets}
        self.n_pending = 0

    def put(self, index: np.ndarray, rows: dict[str, np.ndarray]) -> None:
        """Rows `index` (the next ones, in order) of every field."""
        end = self.start + self.n_pending
        if not np.array_equal(index, np.arange(end, end + len(index))):
            raise RuntimeError("samples did not arrive in order")
        for name in self.targets:
            self.pending[name].append(rows[name])
        self.n_pending += len(index)
        if self.start + self.n_pending >= (self.start // self.chunk + 1) * self.chunk:
            self.flush(whole_chunks=True)

    def flush(self, whole_chunks: bool = False) -> None:
        """Write what is pending: up to the last whole chunk, or everything."""
        n = self.n_pending
        if whole_chunks:
            n = (self.start + n) // self.chunk * self.chunk - self.start
        if n <= 0:
            return
        for name, (array, axis) in self.targets.items():
            pieces = self.pending[name]
            for part, where in _slabs(pieces, n, axis, array.ndim):
                where[axis] = slice(self.start, self.start + n)
                array[tuple(where)] = np.moveaxis(part, 0, axis)
            self.pending[name] = _rows(pieces, n, sum(len(p) for p in pieces))
        self.start += n
        self.n_pending -= n


def _rows(pieces: list[np.ndarray], lo: int, hi: int) -> list[np.ndarray]:
    """Rows lo..hi-1 of the pieces stacked, as views of them."""
    out, start = [], 0
    for piece in pieces:
        a, b = max(lo - start, 0), min(hi - start, len(piece))
        if a < b:
            out.append(piece[a:b])
        start += len(piece)
    return out


def _slabs(pieces: list[np.ndarray], n: int, axis: int, ndim: int):
    """(rows 0..n-1 of the pieces at a slab of their second axis, where that slab
    goes in the target with the sample axis `axis`): SLAB_BYTES at a time."""
    rows = _rows(pieces, 0, n)
    row = rows[0][0]
    if row.ndim == 0:  # one value a sample: one slab
        yield np.concatenate(rows), [slice(None)] * ndim
        return
    width = max(1, SLAB_BYTES // max(1, n * row.nbytes // len(row)))
    at = 0 if axis > 0 else 1  # the target axis of the rows' second axis
    for lo in range(0, len(row), width):
        where = [slice(None)] * ndim
        where[at] = slice(lo, lo + width)
        yield np.concatenate([r[:, lo:lo + width] for r in rows]), where
