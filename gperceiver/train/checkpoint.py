"""Checkpoints: read safely (weights only) and rebuild the model they hold.

A checkpoint is Lightning's dict plus a "gperceiver" entry with everything needed
to rebuild the model without the training run: the model's config ("model"), the
training settings it was trained with ("params") and the store's variant table
(ids, positions, contigs), so a store with other variants can be refused.
Checkpoints written before the config had its own entry hold it inside "params".
Only tensors, numbers, strings, lists and dicts are saved, so
`torch.load(weights_only=True)` reads it; a pickle that would run code is refused.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from gperceiver.atomic import atomic_output
from gperceiver.errors import InputFormatError, InputNotFoundError
from gperceiver.model import GPerceiver
from gperceiver.model.config import ARCHITECTURE
from gperceiver.runtime import flush_denormals
from gperceiver.store import schema
from gperceiver.train.params import Params, params_from_dict

FORMAT = 2  # 2: the model config apart from the training settings (1: inside them)
KEY = "gperceiver"
FINETUNE_KEY = "gperceiver_finetune"  # a fit's head, target and marker path
BEST, LAST = "best.ckpt", "last.ckpt"  # a run folder's checkpoints, the one to use first


def checkpoint_path(path: str | os.PathLike) -> Path:
    """`path` itself, or for a run folder its best checkpoint (else its last)."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in (BEST, LAST):
        if (path / name).is_file():
            return path / name
    raise InputNotFoundError(f"{path}: run folder without {BEST} or {LAST}")


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict, read with `weights_only=True`; code-running pickles refused.

    `mmap`: map the file instead of reading it, so what is never read (a training
    run's optimiser state, as large as the weights twice over) takes no memory."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        lines = [s.strip() for s in str(e).splitlines() if s.strip()]
        why = next((s for s in lines if "GLOBAL" in s or "Unsupported" in s),
                   lines[0] if lines else type(e).__name__)
        raise InputFormatError(
            path, "refused: the checkpoint holds objects other than plain weights "
            f"(loading it could run code): {why}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise InputFormatError(path, f"not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict):
        raise InputFormatError(path, "not a gperceiver checkpoint (no dict inside)")
    return ckpt


def write_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """torch.save `ckpt` straight into a temporary sibling of `path`, moved into place
    when complete: no half-written checkpoint, and no in-memory copy of it."""
    with atomic_output(path, force=True) as tmp:
        torch.save(ckpt, tmp)


@dataclass
class ModelInfo:
    """What a checkpoint says about its model and the store it was trained on."""

    params: Params
    task: str
    variant_id: list[str]
    variant_position: np.ndarray
    variant_contig: np.ndarray
    contig_id: list[str]

    def to_dict(self) -> dict[str, Any]:
        training = {k: v for k, v in self.params.to_dict().items() if k not in ARCHITECTURE}
        return {
            "format": FORMAT,
            "model": self.params.model.to_dict(),
            "params": training,
            "task": self.task,
            "variant_id": list(self.variant_id),
            "variant_position": torch.as_tensor(self.variant_position, dtype=torch.float64),
            "variant_contig": torch.as_tensor(self.variant_contig, dtype=torch.int64),
            "contig_id": list(self.contig_id),
        }

    @classmethod
    def from_store(cls, ds: xr.Dataset, params: Params, task: str) -> ModelInfo:
        return cls(
            params=params,
            task=task,
            variant_id=[str(v) for v in ds["variant_id"].values.tolist()],
            variant_position=np.asarray(ds["variant_position"].values, dtype=np.float64),
            variant_contig=np.asarray(ds["variant_contig"].values, dtype=np.int64),
            contig_id=[str(c) for c in ds["contig_id"].values.tolist()],
        )

    def check_store(self, ds: xr.Dataset, where: str) -> None:
        """Refuse a store whose variants or ploidy/alleles differ from the model's."""
        ids = [str(v) for v in ds["variant_id"].values.tolist()]
        if ids != self.variant_id:
            if len(ids) != len(self.variant_id):
                problem = f"{len(ids)} variants, the model was trained on {len(self.variant_id)}"
            else:
                i = next(i for i, (a, b) in enumerate(zip(ids, self.variant_id, strict=True))
                         if a != b)
                problem = (f"variant {i} is '{ids[i]}', the model was trained with "
                           f"'{self.variant_id[i]}' there")
            raise InputFormatError(where, f"not the model's variants: {problem}")
        ploidy, n_alleles = int(ds.sizes[schema.PLOIDY]), int(ds.sizes[schema.ALLELES])
        config = self.params.model
        if ploidy != config.ploidy or n_alleles + 1 != config.nalleles:
            raise InputFormatError(
                where, f"ploidy {ploidy} with {n_alleles} alleles; the model expects ploidy "
                f"{config.ploidy} with {config.nalleles - 1} alleles")


def model_info(ckpt: dict[str, Any], path: str | os.PathLike) -> ModelInfo:
    """The ModelInfo stored in a checkpoint dict."""
    meta = ckpt.get(KEY)
    if not isinstance(meta, dict) or meta.get("format") not in (1, FORMAT):
        raise InputFormatError(path, "not a gperceiver checkpoint (no model description)")
    try:
        return ModelInfo(
            params=params_from_dict({**meta["params"], **meta.get("model", {})},
                                    where=str(path)),
            task=str(meta["task"]),
            variant_id=list(meta["variant_id"]),
            variant_position=meta["variant_position"].numpy(),
            variant_contig=meta["variant_contig"].numpy(),
            contig_id=list(meta["contig_id"]),
        )
    except (KeyError, AttributeError, TypeError) as e:
        raise InputFormatError(path, f"damaged model description ({e})") from None


# The decoders each task trains (contrastive also scores the twins' own genotypes);
# finetuning ("fit") decodes nothing.
TASK_DECODERS = {"masked": ("masked",), "contrastive": ("contrastive", "masked")}


def build_model(info: ModelInfo) -> GPerceiver:
    """A freshly initialised GPerceiver for `info`, with the decoders its task trains."""
    return GPerceiver(info.params.model, torch.from_numpy(info.variant_position),
                      torch.from_numpy(info.variant_contig), len(info.contig_id),
                      dropout=info.params.dropout,
                      position_trainable=info.params.position_embed_trainable,
                      decoders=TASK_DECODERS.get(info.task, ()))


def load_model(path: str | os.PathLike, prefix: str = "model."):
    """(GPerceiver in eval mode, ModelInfo, checkpoint dict) from a checkpoint file, or
    a run folder's (`checkpoint_path`).

    The file is mapped and the model's weights are its pages (`assign`), not a copy:
    a model as large as its per-locus tables is held once, and a training run's
    optimiser state is never read. Training them changes private copies only."""
    path = checkpoint_path(path)
    ckpt = load_checkpoint(path, mmap=True)
    info = model_info(ckpt, path)
    flush_denormals()  # denormal weights would slow a CPU tenfold
    model = build_model(info)
    state = {k[len(prefix):]: v for k, v in ckpt.get("state_dict", {}).items()
             if k.startswith(prefix)}
    try:
        model.load_weights(state, assign=True)
    except RuntimeError as e:
        # torch's first line only says "Error(s) in loading state_dict"; the next says which
        reasons = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
        reason = (reasons[0] if reasons else str(e).strip())[:300]
        raise InputFormatError(path, f"weights do not fit the model: {reason}") from None
    return model.eval(), info, ckpt
