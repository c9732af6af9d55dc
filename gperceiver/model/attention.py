"""Pre-norm attention and feed-forward layers (scaled_dot_product_attention inside).

Every layer works within one sample: nothing mixes the rows of a batch, so a
sample's output depends on that sample alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """x + MLP(LN(x))."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, dim), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Attention(nn.Module):
    """Multi-head attention of queries (B, Lq, q_dim) over keys/values (B, Lk, kv_dim).

    Returns q + out: the residual is included. With `kv` None it is self-attention.
    """

    def __init__(self, q_dim: int, kv_dim: int, inner_dim: int, heads: int,
                 dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(q_dim)
        self.norm_kv = nn.LayerNorm(kv_dim)
        self.to_q = nn.Linear(q_dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(kv_dim, 2 * inner_dim, bias=False)
        self.out = nn.Linear(inner_dim, q_dim)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, kv: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """`mask` (B, 1, Lq, Lk) bool: True where a query may attend to a key."""
        qn = self.norm_q(q)
        kvn = qn if kv is None else self.norm_kv(kv)
        k, v = self.to_kv(kvn).chunk(2, -1)
        att = F.scaled_dot_product_attention(
            self._split(self.to_q(qn)), self._split(k), self._split(v), attn_mask=mask)
        b, h, n, d = att.shape
        return q + self.dropout(self.out(att.transpose(1, 2).reshape(b, n, h * d)))


class CrossLayer(nn.Module):
    """Cross-attention from queries to inputs, then a feed-forward layer."""

    def __init__(self, q_dim: int, kv_dim: int, inner_dim: int, heads: int, hidden: int,
                 dropout: float = 0.0):
        super().__init__()
        self.attend = Attention(q_dim, kv_dim, inner_dim, heads, dropout)
        self.ff = FeedForward(q_dim, hidden, dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.ff(self.attend(q, kv, mask))


class SelfLayer(nn.Module):
    """A transformer layer over the latents: self-attention, then feed-forward."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.attend = Attention(dim, dim, dim, heads, dropout)
        self.ff = FeedForward(dim, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(self.attend(x))
