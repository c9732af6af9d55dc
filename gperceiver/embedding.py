"""Embeddings of a trained encoder: one vector per sample and one per locus, as xarray.

`embed(ckpt, store)` (also `gperceiver.embed`) streams every sample of the store
through the loader's "plain" task (all loci, store order, no shuffling), encodes it,
and returns an `xarray.Dataset`:

- `sample_embedding (samples, embedding)`: the latents after the encoder,
  mean-pooled over the latent array;
- `sample_latents (samples, latents, embedding)`: the latents themselves (only
  with `latents=True`: num_latents times larger);
- `variant_embedding (variants, position_embedding)`: each locus' position
  embedding (learned vector, or Fourier features plus contig embedding);
- `sample_id`, `variant_id`, `variant_contig`, `variant_position`, `contig_id`
  exactly as in the store (same names, dims and order), so the embedding merges
  with the store (`xr.merge([store, emb])`) and selects like it.

Every array takes its dims and dtype from `schema.EMBEDDING_VARIABLES`.

With `out`, arrays are written batch by batch into a Zarr store that appears
only when complete (memory is bounded by the loader's read group and one output
chunk);
the Dataset returned is that store opened lazily. Each sample's embedding depends
on that sample alone (evaluation mode, no dropout), whatever the batch size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from gperceiver import __version__
from gperceiver.atomic import atomic_output, check_writable
from gperceiver.encode import encode_samples
from gperceiver.errors import UsageError
from gperceiver.memory import inference_batch
from gperceiver.store import Store, StoreView, resolve, schema, store_name
from gperceiver.store.write import FLOAT_COMPRESSOR, ZARR_FORMAT

DECLARED = schema.EMBEDDING_VARIABLES
SAMPLES_CHUNK = 512  # output rows per chunk, and per write
VARIANTS_CHUNK = 65_536


def embed(
    ckpt: str | os.PathLike,
    store: Store,
    out: str | os.PathLike | None = None,
    *,
    latents: bool = False,
    batch_size: int = 64,
    device: str = "cpu",
    force: bool = False,
    progress: bool = False,
    memory: str | int | None = None,
) -> xr.Dataset:
    """Embed every sample and locus of `store` with the encoder of checkpoint `ckpt`.

    `ckpt` is a pretraining or fit checkpoint, or a run folder (its best.ckpt, else
    last.ckpt). `device`: a torch device ("cpu", "cuda", ...). `memory`: a budget
    ("2GB"; default: half the free memory) that caps the batch size.
    """
    import torch

    from gperceiver.train.checkpoint import checkpoint_path, load_model

    if out is not None:
        check_writable(out, force)
    store = resolve(store)  # opened once: checked, labelled and read from this
    ds = store.ds
    ckpt = checkpoint_path(ckpt)
    model, info, _ = load_model(ckpt)
    info.check_store(ds, store_name(store))
    batch_size = inference_batch(memory, n_loci=int(ds.sizes[schema.VARIANTS]),
                                 batch_size=batch_size)
    try:
        model = model.to(torch.device(device))
    except (RuntimeError, AssertionError) as e:
        raise UsageError(f"device '{device}' is not usable here ({e})") from None
    labels = _labels(store, ckpt, info.params)
    n_samples = int(ds.sizes[schema.SAMPLES])
    shapes = {"sample_embedding": (n_samples, info.params.model.latent_dim)}
    if latents:
        shapes["sample_latents"] = (n_samples, info.params.model.num_latents,
                                    info.params.model.latent_dim)
    if out is None:
        arrays = {name: np.zeros(shape, DECLARED[name].dtype) for name, shape in shapes.items()}
        encode_samples(model, store, arrays, batch_size, progress, SAMPLES_CHUNK)
        arrays["variant_embedding"] = variant_embedding(model)
        return labels.assign({name: (DECLARED[name].dims, array)
                              for name, array in arrays.items()})
    with atomic_output(out, force) as tmp:
        labels.to_zarr(tmp, mode="w", zarr_format=ZARR_FORMAT, consolidated=False)
        group = zarr.open_group(tmp, mode="a", zarr_format=ZARR_FORMAT)
        arrays = {name: _create(group, name, shape, (min(SAMPLES_CHUNK, shape[0]), *shape[1:]))
                  for name, shape in shapes.items()}
        _write_variant_embedding(group, model)
        encode_samples(model, store, arrays, batch_size, progress, SAMPLES_CHUNK)
        zarr.consolidate_metadata(tmp)
    return xr.open_zarr(out)


def _labels(store: StoreView, ckpt, params) -> xr.Dataset:
    """The store's sample and variant labels (loaded: they are small) and provenance."""
    ds, data = store.ds, {}
    for name in schema.EMBEDDING_LABELS:
        values = np.asarray(ds[name].values)
        if schema.is_string_dtype(values.dtype):
            values = np.asarray(values.tolist(), dtype=object)
        data[name] = (ds[name].dims, values)
    return xr.Dataset(coords=data, attrs={
        "checkpoint": str(Path(ckpt).absolute()),
        "store": store.name if store.name != store.path else str(Path(store.path).absolute()),
        "pooling": "mean over the latents",
        "position_embed_kind": params.model.position_embed_kind,
        "gperceiver_version": __version__,
    })


def _create(group: zarr.Group, name: str, shape: tuple[int, ...],
            chunks: tuple[int, ...]) -> zarr.Array:
    """An empty array for embedding variable `name`, with its declared dims and dtype."""
    var = DECLARED[name]
    return group.create_array(
        name, shape=shape, chunks=chunks, dtype=var.dtype, fill_value=np.nan,
        compressors=FLOAT_COMPRESSOR, attributes={"_ARRAY_DIMENSIONS": list(var.dims)},
    )


def variant_embedding(model, start: int = 0, stop: int | None = None) -> np.ndarray:
    """(variants, position_embedding): the position embedding of loci start..stop, of the
    declared dtype."""
    import torch

    stop = model.n_variants if stop is None else stop
    device = next(model.parameters()).device
    with torch.inference_mode():
        index = torch.arange(start, stop, device=device)
        position = model.embed.position(index).float().cpu().numpy()
    return position.astype(DECLARED["variant_embedding"].dtype, copy=False)


def _write_variant_embedding(group: zarr.Group, model) -> None:
    """The position embedding, written in variant chunks (10^7 loci stay bounded)."""
    n = model.n_variants
    first = variant_embedding(model, 0, min(n, 1))
    array = _create(group, "variant_embedding", (n, first.shape[1]),
                    (min(VARIANTS_CHUNK, n), first.shape[1]))
    for start in range(0, n, VARIANTS_CHUNK):
        stop = min(n, start + VARIANTS_CHUNK)
        array[start:stop] = variant_embedding(model, start, stop)
