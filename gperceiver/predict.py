"""Inference: a finetuned run or checkpoint read back, a store predicted, one table.

`Predictor.load` takes a `fit` checkpoint or run folder (its best.ckpt, else
last.ckpt). With a marker path (`linear`), a prediction is the path's plus the
Perceiver's output scaled per block, as `fit` calibrated it. `predict` is what
`gperceiver predict` runs: every sample of a store, every block, as an
`xarray.Dataset` and, with an output, a TSV.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from gperceiver.encode import encode_latents, head_outputs
from gperceiver.errors import InputFormatError
from gperceiver.linear import LinearPath
from gperceiver.memory import inference_batch
from gperceiver.model.heads import (
    FinetuneHead,
    Target,
    build_head,
    head_predict,
    head_probabilities,
)
from gperceiver.outputs import prediction_values, write_predictions
from gperceiver.runtime import reuse_freed_memory
from gperceiver.store import Store, resolve, schema, store_name
from gperceiver.train.checkpoint import (
    FINETUNE_KEY,
    ModelInfo,
    build_model,
    checkpoint_path,
    load_model,
)


@dataclass
class Prediction:
    """Predictions (samples, blocks), NaN for samples not asked for."""

    predicted: np.ndarray
    probability: np.ndarray | None  # (samples, blocks, classes) when classifying
    linear: np.ndarray | None  # the marker path's share, when the model has one


class Predictor:
    """A finetuned model read back from a checkpoint, ready to predict a store."""

    def __init__(self, model: torch.nn.Module, head: FinetuneHead, info: ModelInfo,
                 target: Target, linear: LinearPath | None = None,
                 deep_scale: np.ndarray | None = None, deep_shift: np.ndarray | None = None):
        self.model, self.head, self.info, self.target = model.eval(), head.eval(), info, target
        self.linear = linear
        self.deep_scale = np.ones(target.n_blocks) if deep_scale is None else deep_scale
        # written since the shift was calibrated; earlier checkpoints added none
        self.deep_shift = np.zeros(target.n_blocks) if deep_shift is None else deep_shift
        self.latent_model = None  # the pretrained encoder the linear path's latents come from

    @classmethod
    def load(cls, path: str | os.PathLike) -> Predictor:
        """From a fit checkpoint, or a run folder holding best.ckpt (else last.ckpt)."""
        path = checkpoint_path(path)
        model, info, ckpt = load_model(path)
        meta = ckpt.get(FINETUNE_KEY)
        if not isinstance(meta, dict):
            raise InputFormatError(path, "not a finetuned model (no prediction head): "
                                   "run `gperceiver fit` first, or use it as --pretrained")
        target = Target.from_dict(meta)
        head = build_head(str(meta["head"]), info.params.model, target)
        state = {k[len("head."):]: v for k, v in ckpt["state_dict"].items()
                 if k.startswith("head.")}
        try:
            head.load_state_dict(state)
        except RuntimeError as e:
            raise InputFormatError(
                path, f"head weights do not fit: {str(e).splitlines()[0]}") from None
        linear = LinearPath.from_dict(meta["linear"]) if "linear" in meta else None
        scale, shift = (None if meta.get(k) is None else np.asarray(meta[k], np.float64)
                        for k in ("deep_scale", "deep_shift"))
        predictor = cls(model, head, info, target, linear, scale, shift)
        if "latent_encoder" in meta:
            predictor.latent_model = build_model(info)
            predictor.latent_model.load_weights(meta["latent_encoder"])
        return predictor

    def predict(self, store: Store, *,
                samples: np.ndarray | None = None, batch_size: int | None = None,
                latents: np.ndarray | None = None, progress: bool = True,
                memory: str | int | None = None) -> Prediction:
        """Predict every sample of `store` (or those at `samples`, the others NaN).

        With a marker path: its prediction plus the Perceiver's, shifted and scaled per
        block (`finetune`'s calibration on the validation lines).
        `latents`: the pretrained encoder's latents of every sample, when the caller
        has them already (else encoded here when the path reads them). `memory`: a
        budget ("2GB") that caps the batch size (`gperceiver.memory.inference_batch`).
        """
        store = resolve(store)
        ds = store.ds
        self.info.check_store(ds, store_name(store))
        asked = self.info.params.batch_size if batch_size is None else batch_size
        batch_size = inference_batch(memory, n_loci=int(ds.sizes[schema.VARIANTS]),
                                     batch_size=asked)
        deep, probs = self.predict_encoder(store, batch_size=batch_size, progress=progress,
                                           samples=samples)
        if self.linear is None:
            return Prediction(deep, probs, None)
        if self.linear.uses_latents and latents is None:
            latents = encode_latents(self.latent_model, store, batch_size=batch_size,
                                     progress=progress)
        linear = self.linear.predict(ds, latents, samples, progress)
        return Prediction(linear + self.deep_scale * (deep - self.deep_shift), probs, linear)

    def predict_encoder(self, store: Store, *, batch_size: int | None = None,
                        progress: bool = True, samples: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray | None]:
        """The Perceiver's own (predicted, probabilities) for every sample of `store` (or
        those at `samples`, the others NaN)."""
        reuse_freed_memory()
        p = self.info.params
        size = p.batch_size if batch_size is None else batch_size  # 0 is refused, not default
        outputs = head_outputs(self.model, self.head, store, batch_size=size, seed=p.seed,
                               samples=samples, progress=progress)
        objective = self.target.objective
        if objective == "regression":
            return self.target.regression_values(outputs), None
        out = torch.from_numpy(outputs)
        predicted = head_predict(objective, out).numpy()
        predicted[np.isnan(out[..., 0].numpy())] = np.nan  # samples not asked for stay NaN
        return predicted, head_probabilities(objective, out).numpy()


def predict(
    model: str | os.PathLike, store: Store,
    output: str | os.PathLike | None = None,
    *, batch_size: int | None = None, force: bool = False, progress: bool = True,
    memory: str | int | None = None,
) -> xr.Dataset:
    """Predict every sample of `store` for every block; write a TSV when `output` is given.
    `memory`: a budget ("2GB"; default: half the free memory) that caps the batch size.

    Returns a Dataset (samples, blocks) with `predicted` (and `probability`).
    """
    predictor = Predictor.load(model)
    store = resolve(store)
    result = predictor.predict(store, batch_size=batch_size, progress=progress, memory=memory)
    out = prediction_values(store.ds["sample_id"].values, predictor.target.blocks,
                            result.predicted, result.probability)
    if output is not None:
        write_predictions(out, output, force)
    return out
