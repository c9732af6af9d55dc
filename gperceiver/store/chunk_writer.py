"""Rows that arrive in order (one per sample, from the in-order loader), written to
output arrays a whole sample chunk at a time: each chunk is written once, whole,
and memory holds at most a chunk and a batch."""

from __future__ import annotations

from typing import Any

import numpy as np


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
            ready = np.concatenate(self.pending[name])
            where = [slice(None)] * array.ndim
            where[axis] = slice(self.start, self.start + n)
            array[tuple(where)] = np.moveaxis(ready[:n], 0, axis)
            self.pending[name] = [ready[n:]] if n < len(ready) else []
        self.start += n
        self.n_pending -= n
