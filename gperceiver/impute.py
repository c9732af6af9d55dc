"""Fill missing calls with a pretrained model's most probable genotype.

Each sample is encoded from all its loci (missing copies are token 0); the
masked decoder then scores every genotype class at the sample's loci with a
missing copy. A model pretrained on windows of loci (`input_window`) sees windows
of that length, half overlapping, and each locus is filled from the window whose
centre is nearest. Only classes consistent with the locus are allowed: as many copies
as the sample has there (padded copies, -2, stay padded) and containing the
alleles already called. The missing copies (-1) receive the remaining alleles.
The output store has the input's samples, variants and order, and is written
atomically (nothing appears at the destination unless complete).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import xarray as xr

from gperceiver.atomic import atomic_output, check_writable
from gperceiver.data.loader import make_loader
from gperceiver.data.tasks import task_sizes
from gperceiver.errors import InputFormatError
from gperceiver.memory import inference_batch
from gperceiver.store import open_store, open_view, schema, store_name
from gperceiver.store.chunk_writer import ChunkWriter
from gperceiver.store.write import create_store, finish_store
from gperceiver.train.checkpoint import load_model


def windows(n_variants: int, length: int) -> list[tuple[int, int, int, int]]:
    """(start, stop, keep_from, keep_to) of windows of `length` loci, half
    overlapping, over `n_variants` loci: loci keep_from..keep_to - 1 are nearest
    this window's centre (every locus is kept from exactly one window)."""
    if length >= n_variants:
        return [(0, n_variants, 0, n_variants)]
    starts = [*range(0, n_variants - length, max(1, length // 2)), n_variants - length]
    centres = [start + length / 2 for start in starts]
    middles = (int((a + b) / 2) for a, b in zip(centres[:-1], centres[1:], strict=True))
    cuts = [0, *middles, n_variants]
    return [(start, start + length, cuts[i], cuts[i + 1]) for i, start in enumerate(starts)]


@torch.inference_mode()
def impute_batch(model: torch.nn.Module, x_alleles: torch.Tensor, x_index: torch.Tensor,
                 window: int | None = None) -> torch.Tensor:
    """Tokens (B, V, P) of all loci -> the same tokens with every 0 (missing) filled;
    `window`: the model sees `windows` of that many loci at a time."""
    if window is not None and window < x_alleles.shape[1]:
        out = x_alleles.clone()
        for start, stop, keep_from, keep_to in windows(x_alleles.shape[1], window):
            filled = impute_batch(model, x_alleles[:, start:stop], x_index[:, start:stop])
            out[:, keep_from:keep_to] = filled[:, keep_from - start : keep_to - start]
        return out
    out = x_alleles.clone()
    locus_missing = (x_alleles == 0).any(-1)  # (B, V)
    n_missing = locus_missing.sum(-1)
    width = int(n_missing.max())
    if width == 0:
        return out
    order = torch.argsort((~locus_missing).to(torch.int8), dim=-1, stable=True)
    y_pos = order[:, :width]  # positions within x_index
    y_mask = torch.arange(width) < n_missing.unsqueeze(-1)
    y_index = torch.gather(x_index, 1, y_pos)
    logits = model.decode_masked(model.encode(x_alleles, x_index), y_index, x_index)

    tokens = torch.gather(x_alleles, 1, y_pos.unsqueeze(-1).expand(-1, -1, x_alleles.shape[-1]))
    classes = model.classes  # (K, A)
    observed = torch.stack(
        [(tokens == a + 1).sum(-1) for a in range(classes.shape[1])], -1)  # (B, L, A)
    n_copies = (tokens >= 0).sum(-1)  # padded copies (-1) do not count
    allowed = (classes.sum(-1) == n_copies.unsqueeze(-1)) & (
        classes >= observed.unsqueeze(-2)).all(-1)
    logits = logits.float().masked_fill(~allowed, float("-inf"))
    fill = classes[logits.argmax(-1)] - observed  # (B, L, A) alleles for the missing copies

    # The k-th missing copy of a locus gets the k-th allele of `fill` in sorted order.
    missing_copy = tokens == 0
    rank = missing_copy.long().cumsum(-1) - 1  # (B, L, P)
    ends = fill.cumsum(-1)  # (B, L, A)
    allele = (ends.unsqueeze(-2) <= rank.unsqueeze(-1)).sum(-1)  # (B, L, P)
    filled = torch.where(missing_copy, allele + 1, tokens)
    filled = torch.where(y_mask.unsqueeze(-1), filled, tokens)
    out.scatter_(1, y_pos.unsqueeze(-1).expand_as(filled), filled.to(out.dtype))
    return out


def impute(
    ckpt: str | os.PathLike,
    store: str | os.PathLike | xr.Dataset,
    out_store: str | os.PathLike,
    *,
    batch_size: int = 16,
    force: bool = False,
    progress: bool = True,
    num_workers: int = 0,
    memory: str | int | None = None,
) -> xr.Dataset:
    """Write `out_store`: `store` with missing calls imputed by the model in `ckpt`.
    `memory`: a budget ("2GB"; default: half the free memory) that caps the batch size."""
    model, info, _ = load_model(ckpt)
    if info.task != "masked":  # only masked pretraining trains the read-outs used here
        raise InputFormatError(ckpt, f"a {info.task} checkpoint; imputation needs one from "
                               "masked pretraining (gperceiver pretrain --task masked)")
    ds = open_view(store)
    info.check_store(ds, store_name(store))
    check_writable(out_store, force)
    n_samples = int(ds.sizes[schema.SAMPLES])
    v_chunk, s_chunk = (int(c) for c in ds["call_genotype"].data.chunksize[:2])
    window = None
    trained = info.params
    if trained.model.input_window and trained.prop_x < 1:  # as in pretraining
        window = task_sizes("masked", int(ds.sizes[schema.VARIANTS]), trained.prop_x,
                            trained.prop_y)[0]
    batch_size = inference_batch(memory, n_loci=window or int(ds.sizes[schema.VARIANTS]),
                                 batch_size=batch_size)
    loader = make_loader(store, "plain", batch_size=batch_size, shuffle=False, prop_x=1.0,
                         num_workers=num_workers)
    attrs = {k: v for k, v in ds.attrs.items() if k not in ("ploidy", "n_alleles")}
    attrs.update(imputed_with=Path(ckpt).name)
    with atomic_output(out_store, force) as tmp:
        calls = create_store(
            tmp,
            sample_id=ds["sample_id"].values, variant_id=ds["variant_id"].values,
            contig_id=ds["contig_id"].values, variant_contig=ds["variant_contig"].values,
            variant_position=ds["variant_position"].values,
            variant_allele=ds["variant_allele"].values,
            position_attrs=ds["variant_position"].attrs,
            ploidy=int(ds.sizes[schema.PLOIDY]), n_alleles=int(ds.sizes[schema.ALLELES]),
            samples_chunk=s_chunk, variants_chunk=v_chunk, attrs=attrs,
        )
        writer = ChunkWriter({"calls": (calls, 1)}, s_chunk)
        bar = _progress(n_samples, progress)
        for batch in loader:
            tokens = impute_batch(model, batch["x_alleles"], batch["x_index"], window)
            writer.put(batch["sample_index"].numpy(),
                       {"calls": (tokens - 1).numpy().astype(calls.dtype)})
            bar.update(len(tokens))
        bar.close()
        writer.flush()
        finish_store(tmp)
    return open_store(out_store)


def _progress(total: int, enabled: bool):
    from gperceiver.progress import progress_bar

    return progress_bar(total, "impute", "sample", enabled)
