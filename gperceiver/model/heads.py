"""Finetuning heads: every block (trait) predicted in one pass, one shared objective.

- "latent": one trainable query per block joins the latent array, goes through the
  whole encoder with it, and its final state is read out for that block.
- "pool": the latents are mean-pooled and an MLP gives each block its outputs.

Objectives and their outputs per block: regression 1 value; binary 1 logit;
multiclass `n_classes` logits; ordinal 1 score against `n_classes - 1` ordered
thresholds (cumulative logits). Nothing mixes the samples of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gperceiver.choices import HEADS, OBJECTIVES
from gperceiver.model.config import ModelConfig


@dataclass
class Target:
    """How responses map to a head's outputs and back, per block (saved with the head)."""

    objective: str
    n_blocks: int
    n_classes: int
    mean: np.ndarray  # (n_blocks,) regression centring (0 otherwise)
    scale: np.ndarray  # (n_blocks,) regression scaling (1 otherwise)
    blocks: list | None = None  # the phenotype file's block labels, output by output

    def __post_init__(self) -> None:
        if self.blocks is None:
            self.blocks = list(range(self.n_blocks))

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "n_blocks": self.n_blocks,
                "n_classes": self.n_classes, "mean": torch.as_tensor(self.mean),
                "scale": torch.as_tensor(self.scale), "blocks": list(self.blocks)}

    def regression_values(self, out: np.ndarray) -> np.ndarray:
        """A regression head's outputs (samples, blocks, 1), standardised, back in the
        responses' units: (samples, blocks) float32."""
        return (out[..., 0] * self.scale + self.mean).astype(np.float32)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        return cls(str(d["objective"]), int(d["n_blocks"]), int(d["n_classes"]),
                   np.asarray(d["mean"], np.float64), np.asarray(d["scale"], np.float64),
                   d.get("blocks"))


def n_outputs(objective: str, n_classes: int) -> int:
    """Outputs per block of an objective."""
    if objective in ("regression", "binary"):
        return 1
    if objective == "multiclass":
        return n_classes
    if objective == "ordinal":
        return 1
    raise ValueError(f"unknown objective {objective!r} (one of {', '.join(OBJECTIVES)})")


class FinetuneHead(nn.Module):
    """Reads block predictions (B, n_blocks, n_out) from a `GPerceiver` encoder."""

    def __init__(self, kind: str, latent_dim: int, hidden: int, n_blocks: int,
                 objective: str = "regression", n_classes: int = 2):
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"unknown head {kind!r} (one of {', '.join(HEADS)})")
        if objective in ("multiclass", "ordinal") and n_classes < 2:
            raise ValueError(f"{objective} needs n_classes >= 2")
        self.kind, self.objective, self.n_blocks = kind, objective, n_blocks
        self.n_classes = n_classes
        n_out = n_outputs(objective, n_classes)
        if kind == "latent":
            self.queries = nn.Parameter(torch.randn(n_blocks, latent_dim) * 0.02)
            self.weight = nn.Parameter(torch.randn(n_blocks, latent_dim, n_out) * latent_dim**-0.5)
            self.bias = nn.Parameter(torch.zeros(n_blocks, n_out))
        else:
            self.mlp = nn.Sequential(
                nn.LayerNorm(latent_dim), nn.Linear(latent_dim, hidden), nn.GELU(),
                nn.Linear(hidden, n_blocks * n_out),
            )
        if objective == "ordinal":
            # First threshold free, then positive gaps: thresholds stay ordered.
            self.threshold_start = nn.Parameter(torch.zeros(n_blocks, 1))
            self.threshold_gaps = nn.Parameter(torch.zeros(n_blocks, n_classes - 2))
        self.n_out = n_out

    def forward(self, model: nn.Module, x_alleles: torch.Tensor,
                x_index: torch.Tensor) -> torch.Tensor:
        """Outputs (B, n_blocks, n_out); ordinal: cumulative logits (B, n_blocks, K - 1)."""
        if self.kind == "latent":
            latents = model.encode(x_alleles, x_index, extra=self.queries)
            read = latents[:, -self.n_blocks:]
            out = torch.einsum("bkd,kdo->bko", read, self.weight) + self.bias
        else:
            latents = model.encode(x_alleles, x_index)
            out = self.mlp(latents.mean(1)).view(-1, self.n_blocks, self.n_out)
        if self.objective == "ordinal":
            thresholds = torch.cat(
                [self.threshold_start, F.softplus(self.threshold_gaps)], -1).cumsum(-1)
            out = out - thresholds  # logit P(y > k), k = 0..K-2
        return out


def head_loss(objective: str, out: torch.Tensor, y: torch.Tensor,
              y_mask: torch.Tensor) -> torch.Tensor:
    """Mean loss over observed (sample, block) pairs; y (B, n_blocks) float."""
    mask = y_mask.to(out.dtype)
    if objective == "regression":
        per = (out[..., 0] - y) ** 2
    elif objective == "binary":
        per = F.binary_cross_entropy_with_logits(out[..., 0], y, reduction="none")
    elif objective == "multiclass":
        target = (y * y_mask).long()
        per = F.cross_entropy(out.flatten(0, 1), target.flatten(), reduction="none")
        per = per.view_as(y)
    elif objective == "ordinal":
        levels = torch.arange(out.shape[-1], device=out.device, dtype=out.dtype)
        above = (y.unsqueeze(-1) > levels).to(out.dtype)
        per = F.binary_cross_entropy_with_logits(out, above, reduction="none").sum(-1)
    else:
        raise ValueError(f"unknown objective {objective!r}")
    return (per * mask).sum() / mask.sum().clamp(min=1)


def build_head(kind: str, config: ModelConfig, target: Target) -> FinetuneHead:
    """A fresh head of `kind` over a model of `config` for `target`'s blocks."""
    return FinetuneHead(kind, config.latent_dim, config.feedforward_dim, target.n_blocks,
                        target.objective, target.n_classes)


def head_probabilities(objective: str, out: torch.Tensor) -> torch.Tensor:
    """(B, blocks, classes) class probabilities from a classifying head's outputs."""
    if objective == "binary":
        p1 = torch.sigmoid(out[..., 0])
        return torch.stack([1 - p1, p1], -1)
    if objective == "multiclass":
        return torch.softmax(out, -1)
    if objective != "ordinal":
        raise ValueError(f"{objective!r} has no classes")
    # ordinal: out[..., k] = logit P(y > k); P(y = k) = P(y > k - 1) - P(y > k)
    above = torch.sigmoid(out)
    ones = torch.ones_like(above[..., :1])
    upper = torch.cat([ones, above], -1)
    lower = torch.cat([above, torch.zeros_like(ones)], -1)
    prob = (upper - lower).clamp(min=0)
    return prob / prob.sum(-1, keepdim=True).clamp(min=1e-12)


def head_predict(objective: str, out: torch.Tensor) -> torch.Tensor:
    """Predictions (B, n_blocks): the value, the probability of 1, or the most probable
    class (ordinal: under `head_probabilities`)."""
    if objective == "regression":
        return out[..., 0]
    prob = head_probabilities(objective, out)
    return prob[..., 1] if objective == "binary" else prob.argmax(-1).to(out.dtype)
