"""The optimiser shared by pretraining and finetuning: AdamW that also takes sparse
gradients, its learning-rate schedules, and gradient clipping that handles both.

A model trained on a window of loci per step (`input_window`) reads its per-locus
tables sparsely (`GPerceiver.sparse_tables`): their gradients hold the window's rows
only. `LazyAdamW` updates those rows alone ("lazy" Adam, as for large embedding
tables): a row a step does not touch keeps its weights and moments, and weight
decay applies to the rows touched. Every dense parameter takes torch's fused AdamW
step. So a step's cost follows the window, not the panel.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from gperceiver.train.params import Params


class LazyAdamW(torch.optim.AdamW):
    """AdamW; a parameter with a sparse gradient is updated at its gradient's rows."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sparse = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    sparse.append((group, p, p.grad))
                    p.grad = None  # the dense step below skips it
        super().step()
        for group, p, grad in sparse:
            p.grad = grad
            self._rows_step(group, p, grad.coalesce())
        return loss

    def _rows_step(self, group: dict, p: torch.Tensor, grad: torch.Tensor) -> None:
        """One AdamW step at the rows `grad` holds, bias-corrected by this parameter's
        step count (as AdamW's state keeps it, so checkpoints read the same)."""
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        t = float(state["step"])
        lr, (beta1, beta2) = float(group["lr"]), group["betas"]
        rows, g = grad.indices()[0], grad.values()
        m = state["exp_avg"].index_select(0, rows).lerp_(g, 1 - beta1)
        v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(g, g, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        denom = (v / (1 - beta2**t)).sqrt_().add_(group["eps"])
        w = p.index_select(0, rows).mul_(1 - lr * group["weight_decay"])
        p.index_copy_(0, rows, w.addcdiv_(m, denom, value=-lr / (1 - beta1**t)))


def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale every gradient (dense or sparse) so that their joint norm is at most
    `max_norm`; return the norm before. torch's `clip_grad_norm_` refuses sparse ones."""
    grads = []
    for p in parameters:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()  # a row read twice is summed before its norm
        grads.append(p.grad)
    if not grads:
        return torch.tensor(0.0)
    norms = [(g._values() if g.is_sparse else g).detach().float().norm() for g in grads]
    total = torch.stack(norms).norm()
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        (g._values() if g.is_sparse else g).mul_(scale.to(g.dtype))
    return total


def configure_adamw(model: torch.nn.Module, params: Params, monitor: str = "val_loss"):
    """LazyAdamW with optional linear warm-up (per step) and halving of the learning
    rate when `monitor` stops improving (`lr_patience`)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    # One fused kernel per step, not a dozen passes: on a CPU, a third of the
    # optimiser's time with a large panel's per-locus tables.
    fused = all(p.device.type in ("cpu", "cuda") for p in trainable)
    optimiser = LazyAdamW(trainable, lr=params.lr, weight_decay=params.weight_decay,
                          fused=fused or None)
    schedules = []
    if params.warmup_steps > 0:
        warmup = params.warmup_steps
        schedules.append({"scheduler": torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: min(1.0, (step + 1) / warmup)), "interval": "step"})
    if params.lr_patience > 0:  # torch counts the epochs after the first bad one
        schedules.append({"scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser, factor=0.5, patience=params.lr_patience - 1), "monitor": monitor,
            "interval": "epoch"})
    return [optimiser], schedules
