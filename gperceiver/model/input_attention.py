"""Queries attending to the input loci, computed from the embedding tables.

An input's key and value are a linear map of its embedding, and its embedding is a
sum of table rows: its locus's position row and, for each allele copy, a shared and
a per-locus allele row. So a query's score at a locus is, per allele token, the
number of copies carrying it times a per-(locus, token) score, plus the position's
score; and what a query reads is the tables weighted by attention times allele
counts. Per sample and locus this holds a few numbers (token counts, a score and a
weight per head) instead of keys and values of 2 x projection_dim, and every sum
over loci is a matrix product with the tables.

The loci laid out are those every row of the batch gives (all loci, a window, or
loci drawn once for the batch: a step then costs what its inputs cost, however
large the panel), or, when rows give different loci, the whole span from the first
to the last with a mask of which each row gives.

With local latents (`Segments`) latent i scores only the loci of its own run,
laid out as a padded grid of runs, so the cost grows with the loci, not with
latents x loci. Other queries (finetuning heads, every latent without local
latents, and a latent whose run holds none of a sample's inputs) read every input
locus. The result is scaled dot-product attention over the projected embeddings,
to rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from gperceiver.model.embeddings import InputEmbedding


def input_attention(q: torch.Tensor, to_kv: nn.Linear, embed: InputEmbedding,
                    x_alleles: torch.Tensor, x_index: torch.Tensor, heads: int,
                    segments=None) -> torch.Tensor:
    """Attention of queries `q` (B, Nq, P), or (1, Nq, P) for queries the batch
    shares, over the inputs (B, L, ploidy) tokens at (B, L) loci, keys and values
    `to_kv(embed(...))`: returns (B, Nq, P).

    With `segments`, the first queries are the local latents of the runs the inputs
    span (`segments.span`) and the rest read everything.
    """
    n_q = q.shape[1]
    loci, shared = _layout(x_index)
    tables = _Tables(embed, to_kv, loci, heads)
    counts, present = _counts(x_alleles, x_index, loci, shared, tables.n_tokens, tables.dtype)
    u_a, u_p = tables.score_vectors(q)  # (B or 1, Nq, H, a), (B or 1, Nq, H, p)
    parts, fallback = [], []
    n_local = 0
    if segments is not None:
        first, stop = segments.span(x_index)
        n_local = stop - first
        grid, valid = _run_grid(segments, loci, first, n_local)
        local, empty = _local(tables, counts, present, grid, valid, u_a[:, :n_local],
                              u_p[:, :n_local])
        parts.append(local)
        # A run holding none of a sample's inputs: that latent reads every input.
        fallback = empty.any(0).nonzero().flatten().tolist()
    rows = torch.tensor(fallback + list(range(n_local, n_q)), dtype=torch.long,
                        device=q.device)
    if len(rows):
        read = _global(tables, counts, present, u_a[:, rows], u_p[:, rows])
        if fallback:
            at = rows[:len(fallback)]
            chosen = torch.where(empty[:, at, None, None], read[:, :len(fallback)],
                                 local[:, at])
            parts[0] = local.index_copy(1, at, chosen)
        parts.append(read[:, len(fallback):])
    out = torch.cat(parts, 1)
    return out.flatten(-2)


def _layout(x_index: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The loci the attention lays out, ascending, and whether every row gives
    exactly them (`shared`: all loci, a window, or loci drawn once per batch);
    otherwise each row gives some of them: the span from the first to the last."""
    first = x_index[0]
    if (x_index.shape[0] == 1 or bool((x_index == first).all())) and (
            len(first) == 1 or bool((first[1:] > first[:-1]).all())):
        return first.long(), True
    return torch.arange(int(x_index.min()), int(x_index.max()) + 1,
                        device=x_index.device), False


def _rows(table: nn.Embedding, loci: torch.Tensor, per_locus: int = 1) -> torch.Tensor:
    """The `per_locus` rows of each of `loci` (ascending) in `table`: a view of its
    weights when the loci are a run, else read through it; a sparse table is always
    read through it, so that its gradient holds these rows alone."""
    lo, hi = int(loci[0]), int(loci[-1]) + 1
    if not table.sparse and hi - lo == len(loci):
        return table.weight[lo * per_locus:hi * per_locus]
    if per_locus > 1:
        loci = (loci.unsqueeze(1) * per_locus + torch.arange(per_locus, device=loci.device)
                ).flatten()
    return table(loci)


class _Tables:
    """The embedding tables' rows of the laid-out loci, and the key and value
    weights split per head and per part (allele, position)."""

    def __init__(self, embed: InputEmbedding, to_kv: nn.Linear, loci: torch.Tensor,
                 heads: int):
        self.allele = embed.alleles.table.weight  # (T, a)
        self.n_tokens, a_dim = self.allele.shape
        self.dtype = self.allele.dtype
        locus = embed.locus_alleles
        self.locus = None if locus is None else _rows(  # (S, T, a)
            locus.table, loci, self.n_tokens).view(len(loci), self.n_tokens, a_dim)
        table = getattr(embed.position, "table", None)  # learned positions; fourier: computed
        self.position = _rows(table, loci) if table is not None else embed.position(loci)
        weight = to_kv.weight  # (2P, in): keys, then values
        w_a, w_p = (weight, weight) if embed.combine == "add" else (
            weight[:, :a_dim], weight[:, a_dim:])
        width = weight.shape[0] // 2
        self.heads, self.head_dim = heads, width // heads

        def per_head(w: torch.Tensor) -> torch.Tensor:
            return w.reshape(heads, self.head_dim, -1)  # (H, d, part)

        self.key_a, self.value_a = per_head(w_a[:width]), per_head(w_a[width:])
        self.key_p, self.value_p = per_head(w_p[:width]), per_head(w_p[width:])
        self.value_bias = None if to_kv.bias is None else to_kv.bias[width:].view(heads, -1)

    def score_vectors(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each query's score as dot products with the allele and position rows (a key
        bias adds the same to every score of a query, so it drops out)."""
        q = q.unflatten(-1, (self.heads, self.head_dim)) * self.head_dim**-0.5
        return (torch.einsum("bnhd,hda->bnha", q, self.key_a),
                torch.einsum("bnhd,hdp->bnhp", q, self.key_p))

    def values(self, read_a: torch.Tensor, read_p: torch.Tensor) -> torch.Tensor:
        """Value outputs (B, N, H, d) from the attention-weighted allele rows
        (B, N, H, a) and position rows (B, N, H, p); the weights sum to 1."""
        out = (torch.einsum("bnha,hda->bnhd", read_a, self.value_a)
               + torch.einsum("bnhp,hdp->bnhd", read_p, self.value_p))
        return out if self.value_bias is None else out + self.value_bias


def _counts(x_alleles: torch.Tensor, x_index: torch.Tensor, loci: torch.Tensor, shared: bool,
            n_tokens: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Copies of each token per laid-out locus, (S, T, B), and which of them each
    sample gives, (S, B) (None: all of them)."""
    b, n_loci = x_index.shape
    alleles = x_alleles.permute(1, 2, 0)  # (L, P, B); padded copies (-1) match no token
    per_locus = torch.stack([(alleles == t).sum(1, dtype=dtype) for t in range(n_tokens)], 1)
    if shared:
        return per_locus, None
    span, lo = len(loci), int(loci[0])
    at = (x_index.long() - lo).t()  # (L, B)
    counts = per_locus.new_zeros(span, n_tokens, b)
    counts.scatter_(0, at.unsqueeze(1).expand(-1, n_tokens, -1), per_locus)
    if n_loci == span:  # every row gives every spanned locus (indices are distinct)
        return counts, None
    present = torch.zeros(span, b, dtype=torch.bool, device=x_index.device)
    present.scatter_(0, at, True)
    return counts, present


def _run_grid(segments, loci: torch.Tensor, first: int, n_runs: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The laid-out loci as a padded grid of runs: (n_runs, longest) places in the
    layout (0 where padded) and which cells hold a locus."""
    run = segments.of(loci) - first  # non-decreasing
    sizes = torch.bincount(run, minlength=n_runs)
    starts = sizes.cumsum(0) - sizes
    places = torch.arange(len(loci), device=loci.device)
    grid = torch.full((n_runs, max(1, int(sizes.max()))), -1, dtype=torch.long,
                      device=loci.device)
    grid[run, places - starts[run]] = places
    valid = grid >= 0
    return grid.clamp(min=0), valid


def _softmax(scores: torch.Tensor, allowed: torch.Tensor | None, dim: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax along `dim` over the allowed cells (None: all), and where none is
    allowed (weights 0 there)."""
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    top = scores.amax(dim, keepdim=True).detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.exp(scores - top)
    total = e.sum(dim, keepdim=True)
    return e / total.clamp(min=torch.finfo(total.dtype).tiny), (total == 0)


def _scores(cells: torch.Tensor, token_scores: torch.Tensor,
            position_scores: torch.Tensor) -> torch.Tensor:
    """Sum over tokens of copies x per-token score, plus the position's score:
    cells (..., T, B), token_scores (..., T, B or 1, Q...) -> (..., B, Q...)."""
    extra = token_scores.dim() - cells.dim()
    out = position_scores
    for t in range(cells.shape[-2]):
        copies = cells.select(-2, t)
        out = out + copies.view(*copies.shape, *[1] * extra) * token_scores.select(-2 - extra, t)
    return out


def _on_grid(rows: torch.Tensor, grid: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-locus rows (S, ...) of the span laid out as the run grid (N, R, ...): when
    every run has one length the grid is the span itself, and this is a view."""
    if bool(valid.all()):
        return rows.view(*grid.shape, *rows.shape[1:])
    return rows.index_select(0, grid.flatten()).view(*grid.shape, *rows.shape[1:])


def _local(tables: _Tables, counts: torch.Tensor, present: torch.Tensor | None,
           grid: torch.Tensor, valid: torch.Tensor, u_a: torch.Tensor, u_p: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent i over the loci of run i alone: (B, N, H, d), and which (sample,
    latent) pairs had no input in their run, (B, N)."""
    n, longest = grid.shape
    t, b = tables.n_tokens, counts.shape[-1]
    bq, h = u_a.shape[0], u_a.shape[2]  # queries shared by the batch (bq 1) or not
    cells = _on_grid(counts, grid, valid)  # (N, R, T, B)
    allowed = valid.view(n, longest, 1, 1)
    if present is not None:
        allowed = allowed & _on_grid(present, grid, valid).view(n, longest, b, 1)
    elif bool(valid.all()):
        allowed = None
    ua = u_a.permute(1, 3, 0, 2).flatten(2)  # (N, a, Bq*H)
    up = u_p.permute(1, 3, 0, 2).flatten(2)  # (N, p, Bq*H)
    rows_p = _on_grid(tables.position, grid, valid)  # (N, R, p)
    token_scores = torch.einsum("ta,nax->ntx", tables.allele, ua).view(n, 1, t, bq, h)
    if tables.locus is not None:  # plus each locus's own rows
        rows_a = _on_grid(tables.locus, grid, valid).view(n, longest * t, -1)  # (N, R*T, a)
        token_scores = token_scores + torch.bmm(rows_a, ua).view(n, longest, t, bq, h)
    scores = _scores(cells, token_scores,
                     torch.bmm(rows_p, up).view(n, longest, bq, h))  # (N, R, B, H)
    weights, empty = _softmax(scores, allowed, 1)
    weighted = weights.unsqueeze(2) * cells.unsqueeze(-1)  # (N, R, T, B, H)
    read_a = torch.einsum("ta,ntx->nax", tables.allele, weighted.sum(1).flatten(2))
    if tables.locus is not None:
        read_a = read_a + torch.bmm(rows_a.transpose(1, 2), weighted.view(n, longest * t, b * h))
    read_p = torch.bmm(rows_p.transpose(1, 2), weights.flatten(2))  # (N, p, B*H)
    out = tables.values(read_a.view(n, -1, b, h).permute(2, 0, 3, 1),
                        read_p.view(n, -1, b, h).permute(2, 0, 3, 1))
    return out, empty[:, 0, :, 0].t()


def _global(tables: _Tables, counts: torch.Tensor, present: torch.Tensor | None,
            u_a: torch.Tensor, u_p: torch.Tensor) -> torch.Tensor:
    """Queries (B or 1, G, ...) over every input locus: (B, G, H, d)."""
    span, t, b = counts.shape
    bq, g, h = u_a.shape[:3]
    ua = u_a.permute(3, 0, 1, 2).flatten(1)  # (a, Bq*G*H)
    up = u_p.permute(3, 0, 1, 2).flatten(1)  # (p, Bq*G*H)
    token_scores = (tables.allele @ ua).view(1, t, bq, g, h)
    if tables.locus is not None:  # plus each locus's own rows
        token_scores = token_scores + (tables.locus.flatten(0, 1) @ ua).view(span, t, bq, g, h)
    scores = _scores(counts, token_scores,
                     (tables.position @ up).view(span, bq, g, h))  # (S, B, G, H)
    allowed = None if present is None else present.view(span, b, 1, 1)
    weights, _ = _softmax(scores, allowed, 0)
    weighted = weights.unsqueeze(1) * counts.view(span, t, b, 1, 1)  # (S, T, B, G, H)
    read_a = tables.allele.t() @ weighted.sum(0).flatten(1)
    if tables.locus is not None:
        read_a = read_a + tables.locus.flatten(0, 1).t() @ weighted.view(span * t, -1)
    read_p = tables.position.t() @ weights.flatten(1)  # (p, B*G*H)
    return tables.values(read_a.view(-1, b, g, h).permute(1, 2, 3, 0),
                         read_p.view(-1, b, g, h).permute(1, 2, 3, 0))
