"""Hand batches from DataLoader workers to the main process through shared-memory rings.

torch hands every tensor a worker returns over in a fresh shared-memory file,
with a socket hand-shake per file descriptor: per batch, the worker faults in
(and the kernel zeroes) new pages, and a hand-off thread must win the GIL. For a
loader whose batches are megabytes of tokens, that cost as much CPU as reading
them. Instead each worker makes one `Ring` of slots in shared memory when it
starts, sends the slots once (torch's usual way) with its first batch, and then
writes every batch into a free slot: the message is the slot number and the
fields' layout.

The main process (`Receiver`) lends the slot to the batch it returns (its fields
are views into the slot: nothing is copied) and marks the slot free once no
field of that batch is alive any more; with pinned memory it copies the batch
there and frees the slot at once. A worker whose slots are all lent (the caller
keeps many batches) waits a little, then sends the batch the old way, as one
fresh shared buffer (`pack`); so does a batch larger than a slot.
"""

from __future__ import annotations

import math
import os
import time
import warnings

import numpy as np
import torch

from gperceiver.errors import GPerceiverWarning

# A private torch function (tests/test_handoff.py fails when a release drops it): how
# many references a storage has, which tells when a lent slot's batch has died.
# Without it, batches are copied out of their slot at once (slower, but correct),
# and a warning says so.
USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)
if not hasattr(torch.empty(1).untyped_storage(), "_cdata"):  # the handle it takes
    USE_COUNT = None
if USE_COUNT is None:
    warnings.warn("this torch has no storage use count (torch._C._storage_Use_Count): "
                  "loader batches are copied out of shared memory", GPerceiverWarning,
                  stacklevel=2)
# Another (tests/test_handoff.py fails when a release drops it): a storage made in
# shared memory. Without it, a slot is made in private memory and moved there
# (`share_memory_`, public): one copy of each slot when a worker starts, and a warning.
NEW_SHARED = getattr(torch.UntypedStorage, "_new_shared", None)
if NEW_SHARED is None:
    warnings.warn("this torch has no shared-memory storage constructor "
                  "(torch.UntypedStorage._new_shared): loader slots are made in private "
                  "memory and moved to shared memory", GPerceiverWarning, stacklevel=2)

ALIGN = 64  # every field starts on such a boundary
POLL_S = 0.0002  # a worker's sleep between looks for a free slot
WAIT_S = 0.05  # how long a worker waits for one before sending a batch packed

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
    if NEW_SHARED is None:
        return torch.empty(max(1, size), dtype=torch.uint8).share_memory_()[:size]
    storage = NEW_SHARED(max(1, size))
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
    the other fields, which `send` copies in. `state[i]` is 1 while slot i is
    the main process', 0 when free.
    """

    def __init__(self, worker: int, slots: int, tokens_bytes: int, rest_bytes: int):
        if slots < 1:
            raise ValueError(f"a ring needs a slot, got {slots}")
        self.worker = worker
        self.tokens_bytes = -(-tokens_bytes // ALIGN) * ALIGN
        self.slot_bytes = self.tokens_bytes + -(-rest_bytes // ALIGN) * ALIGN
        self.slots = [shared_bytes(self.slot_bytes) for _ in range(slots)]
        self.state_tensor = shared_bytes(4 * slots)
        self.state = self.state_tensor.numpy().view(np.int32)
        self.state[:] = 0
        self.claimed: tuple[int, torch.Tensor] | None = None
        self.sent = False
        self.parent = os.getppid()

    def tokens(self, shape: tuple[int, ...]) -> torch.Tensor | None:
        """An int8 tensor of `shape` in a free slot (None when it does not fit, or
        no slot frees up within WAIT_S: the batch then travels by `pack`)."""
        size = math.prod(shape)
        if size > self.tokens_bytes:
            return None
        deadline = time.monotonic() + WAIT_S
        while (free := np.flatnonzero(self.state == 0)).size == 0:
            if os.getppid() != self.parent:  # the main process is gone
                raise SystemExit(1)
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL_S)
        slot = int(free[0])
        tokens = self.slots[slot][:size].view(torch.int8).view(shape)
        self.claimed = slot, tokens
        return tokens

    def send(self, batch: dict[str, torch.Tensor]) -> dict:
        """The message for `batch`, whose "x_alleles" came from `tokens`."""
        claimed, self.claimed = self.claimed, None
        if claimed is None or batch["x_alleles"].data_ptr() != claimed[1].data_ptr():
            return pack(batch)
        slot, tokens = claimed
        rest = {name: t for name, t in batch.items() if name != "x_alleles"}
        layout, size = layout_of(rest)
        if size > self.slot_bytes - self.tokens_bytes:
            return pack(batch)
        write(rest, layout, self.slots[slot][self.tokens_bytes :])
        layout = [(name, dtype, shape, self.tokens_bytes + offset, expanded)
                  for name, dtype, shape, offset, expanded in layout]
        layout.append(("x_alleles", tokens.dtype, tuple(tokens.shape), 0, False))
        self.state[slot] = 1
        message = {"worker": self.worker, "slot": slot, "size": self.tokens_bytes + size,
                   "layout": layout}
        if not self.sent:  # the slots themselves travel once, with the first batch
            message.update(slots=self.slots, state=self.state_tensor)
            self.sent = True
        return message


class Receiver:
    """The main process' side: turns messages back into batches.

    A batch's fields are views into its slot, which stays lent to it until no
    field is alive (checked at every message); with `pin_memory` the batch is
    copied into pinned memory and the slot freed at once.
    """

    def __init__(self, pin_memory: bool = False):
        self.pin = pin_memory
        self.rings: dict[int, tuple[list[torch.Tensor], np.ndarray]] = {}
        self.lent: list[tuple[np.ndarray, int, torch.Tensor]] = []

    def release(self) -> None:
        """Free the slots of batches no one holds any more."""
        held = []
        for state, slot, buffer in self.lent:
            if _in_use(buffer):
                held.append((state, slot, buffer))
            else:
                state[slot] = 0  # the worker may write its next batch there
        self.lent = held

    def __call__(self, message: dict) -> dict[str, torch.Tensor]:
        self.release()
        if "packed" in message:
            buffer = message["packed"]
            if self.pin:
                buffer = buffer.pin_memory()
            return read(buffer, message["layout"])
        worker = message["worker"]
        if "slots" in message:
            self.rings[worker] = message["slots"], message["state"].numpy().view(np.int32)
        slots, state = self.rings[worker]
        slot, size = message["slot"], message["size"]
        buffer = slots[slot][:size]
        if self.pin:
            buffer = buffer.pin_memory()
            state[slot] = 0
        elif USE_COUNT is None:  # no way to see when a batch dies: copy it out now
            buffer = buffer.clone()
            state[slot] = 0
        else:
            self.lent.append((state, slot, slots[slot]))
        return read(buffer, message["layout"])


def _in_use(buffer: torch.Tensor) -> bool:
    """Whether anything but `buffer` itself holds its storage (a field of a batch
    still alive), by torch's storage use count."""
    return USE_COUNT(buffer.untyped_storage()._cdata) > 2  # buffer + this storage object
