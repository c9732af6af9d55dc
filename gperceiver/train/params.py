"""Training settings in one dataclass that holds the model's config; loaded from JSON
and overridden by flags.

A params file is flat: architecture keys (`gperceiver.model.config.ModelConfig`) and
training keys side by side. `test_data/params.json` carries every key with its
default. Unknown keys, wrong types and out-of-range values are refused with one
line naming the file and key. The original tool's key names are kept where they
still apply (`nalleles` counts allele tokens including 0 = missing, as in
`gen_allele_decoder`).
"""

from __future__ import annotations

import json
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gperceiver.choices import HEADS, OBJECTIVES
from gperceiver.errors import InputFormatError, InputNotFoundError, UsageError
from gperceiver.model.config import ARCHITECTURE, ModelConfig, setting
from gperceiver.train.original_params import MAPPING, from_original, is_original


@dataclass
class Params:
    """Training settings, and the architecture they train (`model`).

    Build one from flat settings with `Params.build(latent_dim=64, epochs=10)` (a params
    file's keys, validated); `replace` takes flat keys too.
    """

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"model": True})
    position_embed_trainable: bool = setting(
        True, "learned: train the per-locus vectors; fourier: train the frequencies")
    dropout: float = setting(0.0, "dropout in attention outputs and feed-forward layers",
                             low=0.0, high=0.9)
    # -- pretraining
    contrastive: bool = setting(False, "pretrain on the twinned contrastive task by default")
    contrastive_weight: float = setting(
        0.0, "contrastive task: weight of the allele-reconstruction loss of each twin beside "
        "the shared-allele loss (the original's meaning: 0 = contrast alone, 1 = equal)",
        low=0.0)
    prop_x: float = setting(1.0, "proportion of loci given as input (bounds attention cost)",
                            low=0.0, high=1.0, low_open=True)
    prop_y: float = setting(0.1, "proportion of the input loci drawn as pretraining targets "
                            "(hidden in place, as missing calls)",
                            low=0.0, high=1.0, low_open=True, high_open=True)
    frequency_scaler: float = setting(
        1.0, "exponent on target weights (prod over copies of 1 - allele frequency); "
        "0: uniform", low=0.0)
    # -- finetuning
    linear: bool = setting(
        True, "regression: fit the marker path first (marker variances pooled over blocks, "
        "an interaction kernel and, with a pretrained encoder, a latent kernel; shares by "
        "REML) and train the Perceiver on what it leaves; false: the Perceiver alone")
    head: str = setting("latent", "finetuning head: 'latent' (one query per block) or 'pool'",
                        choices=HEADS)
    objective: str = setting("regression", "finetuning objective shared by all blocks",
                             choices=OBJECTIVES)
    # -- optimisation
    lr: float = setting(1e-3, "AdamW learning rate", low=0.0, low_open=True)
    weight_decay: float = setting(0.01, "AdamW weight decay", low=0.0)
    warmup_steps: int = setting(0, "linear learning-rate warm-up steps", low=0)
    lr_patience: int = setting(0, "halve the learning rate after this many epochs without a "
                               "better validation loss (0: never)", low=0)
    batch_size: int = setting(16, "samples per batch", low=1)
    epochs: int = setting(100, "maximum epochs", low=1)
    patience: int = setting(3, "early stopping: epochs without a better validation loss", low=1)
    grad_clip: float = setting(1.0, "gradient norm clipping (0: off)", low=0.0)
    precision: str = setting("32-true", "Lightning precision",
                             choices=("32-true", "bf16-mixed", "16-mixed", "64-true"))
    seed: int = setting(0, "random seed (sampling, initialisation, order)", low=0)
    val_fraction: float = setting(0.1, "fraction of samples held out for validation",
                                  low=0.0, high=0.9)
    num_workers: int = setting(0, "DataLoader worker processes", low=0)

    def to_dict(self) -> dict[str, Any]:
        """Flat settings, as a params file holds them: the architecture's, then training's."""
        d = {k: v for k, v in asdict(self).items() if k != "model"}
        return {**self.model.to_dict(), **d}

    @classmethod
    def build(cls, **settings: Any) -> Params:
        """Validated Params from flat settings (a params file's keys)."""
        return params_from_dict(settings, where="arguments")

    @property
    def given(self) -> frozenset[str]:
        """The keys a file or flag set (not left at their defaults)."""
        return getattr(self, "_given", frozenset())

    def replace(self, **changes: Any) -> Params:
        """A validated copy with flat `changes` applied (None values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        out = params_from_dict({**self.to_dict(), **changes}, where="command line")
        out._given = self.given | set(changes)
        return out


def _settings() -> dict[str, tuple[Any, Any]]:
    """Every flat setting: name -> (dataclass field, type hint), architecture first."""
    model_hints = typing.get_type_hints(ModelConfig)
    hints = typing.get_type_hints(Params)
    out = {f.name: (f, model_hints[f.name]) for f in fields(ModelConfig)}
    out.update({f.name: (f, hints[f.name]) for f in fields(Params) if f.name != "model"})
    return out


def _check_type(where: str, key: str, value: Any, hint: Any) -> Any:
    """Return `value` converted to `hint`, or raise naming `where` and `key`."""
    args = typing.get_args(hint)
    optional = type(None) in args and (typing.get_origin(hint) in (typing.Union, types.UnionType))
    if optional:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    ok = False
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value)
    elif hint is str:
        ok = isinstance(value, str)
    if not ok:
        name = hint.__name__ + (" or null" if optional else "")
        raise _error(where, key, f"expected {name}, got {json.dumps(value)}")
    return value


def _error(where: str, key: str, problem: str) -> Exception:
    if where in ("command line", "arguments"):
        return UsageError(f"{key}: {problem}")
    return InputFormatError(where, f"key '{key}': {problem}")


def params_from_dict(d: dict[str, Any], *, where: str = "params") -> Params:
    """Build validated `Params` from flat settings; unknown keys are an error."""
    known = _settings()
    unknown = [k for k in d if k not in known]
    if unknown:
        raise _error(where, unknown[0], f"unknown parameter (known: {', '.join(known)})")
    values = {}
    for name, (f, hint) in known.items():
        if name not in d:
            values[name] = f.default
            continue
        value = _check_type(where, name, d[name], hint)
        meta = f.metadata
        if value is not None and not isinstance(value, (bool, str)):
            low, high = meta.get("low"), meta.get("high")
            if low is not None and (value < low or (meta.get("low_open") and value == low)):
                op = ">" if meta.get("low_open") else ">="
                raise _error(where, name, f"must be {op} {low}, got {value}")
            if high is not None and (value > high or (meta.get("high_open") and value == high)):
                op = "<" if meta.get("high_open") else "<="
                raise _error(where, name, f"must be {op} {high}, got {value}")
        if meta.get("choices") and value not in meta["choices"]:
            raise _error(where, name, f"must be one of {', '.join(meta['choices'])}, "
                                      f"got {json.dumps(value)}")
        values[name] = value
    model = ModelConfig(**{k: values.pop(k) for k in ARCHITECTURE})
    for key, problem in model.problems():
        raise _error(where, key, problem)
    params = Params(model=model, **values)
    params._given = frozenset(k for k, v in d.items() if v is not None)
    return params


def load_params(path: str | os.PathLike | None = None, *, original: bool = False,
                **overrides: Any) -> Params:
    """Params from a JSON file (defaults for absent keys), then `overrides` (None: skip).

    A file in the original tool's dialect (one of its own keys or values) is mapped
    to ours (`original_params`); with `original` (the legacy scripts), so is a file
    of keys the original knows (some of which ours share). Our own files validate
    strictly.
    """
    d = read_params_file(path) if path is not None else {}
    ours = frozenset(_settings())
    if d and (is_original(d, ours) or (original and set(d) <= set(MAPPING))):
        d = from_original(d, str(path), ours)
    params = params_from_dict(d, where=str(path) if path is not None else "params")
    return params.replace(**overrides) if overrides else params


def read_params_file(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object of a params file, with located errors."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputNotFoundError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError) as e:
        raise InputNotFoundError(f"{path}: {e.strerror}") from None
    try:
        d = json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
    except json.JSONDecodeError as e:
        raise InputFormatError(path, f"not valid JSON: {e.msg}", line=e.lineno,
                               column=e.colno) from None
    except UnicodeDecodeError:
        raise InputFormatError(path, "not UTF-8 text") from None
    if not isinstance(d, dict):
        raise InputFormatError(path, "expected a JSON object of parameters")
    return d


def _no_duplicate_keys(path: Path):
    """A json object hook refusing a key given twice (JSON would keep the last silently)."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise InputFormatError(path, f"key '{key}' is given twice")
            seen[key] = value
        return seen

    return hook


def params_help() -> dict[str, str]:
    """Each key's help text (for documentation and --help)."""
    return {name: f.metadata["help"] for name, (f, _) in _settings().items()}
