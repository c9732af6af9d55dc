"""LazyAdamW and gradient clipping over sparse per-locus tables, against torch's own."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from gperceiver.train.optimiser import LazyAdamW, clip_gradients
from gperceiver.train.params import Params
from gperceiver.train.pretrain import pretrain
from tests.test_model import make_model, tokens
from tests.test_pretrain import TINY, founders  # noqa: F401 (a fixture)
from tests.tiny_stores import one_torch_thread

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)


def window_step(model, optimiser, start: int) -> None:
    """One masked step over loci start..start+7, targets among them, clipped to 0.5."""
    optimiser.zero_grad()
    x, xi = tokens(3, 8, 2, 4, seed=start), torch.arange(start, start + 8).expand(3, -1)
    model.masked_logits(x, xi, xi[:, 2:5]).logsumexp(-1).sum().backward()
    clip_gradients(model.parameters(), 0.5)
    optimiser.step()


def test_lazy_steps_match_adamw_at_the_rows_read_and_leave_the_others():
    dense = make_model(input_window=True).train()
    lazy = copy.deepcopy(dense)
    lazy.sparse_tables()
    hyper = dict(lr=0.05, weight_decay=0.1)
    opt_dense = torch.optim.AdamW(dense.parameters(), **hyper)
    opt_lazy = LazyAdamW(lazy.parameters(), **hyper, fused=True)
    before = copy.deepcopy(lazy)
    # The same window each step: its rows see the same history (to rounding: gathered
    # rows sum in another order, and Adam divides by small moments).
    for _ in range(3):
        window_step(dense, opt_dense, 10)
        window_step(lazy, opt_lazy, 10)
    assert lazy.embed.locus_alleles.table.weight.grad.is_sparse
    tables = {id(t.weight) for t in lazy.per_locus_tables()}
    read, targets = torch.zeros(30, dtype=torch.bool), torch.zeros(30, dtype=torch.bool)
    read[10:18], targets[12:15] = True, True  # inputs, and the decoder's targets
    for (name, a), b, old in zip(lazy.named_parameters(), dense.parameters(),
                                 before.parameters(), strict=True):
        if id(a) not in tables:  # dense parameters: torch's step (fused or not)
            torch.testing.assert_close(a, b, rtol=1e-4, atol=5e-5, msg=name)
            continue
        rows = targets if a is lazy.masked.readout.weight else read
        per_locus = rows.repeat_interleave(a.shape[0] // 30)
        torch.testing.assert_close(a[per_locus], b[per_locus], rtol=1e-4, atol=5e-5, msg=name)
        assert torch.equal(a[~per_locus], old[~per_locus]), name  # untouched, not decayed
        if b.grad is not None:  # (the contrastive read-out is not in a masked step)
            assert not torch.equal(b[~per_locus], old[~per_locus]), name  # AdamW decays them
    # the optimiser's state has AdamW's layout, so a checkpoint resumes either way
    state = opt_lazy.state_dict()["state"]
    assert all(set(s) == {"step", "exp_avg", "exp_avg_sq"} for s in state.values())
    assert all(float(s["step"]) == 3 for s in state.values())


def test_clipping_sparse_and_dense_gradients_as_torch_clips_dense_ones():
    dense = make_model(input_window=True).train()
    sparse = copy.deepcopy(dense)
    sparse.sparse_tables()
    for model in (dense, sparse):
        x, xi = tokens(3, 8, 2, 4), torch.arange(5, 13).expand(3, -1)
        model.masked_logits(x, xi, xi[:, :4]).logsumexp(-1).sum().backward()
    norm = torch.nn.utils.clip_grad_norm_(dense.parameters(), 0.5)
    assert torch.allclose(clip_gradients(sparse.parameters(), 0.5), norm, rtol=1e-5)
    assert norm > 0.5  # it did clip
    for a, b in zip(sparse.parameters(), dense.parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(a.grad.to_dense(), b.grad, rtol=1e-5, atol=1e-7)


class SparseSeen(L.Callback):
    """Which parameters had sparse gradients when the optimiser stepped."""

    def __init__(self):
        self.sparse: set[str] = set()

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.sparse |= {n for n, p in module.named_parameters()
                        if p.grad is not None and p.grad.is_sparse}


@pytest.mark.parametrize("window", [True, False])
def test_window_pretraining_updates_only_the_window_rows(founders, tmp_path, window):  # noqa: F811
    seen = SparseSeen()
    params = Params.build(**TINY, epochs=1, prop_x=0.5, input_window=window)
    pretrain(founders, tmp_path / "run", "masked", params, progress=False, callbacks=[seen])
    expected = {"model.embed.position.table.weight", "model.embed.locus_alleles.table.weight",
                "model.masked.readout.weight"}
    assert seen.sparse == (expected if window else set())
