"""Every hyper-parameter in one dataclass, loaded from JSON and overridden by flags.

`test_data/params.json` carries every key with its default. Unknown keys, wrong
types and out-of-range values are refused with one line naming the file and key.
The original tool's key names are kept where they still apply (`nalleles` counts
allele tokens including 0 = missing, as in `gen_allele_decoder`).
"""

from __future__ import annotations

import json
import math
import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gperceiver.choices import HEADS, OBJECTIVES
from gperceiver.errors import InputFormatError, InputNotFoundError, UsageError
from gperceiver.train.original_params import MAPPING, from_original, is_original


def _p(default: Any, help: str, *, low: float | None = None, high: float | None = None,
       choices: tuple | None = None, low_open: bool = False, high_open: bool = False,
       arch: bool = False) -> Any:
    """A dataclass field with its help text and allowed range or choices; `arch`: it
    shapes the network or its attention masks (a pretrained checkpoint's value rules)."""
    meta = {"help": help, "low": low, "high": high, "choices": choices, "low_open": low_open,
            "high_open": high_open, "arch": arch}
    return field(default=default, metadata=meta)


@dataclass
class Params:
    """The hyper-parameters of the model, its pretraining and its finetuning."""

    # -- data (taken from the store when null)
    nalleles: int | None = _p(
        None, "allele tokens per copy including 0 = missing (store alleles + 1); "
        "null: from the store", low=2, arch=True)
    ploidy: int | None = _p(None, "copies per genotype; null: from the store", low=1,
                            arch=True)
    # -- embeddings
    allele_embed_dim: int = _p(32, "allele embedding width (summed over copies)", low=1,
                               arch=True)
    locus_allele_embed: bool = _p(
        True, "per-locus allele embeddings at the input (which allele sits where) and "
        "per-locus allele read-outs in the masked decoder", arch=True)
    position_embed_kind: str = _p(
        "learned", "'learned' (one vector per locus) or 'fourier' (of the within-contig "
        "position, plus a contig embedding)", choices=("learned", "fourier"), arch=True)
    position_embed_dim: int = _p(32, "position embedding width (even for fourier)", low=2,
                                 arch=True)
    position_embed_trainable: bool = _p(
        True, "learned: train the per-locus vectors; fourier: train the frequencies")
    position_embed_combine: str = _p(
        "concat", "'concat' or 'add' allele and position embeddings (add: equal widths)",
        choices=("concat", "add"), arch=True)
    # -- encoder
    num_latents: int = _p(64, "latent array length", low=1, arch=True)
    local_latents: bool = _p(
        True, "latent i reads only the i-th contiguous run of loci and decoders read the "
        "latents around their locus (self-attention stays global): learns LD fast", arch=True)
    latent_dim: int = _p(128, "latent width", low=1, arch=True)
    projection_dim: int = _p(64, "query/key/value width of the cross-attention", low=1,
                             arch=True)
    num_cross_attention_heads: int = _p(1, "heads of the cross-attention", low=1, arch=True)
    num_self_attention_heads: int = _p(4, "heads of each self-attention block", low=1,
                                       arch=True)
    num_self_attention: int = _p(4, "self-attention blocks per encoder iteration", low=0,
                                 arch=True)
    num_encode_iters: int = _p(1, "cross-attention + self-attention iterations", low=1,
                               arch=True)
    share_weights: bool = _p(False, "iterations after the first share their weights", arch=True)
    feedforward_dim: int = _p(256, "hidden width of every feed-forward layer", low=1,
                              arch=True)
    dropout: float = _p(0.0, "dropout in attention outputs and feed-forward layers",
                        low=0.0, high=0.9)
    # -- decoders (Perceiver IO)
    output_dim: int = _p(64, "decoder query width", low=1, arch=True)
    num_decode_iters: int = _p(1, "decoder cross-attention layers", low=1, arch=True)
    # -- pretraining
    contrastive: bool = _p(False, "pretrain on the twinned contrastive task by default")
    contrastive_weight: float = _p(
        0.0, "contrastive task: weight of the allele-reconstruction loss of each twin beside "
        "the shared-allele loss (the original's meaning: 0 = contrast alone, 1 = equal)",
        low=0.0)
    prop_x: float = _p(1.0, "proportion of loci given as input (bounds attention cost)",
                       low=0.0, high=1.0, low_open=True)
    input_window: bool = _p(
        False, "pretraining with prop_x < 1: the input loci are one contiguous window "
        "(a random start per batch) instead of scattered; impute then slides windows of "
        "that length over the panel. A step costs the same however large the panel, and "
        "local latents split the window, not the panel", arch=True)
    prop_y: float = _p(0.1, "proportion of the input loci drawn as pretraining targets "
                       "(hidden in place, as missing calls)",
                       low=0.0, high=1.0, low_open=True, high_open=True)
    frequency_scaler: float = _p(
        1.0, "exponent on target weights (prod over copies of 1 - allele frequency); "
        "0: uniform", low=0.0)
    # -- finetuning
    linear: bool = _p(
        True, "regression: fit the marker path first (marker variances pooled over blocks, "
        "an interaction kernel and, with a pretrained encoder, a latent kernel; shares by "
        "REML) and train the Perceiver on what it leaves; false: the Perceiver alone")
    head: str = _p("latent", "finetuning head: 'latent' (one query per block) or 'pool'",
                   choices=HEADS)
    objective: str = _p("regression", "finetuning objective shared by all blocks",
                        choices=OBJECTIVES)
    # -- optimisation
    lr: float = _p(1e-3, "AdamW learning rate", low=0.0, low_open=True)
    weight_decay: float = _p(0.01, "AdamW weight decay", low=0.0)
    warmup_steps: int = _p(0, "linear learning-rate warm-up steps", low=0)
    lr_patience: int = _p(0, "halve the learning rate after this many epochs without a "
                          "better validation loss (0: never)", low=0)
    batch_size: int = _p(16, "samples per batch", low=1)
    epochs: int = _p(100, "maximum epochs", low=1)
    patience: int = _p(3, "early stopping: epochs without a better validation loss", low=1)
    grad_clip: float = _p(1.0, "gradient norm clipping (0: off)", low=0.0)
    precision: str = _p("32-true", "Lightning precision",
                        choices=("32-true", "bf16-mixed", "16-mixed", "64-true"))
    seed: int = _p(0, "random seed (sampling, initialisation, order)", low=0)
    val_fraction: float = _p(0.1, "fraction of samples held out for validation",
                             low=0.0, high=0.9)
    num_workers: int = _p(0, "DataLoader worker processes", low=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def given(self) -> frozenset[str]:
        """The keys a file or flag set (not left at their defaults)."""
        return getattr(self, "_given", frozenset())

    def replace(self, **changes: Any) -> Params:
        """A validated copy with `changes` applied (None values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        d = self.to_dict()
        d.update(changes)
        out = params_from_dict(d, where="command line")
        out._given = self.given | set(changes)
        return out


ARCHITECTURE = tuple(f.name for f in fields(Params) if f.metadata["arch"])


def _types() -> dict[str, Any]:
    return typing.get_type_hints(Params)


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
    """Build validated `Params` from a mapping; unknown keys are an error."""
    hints = _types()
    known = {f.name: f for f in fields(Params)}
    unknown = [k for k in d if k not in known]
    if unknown:
        raise _error(where, unknown[0], f"unknown parameter (known: {', '.join(known)})")
    values = {}
    for name, f in known.items():
        if name not in d:
            values[name] = f.default if f.default is not MISSING else None
            continue
        value = _check_type(where, name, d[name], hints[name])
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
    params = Params(**values)
    _check_consistency(params, where)
    params._given = frozenset(k for k, v in d.items() if v is not None)
    return params


def _check_consistency(p: Params, where: str) -> None:
    if p.position_embed_kind == "fourier" and p.position_embed_dim % 2:
        raise _error(where, "position_embed_dim", "must be even for fourier embeddings")
    if p.position_embed_combine == "add" and p.position_embed_dim != p.allele_embed_dim:
        raise _error(where, "position_embed_dim",
                     "must equal allele_embed_dim when position_embed_combine is 'add'")
    if p.latent_dim % p.num_self_attention_heads:
        raise _error(where, "num_self_attention_heads", "must divide latent_dim")
    if p.projection_dim % p.num_cross_attention_heads:
        raise _error(where, "num_cross_attention_heads", "must divide projection_dim")


def load_params(path: str | os.PathLike | None = None, *, original: bool = False,
                **overrides: Any) -> Params:
    """Params from a JSON file (defaults for absent keys), then `overrides` (None: skip).

    A file in the original tool's dialect (one of its own keys or values) is mapped
    to ours (`original_params`); with `original` (the legacy scripts), so is a file
    of keys the original knows (some of which ours share). Our own files validate
    strictly.
    """
    d = read_params_file(path) if path is not None else {}
    ours = frozenset(f.name for f in fields(Params))
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
    return {f.name: f.metadata["help"] for f in fields(Params)}
