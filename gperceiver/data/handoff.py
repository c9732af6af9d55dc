"""Hand batches from DataLoader workers to the main process through shared-memory rings.

torch hands every tensor a worker returns over in a fresh shared-memory file,
with a socket hand-shake per file descriptor: per batch, the worker faults in
(and the kernel zeroes) new pages, and a hand-off thread must win the GIL. For a
loader whose batches are megabytes of tokens, that cost as much CPU as reading
them. Instead each worker makes one `Ring` of slots in shared memory when its
first batch is ready, sends it once (torch's usual way), and then writes every
batch into its next free slot: the message is the slot number and the fields'
layout. The main process (`Receiver`) copies the batch out of the slot, into
pinned memory when asked, and marks the slot free.

A worker never waits for long: it has at most prefetch_factor batches in flight
and the ring has more slots. It waits only while the slot it needs holds a batch
the main process has not reached yet, and the main process always reaches the
earliest batch, so it cannot deadlock. A batch larger than a slot travels the
old way, as one fresh shared buffer (`pack`).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch

HEADER = 64  # bytes before the first slot: one int32 state per slot (0 free, 1 full)
MAX_SLOTS = HEADER // 4
SLACK = 1.25  # a slot holds the first batch's bytes times this (later batches are no larger)
ALIGN = 64
POLL_S = 0.0002  # a worker's sleep between looks at a full slot

Layout = list[tuple[str, torch.dtype, tuple[int, ...], int, bool]]


def layout_of(batch: dict[str, torch.Tensor]) -> tuple[Layout, int]:
    """Each field's (name, dtype, shape, offset, expanded) in one buffer, and its size.

    A tensor expanded over dim 0 (stride 0, e.g. all loci's x_index) is laid out
    as its one row; every field starts on an ALIGN-byte boundary.
    """
    layout, offset = [], 0
    for name, tensor in batch.items():
        expanded = tensor.dim() > 0 and tensor.stride(0) == 0 and tensor.shape[0] > 1
        rows = (1, *tensor.shape[1:]) if expanded else tuple(tensor.shape)
        offset = -(-offset // ALIGN) * ALIGN
        layout.append((name, tensor.dtype, tuple(tensor.shape), offset, expanded))
        offset += math.prod(rows) * tensor.dtype.itemsize
    return layout, offset


def write(batch: dict[str, torch.Tensor], layout: Layout, out: torch.Tensor) -> None:
    """Copy the batch's fields into the uint8 buffer `out` as `layout` says."""
    for name, dtype, _, offset, expanded in layout:
        tensor = batch[name][:1] if expanded else batch[name]
        size = tensor.numel() * dtype.itemsize
        out[offset : offset + size].view(dtype).view(tensor.shape).copy_(tensor)


def read(buffer: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """The batch whose fields `write` put in `buffer`: views into it."""
    batch = {}
    for name, dtype, shape, offset, expanded in layout:
        rows = (1, *shape[1:]) if expanded else shape
        size = math.prod(rows) * dtype.itemsize
        tensor = buffer[offset : offset + size].view(dtype).view(rows)
        batch[name] = tensor.expand(shape) if expanded else tensor
    return batch


def shared_bytes(size: int) -> torch.Tensor:
    """A uint8 tensor of `size` bytes in shared memory."""
    storage = torch.UntypedStorage._new_shared(max(1, size))
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, (size,))


def pack(batch: dict[str, torch.Tensor]) -> dict:
    """The batch in one fresh shared buffer plus its layout (the fallback; `Receiver`
    undoes it)."""
    layout, size = layout_of(batch)
    buffer = shared_bytes(size)
    write(batch, layout, buffer)
    return {"packed": buffer, "layout": layout}


class Ring:
    """A worker's shared-memory slots; `send` turns a batch into a small message.

    A slot starts with the batch's tokens (`tokens_bytes`, the largest batch's:
    the builder writes them there, from `tokens`) and then has `rest_bytes` for
    the other fields, which `send` copies in.
    """

    def __init__(self, worker: int, slots: int, tokens_bytes: int, rest_bytes: int):
        if not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"a ring has 1..{MAX_SLOTS} slots, got {slots}")
        self.worker, self.n_slots = worker, slots
        self.tokens_bytes = -(-tokens_bytes // ALIGN) * ALIGN
        self.slot_bytes = self.tokens_bytes + -(-rest_bytes // ALIGN) * ALIGN
        self.buffer = shared_bytes(HEADER + slots * self.slot_bytes)
        self.state = self.buffer[:HEADER].numpy().view(np.int32)
        self.state[:] = 0
        self.next, self.claimed, self.sent = 0, None, False
        self.parent = os.getppid()

    def _slot(self, slot: int) -> torch.Tensor:
        start = HEADER + slot * self.slot_bytes
        return self.buffer[start : start + self.slot_bytes]

    def tokens(self, shape: tuple[int, ...]) -> torch.Tensor | None:
        """An int8 tensor of `shape` in the next slot, once that slot is free
        (None when it does not fit: the batch then travels by `pack`)."""
        size = math.prod(shape)
        if size > self.tokens_bytes:
            return None
        while self.state[self.next]:  # the main process has not copied it out yet
            if os.getppid() != self.parent:  # the main process is gone
                raise SystemExit(1)
            time.sleep(POLL_S)
        self.claimed = self._slot(self.next)[:size].view(torch.int8).view(shape)
        return self.claimed

    def send(self, batch: dict[str, torch.Tensor]) -> dict:
        """The message for `batch`, whose "x_alleles" came from `tokens`."""
        tokens, self.claimed = self.claimed, None
        if tokens is None or batch["x_alleles"].data_ptr() != tokens.data_ptr():
            return pack(batch)
        rest = {name: t for name, t in batch.items() if name != "x_alleles"}
        layout, size = layout_of(rest)
        if size > self.slot_bytes - self.tokens_bytes:
            return pack(batch)
        slot = self.next
        write(rest, layout, self._slot(slot)[self.tokens_bytes :])
        layout = [(name, dtype, shape, self.tokens_bytes + offset, expanded)
                  for name, dtype, shape, offset, expanded in layout]
        layout.append(("x_alleles", tokens.dtype, tuple(tokens.shape), 0, False))
        self.state[slot] = 1
        self.next = (slot + 1) % self.n_slots
        message = {"worker": self.worker, "slot": slot, "slot_bytes": self.slot_bytes,
                   "size": self.tokens_bytes + size, "layout": layout}
        if not self.sent:  # the ring itself travels once, with the first batch
            message["ring"], self.sent = self.buffer, True
        return message


class Receiver:
    """The main process' side: turns messages back into batches it owns.

    A batch is copied into a buffer of its own. Buffers are recycled once nothing
    outside the receiver refers to them any more (no field of their batch is
    alive), so a steady loop reuses a few buffers instead of faulting in fresh
    pages for every batch.
    """

    def __init__(self, pin_memory: bool = False, keep: int = 8):
        self.pin, self.keep = pin_memory, keep
        self.rings: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.buffers: list[torch.Tensor] = []

    def _buffer(self, size: int) -> torch.Tensor:
        for buffer in self.buffers:
            if buffer.numel() == size and not _in_use(buffer):
                return buffer
        buffer = torch.empty(size, dtype=torch.uint8, pin_memory=self.pin)
        self.buffers = [*self.buffers[-(self.keep - 1):], buffer] if self.keep > 0 else []
        return buffer

    def __call__(self, message: dict) -> dict[str, torch.Tensor]:
        if "packed" in message:
            buffer = message["packed"]
            if self.pin:
                buffer = buffer.pin_memory()
            return read(buffer, message["layout"])
        worker = message["worker"]
        if "ring" in message:
            ring = message["ring"].numpy()
            self.rings[worker] = ring, ring[:HEADER].view(np.int32)
        ring, state = self.rings[worker]
        slot, size = message["slot"], message["size"]
        start = HEADER + slot * message["slot_bytes"]
        buffer = self._buffer(size)
        np.copyto(buffer.numpy(), ring[start : start + size])  # one thread, unlike torch's
        state[slot] = 0  # the worker may write its next batch there
        return read(buffer, message["layout"])


def _in_use(buffer: torch.Tensor) -> bool:
    """Whether anything but `buffer` itself holds its storage (a field of a batch
    still alive). Without torch's use count, every buffer counts as in use."""
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    if use_count is None:
        return True
    return use_count(buffer.untyped_storage()._cdata) > 2  # buffer + this storage object
