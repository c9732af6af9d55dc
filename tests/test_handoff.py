"""Batches leave DataLoader workers through shared-memory rings: lossless, never
aliased by what the main process keeps, and larger batches still travel."""

from __future__ import annotations

import pytest
import torch

from gperceiver.data.handoff import Receiver, Ring, _in_use


def make_batch(ring: Ring | None, seed: int, n: int = 3, loci: int = 5) -> dict:
    g = torch.Generator().manual_seed(seed)
    shape = (n, loci, 2)
    tokens = ring.tokens(shape) if ring is not None else torch.empty(shape, dtype=torch.int8)
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


def test_batches_round_trip_and_slots_are_freed():
    ring, receive = Ring(worker=1, slots=2, tokens_bytes=30, rest_bytes=512), Receiver()
    sent = [make_batch(None, seed) for seed in range(5)]
    for seed, expected in enumerate(sent):
        message = ring.send(make_batch(ring, seed))
        assert "packed" not in message and ("ring" in message) == (seed == 0)
        assert ring.state.tolist()[:2].count(1) == 1  # this batch's slot is full
        batch = receive(message)
        assert ring.state[message["slot"]] == 0  # copied out: the worker may reuse it
        assert_same(batch, expected)
        assert batch["x_index"].stride(0) == 0  # still one row, expanded


def test_received_batches_do_not_alias_the_ring_or_each_other():
    ring, receive = Ring(worker=0, slots=2, tokens_bytes=30, rest_bytes=512), Receiver()
    first = receive(ring.send(make_batch(ring, 0)))
    kept = first["x_alleles"]  # a field the caller still holds
    expected = make_batch(None, 0)["x_alleles"]
    for seed in range(1, 6):  # overwrite every slot several times
        later = receive(ring.send(make_batch(ring, seed)))
        assert later["x_alleles"].data_ptr() != kept.data_ptr()
    torch.testing.assert_close(kept, expected, rtol=0, atol=0)


def test_a_dropped_batch_buffer_is_reused():
    if not hasattr(torch._C, "_storage_Use_Count"):
        pytest.skip("this torch has no storage use count: buffers are never reused")
    ring, receive = Ring(worker=0, slots=2, tokens_bytes=30, rest_bytes=512), Receiver()
    batch = receive(ring.send(make_batch(ring, 0)))
    buffer = receive.buffers[0]
    assert _in_use(buffer)
    del batch
    assert not _in_use(buffer)
    again = receive(ring.send(make_batch(ring, 1)))
    assert len(receive.buffers) == 1 and again["x_alleles"].untyped_storage().data_ptr() == (
        buffer.untyped_storage().data_ptr())
    assert_same(again, make_batch(None, 1))


def test_a_batch_larger_than_a_slot_travels_packed():
    ring, receive = Ring(worker=0, slots=2, tokens_bytes=30, rest_bytes=8), Receiver()
    message = ring.send(make_batch(ring, 3))  # its other fields pass rest_bytes
    assert "packed" in message and not ring.state.any()
    assert_same(receive(message), make_batch(None, 3))
    assert ring.tokens((7, 5, 2)) is None  # tokens past the slot (64 bytes): built elsewhere
    message = ring.send(make_batch(None, 4, n=7))
    assert "packed" in message
    assert_same(receive(message), make_batch(None, 4, n=7))
