"""A trained encoder run over every sample of a store, batch by batch, in store order.

Shared by training (the marker path's latent kernel, calibrating the Perceiver's
share), prediction and `embed`: it sits between the loader and the model and
writes nothing itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gperceiver.data.loader import make_loader
from gperceiver.progress import progress_bar
from gperceiver.store import Store, open_view, schema
from gperceiver.store.chunk_writer import ChunkWriter

DECLARED = schema.EMBEDDING_VARIABLES


def encode_latents(model, store: Store, batch_size: int = 64,
                   progress: bool = False) -> np.ndarray:
    """Every sample's latents (samples, latents, embedding) under `model`'s encoder
    (evaluation mode), in store order."""
    n = int(open_view(store).sizes[schema.SAMPLES])
    p = model.config
    arrays = {"sample_embedding": np.zeros((n, p.latent_dim),
                                           DECLARED["sample_embedding"].dtype),
              "sample_latents": np.zeros((n, p.num_latents, p.latent_dim),
                                         DECLARED["sample_latents"].dtype)}
    encode_samples(model.eval(), store, arrays, batch_size, progress, label="latents")
    return arrays["sample_latents"]


def encode_samples(model, store: Store, arrays: dict[str, Any], batch_size: int,
                   progress: bool, rows_per_write: int = 512, label: str = "embed") -> None:
    """Encode every sample (all loci) and write its rows into `arrays` (numpy or zarr):
    `sample_embedding` (the latents' mean) and, when present, `sample_latents`;
    `label` names the progress bar."""
    loader = make_loader(store, "plain", batch_size=batch_size, prop_x=1.0, shuffle=False)
    device = next(model.parameters()).device
    sink = ChunkWriter({name: (array, 0) for name, array in arrays.items()}, rows_per_write)
    bar = progress_bar(len(loader.dataset.selected), label, "samples", progress)
    with torch.inference_mode():
        for batch in loader:
            lat = model.encode(batch["x_alleles"].to(device), batch["x_index"].to(device))
            lat = lat.float()
            rows = {"sample_embedding": lat.mean(1)}
            if "sample_latents" in arrays:
                rows["sample_latents"] = lat
            sink.put(batch["sample_index"].numpy(),
                     {k: v.cpu().numpy() for k, v in rows.items()})
            bar.update(len(batch["sample_index"]))
    bar.close()
    sink.flush()


@torch.no_grad()
def head_outputs(model, head, store: Store, *, batch_size: int, seed: int,
                 samples: np.ndarray | None = None, progress: bool = True,
                 label: str = "predict") -> np.ndarray:
    """A finetuning head's raw outputs (samples, blocks, outputs) float32 for every sample
    of `store` (or those at `samples`, the others NaN)."""
    n = int(open_view(store).sizes[schema.SAMPLES])
    # every sample, here: also after a DDP fit, whose process group is still up
    loader = make_loader(store, "plain", batch_size=batch_size, shuffle=False, prop_x=1.0,
                         seed=seed, rank=0, world_size=1, samples=samples)
    out = None  # (n, blocks, outputs): the outputs' count is the head's (ordinal: K - 1)
    bar = progress_bar(n if samples is None else len(samples), label, "samples", progress)
    for batch in loader:
        rows = batch["sample_index"].numpy()
        values = head(model, batch["x_alleles"], batch["x_index"]).float().numpy()
        if out is None:
            out = np.full((n, *values.shape[1:]), np.nan, np.float32)
        out[rows] = values
        bar.update(len(rows))
    bar.close()
    if out is None:  # nothing asked for
        out = np.full((n, head.n_blocks, head.n_out), np.nan, np.float32)
    return out
