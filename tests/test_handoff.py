"""Batches leave DataLoader workers through shared-memory rings: lossless, a slot
lent to the batch that uses it until no field of it is alive, and batches that
find no room still travel."""

from __future__ import annotations

import gc

import torch

from gperceiver.data.handoff import Receiver, Ring


def make_batch(ring: Ring | None, seed: int, n: int = 3, loci: int = 5) -> dict:
    g = torch.Generator().manual_seed(seed)
    shape = (n, loci, 2)
    tokens = ring.tokens(shape) if ring is not None else None
    if tokens is None:
        tokens = torch.empty(shape, dtype=torch.int8)
    tokens.copy_(torch.randint(0, 3, shape, generator=g, dtype=torch.int8))
    return {
        "sample_index": torch.arange(n) + seed,
        "x_index": torch.arange(loci, dtype=torch.int32).expand(n, -1),  # stride 0
        "x_alleles": tokens,
        "y_mask": torch.rand(n, 2, generator=g) > 0.5,
    }


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_torch_still_has_the_storage_use_count():
    """The handoff lends slots until a batch dies, which only torch's private storage use
    count tells; if a torch release drops it, this fails (the loader then copies every
    batch out of its slot, with a warning) and the handoff needs another way."""
    from gperceiver.data import handoff

    assert handoff.USE_COUNT is not None
    assert handoff.USE_COUNT(torch.zeros(3).untyped_storage()._cdata) >= 1


def test_torch_still_makes_storages_in_shared_memory():
    """Slots are made straight in shared memory by torch's private `_new_shared`; if a
    release drops it, this fails (slots are then made privately and moved there, one
    copy each) and the fallback below keeps the handoff right."""
    from gperceiver.data import handoff

    assert handoff.NEW_SHARED is not None
    buffer = handoff.shared_bytes(10)
    assert buffer.shape == (10,) and buffer.dtype == torch.uint8 and buffer.is_shared()


def test_without_new_shared_slots_are_moved_to_shared_memory(monkeypatch):
    from gperceiver.data import handoff

    monkeypatch.setattr(handoff, "NEW_SHARED", None)
    for size in (0, 10):
        buffer = handoff.shared_bytes(size)
        assert buffer.shape == (size,) and buffer.dtype == torch.uint8 and buffer.is_shared()
    ring, receive = Ring(worker=0, slots=2, tokens_bytes=30, rest_bytes=512), Receiver()
    for seed in range(4):
        batch = receive(ring.send(make_batch(ring, seed)))
        assert_same(batch, make_batch(None, seed))
        del batch


def test_batches_round_trip_and_slots_come_back_when_dropped():
    ring, receive = Ring(worker=1, slots=2, tokens_bytes=30, rest_bytes=512), Receiver()
    for seed in range(6):
        message = ring.send(make_batch(ring, seed))
        assert "packed" not in message and ("slots" in message) == (seed == 0)
        batch = receive(message)
        assert ring.state[message["slot"]] == 1  # lent to `batch`
        assert_same(batch, make_batch(None, seed))
        assert batch["x_index"].stride(0) == 0  # still one row, expanded
        assert batch["x_alleles"].data_ptr() == ring.slots[message["slot"]].data_ptr()
        del batch
        gc.collect()
        receive.release()
        assert not ring.state.any()  # dropped: every slot free again


def test_a_kept_batch_is_never_overwritten():
    ring, receive = Ring(worker=0, slots=2, tokens_bytes=30, rest_bytes=512), Receiver()
    kept = receive(ring.send(make_batch(ring, 0)))
    for seed in range(1, 5):  # the other slot serves every later batch
        batch = receive(ring.send(make_batch(ring, seed)))
        assert_same(batch, make_batch(None, seed))
        del batch
    assert_same(kept, make_batch(None, 0))


def test_batches_travel_packed_when_every_slot_is_lent():
    ring, receive = Ring(worker=0, slots=2, tokens_bytes=30, rest_bytes=512), Receiver()
    kept = [receive(ring.send(make_batch(ring, seed))) for seed in range(2)]
    assert ring.state.tolist() == [1, 1]
    assert ring.tokens((3, 5, 2)) is None  # waited WAIT_S for a slot, in vain
    message = ring.send(make_batch(ring, 2))
    assert "packed" in message
    assert_same(receive(message), make_batch(None, 2))
    for seed, batch in enumerate(kept):
        assert_same(batch, make_batch(None, seed))


def test_a_batch_larger_than_a_slot_travels_packed():
    ring, receive = Ring(worker=0, slots=2, tokens_bytes=30, rest_bytes=8), Receiver()
    message = ring.send(make_batch(ring, 3))  # its other fields pass rest_bytes
    assert "packed" in message and not ring.state.any()
    assert_same(receive(message), make_batch(None, 3))
    assert ring.tokens((7, 5, 2)) is None  # tokens past the slot (64 bytes): built elsewhere
    message = ring.send(make_batch(None, 4, n=7))
    assert "packed" in message
    assert_same(receive(message), make_batch(None, 4, n=7))


def test_without_the_use_count_batches_are_copied_out_and_slots_freed(monkeypatch):
    """The loud fallback's quiet half: with no use count, each batch is a copy and its
    slot is free at once, so a kept batch stays right and nothing waits."""
    from gperceiver.data import handoff

    monkeypatch.setattr(handoff, "USE_COUNT", None)
    ring, receive = Ring(worker=0, slots=2, tokens_bytes=30, rest_bytes=512), Receiver()
    kept = receive(ring.send(make_batch(ring, 0)))
    assert not ring.state.any()
    assert kept["x_alleles"].data_ptr() != ring.slots[0].data_ptr()
    for seed in range(1, 5):
        assert_same(receive(ring.send(make_batch(ring, seed))), make_batch(None, seed))
    assert_same(kept, make_batch(None, 0))
