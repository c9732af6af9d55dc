"""Phenotype TSV -> an `xarray.Dataset` aligned to a genotype store's samples.

The file is the original tool's: a header with at least `name response block`,
optionally `cv`, other columns ignored; one row per observation of genotype
`name` in block (environment, trait) `block`. As trials record them:

- a line may have several rows in a block (plots, reps, years): replicates are
  averaged, so every row counts and models and metrics see line means per block
  (`n_obs` says how many rows each mean has; a note says so); the replicates of
  a line in a block must share their cv fold;
- blocks are integers, gaps allowed (with a note), or names; either way the k-th
  block in sorted order is the model's output k, and the `block` coordinate keeps
  the file's labels (`block_table` writes the mapping).

The result has dims (samples, blocks) in the store's sample order:

- `response` float32, the line mean, NaN where a sample has no observation in a block;
- `n_obs` int32, the rows averaged into it;
- `cv` int32, the row's cross-validation fold, -1 where there is none.

With `cv=K`, rows whose cv is K form the validation set and all other observed
rows the training set (`split_masks`); a file without a cv column has no
validation set. Every malformed cell is reported as one `InputFormatError`
naming the file, line and column.
"""

from __future__ import annotations

import gzip
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from gperceiver.errors import GPerceiverWarning, InputFormatError, Note, UsageError
from gperceiver.inputs import open_decompressed
from gperceiver.store.schema import BLOCKS, PREDICTION_VARIABLES, SAMPLES

NO_CV = -1
REQUIRED_COLUMNS = ("name", "response", "block")
EMPTY_RESPONSES = frozenset({"", "na", "nan", "."})


class PhenotypeWarning(GPerceiverWarning):
    """Something in a phenotype file was skipped (empty responses, unknown names)."""


@dataclass(frozen=True)
class _Row:
    line: int
    name: str
    response: float
    block: str
    cv: int


# ---------------------------------------------------------------- reading rows


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, tab-separated fields) of every non-blank line.

    Each line is decoded on its own, so text that is not UTF-8 is reported on its line.
    """
    with open_decompressed(path) as f:
        number = 0
        try:
            for number, raw in enumerate(f, start=1):  # noqa: B007 - used after the loop
                text = raw.decode("utf-8").rstrip("\r\n")
                if text.strip():
                    yield number, text.split("\t")
        except UnicodeDecodeError:
            raise InputFormatError(path, "not UTF-8 text", line=number) from None
        except (EOFError, gzip.BadGzipFile, OSError) as e:
            raise InputFormatError(path, f"cannot read compressed data ({e})") from None


def _header(path: Path, fields: list[str]) -> dict[str, int]:
    columns = {name.strip(): i for i, name in reversed(list(enumerate(fields)))}
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        hint = " (is the file tab-separated?)" if len(fields) == 1 else ""
        raise InputFormatError(
            path, f"header lacks column(s) {', '.join(missing)}; expected "
            f"'name response block [cv]'{hint}", line=1,
        )
    return columns


def _response(path: Path, text: str, line: int) -> float:
    if text.strip().lower() in EMPTY_RESPONSES:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise InputFormatError(
            path, f"response '{text}' is not a number", line=line, column="response"
        ) from None
    if math.isinf(value):
        raise InputFormatError(path, "response is infinite", line=line, column="response")
    return value


def _index(path: Path, text: str, line: int, column: str, empty: int | None) -> int:
    """A cv cell: an integer in 0..2^31 - 1; `empty` is the value of an empty cell."""
    text = text.strip()
    if not text and empty is not None:
        return empty
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**31:
        raise InputFormatError(
            path, f"{column} '{text}' is not an integer in 0..2^31 - 1", line=line,
            column=column)
    return value


def _block(path: Path, text: str, line: int) -> str:
    text = text.strip()
    if not text:
        raise InputFormatError(path, "empty block", line=line, column="block")
    return text


def _rows(path: Path) -> tuple[list[_Row], bool]:
    """Every data row, parsed; and whether the file has a cv column."""
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise InputFormatError(path, "empty file; expected a header 'name response block [cv]'")
    header_line, fields = first
    columns = _header(path, fields)
    has_cv = "cv" in columns
    need = max(columns[c] for c in (*REQUIRED_COLUMNS, *(["cv"] if has_cv else []))) + 1
    rows = []
    for line, cells in lines:
        if len(cells) < need:
            raise InputFormatError(
                path, f"{len(cells)} tab-separated field(s), expected at least {need}", line=line
            )
        name = cells[columns["name"]].strip()
        if not name:
            raise InputFormatError(path, "empty name", line=line, column="name")
        rows.append(_Row(
            line=line,
            name=name,
            response=_response(path, cells[columns["response"]], line),
            block=_block(path, cells[columns["block"]], line),
            cv=_index(path, cells[columns["cv"]], line, "cv", NO_CV) if has_cv else NO_CV,
        ))
    if not rows:
        raise InputFormatError(path, "no data rows after the header", line=header_line)
    return rows, has_cv


# ---------------------------------------------------------------- aligning to the store


def _block_labels(path: Path, rows: list[_Row]) -> tuple[list[int] | list[str], dict[str, int]]:
    """The blocks in output order: integers ascending (a note on gaps), else names sorted;
    and each block cell's output (so that '07' and '7' are one block)."""
    texts = {row.block for row in rows}
    numbers = {}
    for text in texts:
        try:
            numbers[text] = int(text)
        except ValueError:
            break
    if len(numbers) == len(texts):
        for problem, wrong in (("is negative", lambda v: v < 0),
                               ("is too large (at most 2^63 - 1)", lambda v: v >= 2**63)):
            bad = next((r for r in rows if wrong(numbers[r.block])), None)
            if bad is not None:
                raise InputFormatError(path, f"block '{bad.block}' {problem}", line=bad.line,
                                       column="block")
        labels = sorted(set(numbers.values()))
        if labels != list(range(len(labels))):
            warnings.warn(f"{path}: blocks {_listed(labels)} are not numbered 0..{len(labels) - 1}"
                          f"; they are the model's outputs 0..{len(labels) - 1} in this order",
                          Note, stacklevel=3)
        output = {number: k for k, number in enumerate(labels)}
        return labels, {text: output[number] for text, number in numbers.items()}
    labels = sorted(texts)
    warnings.warn(f"{path}: block names {_listed(labels)} are the model's outputs "
                  f"0..{len(labels) - 1} in this order", Note, stacklevel=3)
    return labels, {text: k for k, text in enumerate(labels)}


def _listed(labels: list) -> str:
    shown = ", ".join(map(str, labels[:6]))
    return shown + (f", ... ({len(labels)} in all)" if len(labels) > 6 else "")


def read_phenotypes(
    path: str | os.PathLike, sample_id: Iterable[str], cv: int | None = None,
    fold_flag: str = "--cv",
) -> xr.Dataset:
    """Read phenotype TSV `path` aligned to the store's `sample_id` (in that order).

    Returns a Dataset with dims (samples, blocks): `response` (float32, the line mean;
    NaN = unobserved), `n_obs` (int32, rows averaged) and `cv` (int32, -1 = none),
    coordinates `sample_id` and `block` (the file's labels),
    and attrs counting what was read and skipped. `cv=K` marks rows with cv == K as
    the validation set (recorded in attrs["cv"]); it needs a cv column and at least
    one such row (refusals name `fold_flag`, the option the fold came from).
    """
    path = Path(path)
    names = np.asarray([str(s) for s in sample_id], dtype=object)
    rows, has_cv = _rows(path)
    labels, column = _block_labels(path, rows)
    n_blocks = len(labels)

    position = {name: i for i, name in enumerate(names)}
    total = np.zeros((len(names), n_blocks), dtype=np.float64)
    n_obs = np.zeros((len(names), n_blocks), dtype=np.int32)
    folds = np.full((len(names), n_blocks), NO_CV, dtype=PREDICTION_VARIABLES["cv"].dtype)
    first_line: dict[tuple[int, int], int] = {}
    unmatched: list[str] = []
    empty = matched = 0
    for row in rows:
        i = position.get(row.name)
        if i is None:
            unmatched.append(row.name)
            continue
        matched += 1
        if math.isnan(row.response):
            empty += 1
            continue
        b = column[row.block]
        if n_obs[i, b] and folds[i, b] != row.cv:
            raise InputFormatError(
                path, f"'{row.name}' has cv {row.cv} here but cv {folds[i, b]} on line "
                f"{first_line[i, b]} in the same block: a line's replicates share a fold",
                line=row.line, column="cv")
        first_line.setdefault((i, b), row.line)
        total[i, b] += row.response
        n_obs[i, b] += 1
        folds[i, b] = row.cv
    with np.errstate(invalid="ignore", divide="ignore"):
        response = np.where(n_obs > 0, total / n_obs, np.nan).astype(
            PREDICTION_VARIABLES["observed"].dtype)
    replicated = int((n_obs > 1).sum())
    if replicated:
        lines = int((n_obs > 1).any(axis=1).sum())
        warnings.warn(
            f"{path}: {int(n_obs[n_obs > 1].sum())} replicate rows of {lines} line(s) in "
            f"{replicated} (line, block) pair(s) are averaged; training and metrics use "
            "line means per block", Note, stacklevel=2)
    if matched == 0:
        raise InputFormatError(
            path, f"none of the {len(rows)} rows names a sample of the genotype store "
            f"(first name: '{rows[0].name}')", column="name",
        )
    if unmatched:
        warnings.warn(
            f"{path}: {len(unmatched)} row(s) name samples not in the genotype store "
            f"(first: '{unmatched[0]}'); skipped", PhenotypeWarning, stacklevel=2,
        )
    if empty:
        warnings.warn(
            f"{path}: {empty} row(s) with an empty response; dropped",
            PhenotypeWarning, stacklevel=2,
        )

    ds = xr.Dataset(
        {
            "response": ((SAMPLES, BLOCKS), response),
            "n_obs": ((SAMPLES, BLOCKS), n_obs),
            "cv": ((SAMPLES, BLOCKS), folds),
        },
        coords={"sample_id": (SAMPLES, names.astype(str)),
                "block": (BLOCKS, np.asarray(labels, dtype=object if isinstance(labels[0], str)
                                             else np.int64))},
        attrs={
            "path": str(path),
            "rows": len(rows),
            "unmatched_rows": len(unmatched),
            "unmatched_examples": sorted(set(unmatched))[:5],
            "empty_responses": empty,
            "replicated_means": replicated,
            "has_cv": has_cv,
            "cv": NO_CV,
        },
    )
    if cv is not None:
        ds = with_validation_fold(ds, cv, fold_flag)
    return ds


def one_held_out(cv: int | None, test_fold: int | None) -> None:
    """Refuse `--cv K` together with `--test-fold K`: each holds out a fold."""
    if cv is not None and test_fold is not None:
        raise UsageError("--cv K (fold K is validation) and --test-fold K (fold K is never "
                         "seen) are two ways to hold out a fold: give one")


def fold_numbers(cv: np.ndarray) -> list[int]:
    """The distinct folds among cv values, ascending: NO_CV and blanks (a table's NaN)
    are no fold."""
    values = np.asarray(cv, np.float64)
    return sorted({int(v) for v in np.unique(values[np.isfinite(values)])} - {NO_CV})


def folds_present(phenos: xr.Dataset) -> list[int]:
    """The cv folds of the observed rows, ascending."""
    observed = ~np.isnan(phenos["response"].values)
    return fold_numbers(phenos["cv"].values[observed])


def absent_fold(flag: str, fold: int, path: object, present: list[int]) -> UsageError:
    """The refusal of a fold (given with `flag`) that no observed row of `path` has."""
    return UsageError(f"{flag} {fold}: no observed row of {path} has cv {fold} "
                      f"(folds present: {present})")


def with_validation_fold(phenos: xr.Dataset, cv: int, flag: str = "--cv") -> xr.Dataset:
    """`phenos` with fold `cv` as its validation set; refuses folds the file lacks,
    naming the option the fold came from (`flag`)."""
    path = phenos.attrs.get("path", "phenotypes")
    if cv < 0:
        raise UsageError(f"{flag} {cv}: a fold is an integer >= 0")
    if not phenos.attrs.get("has_cv", False):
        raise UsageError(f"{flag} {cv}: {path} has no cv column")
    present = folds_present(phenos)
    if cv not in present:
        raise absent_fold(flag, cv, path, present)
    return phenos.assign_attrs(cv=int(cv))


def split_masks(phenos: xr.Dataset, cv: int | None = None) -> tuple[xr.DataArray, xr.DataArray]:
    """(train, validation) boolean masks over (samples, blocks).

    Validation: observed rows whose cv equals the fold (`cv`, else attrs["cv"]);
    train: every other observed row. Without a fold, validation is empty.
    """
    fold = phenos.attrs.get("cv", NO_CV) if cv is None else cv
    observed = phenos["response"].notnull()
    if fold is None or fold < 0:
        return observed, xr.zeros_like(observed)
    validation = observed & (phenos["cv"] == fold)
    return observed & ~validation, validation


def require_training_rows(train: np.ndarray | xr.DataArray, path: object) -> None:
    """Refuse a split of `path`'s phenotypes that leaves no row to train on (every observed
    row in the held-out fold)."""
    if not np.asarray(train).any():
        raise InputFormatError(path, "no training rows left (all rows are held out)")


def held_out_split(
    phenos: xr.Dataset, test_fold: int | None, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) boolean masks over (samples, blocks), leak-free.

    Test: observed rows whose cv is `test_fold` (none without one): never trained
    on, never used to stop or choose. Validation: every remaining observed row of
    a seeded `val_fraction` of the lines that have one, so that early stopping
    sees lines it was not trained on; train: the rest.
    """
    observed = phenos["response"].notnull().values
    test = np.zeros_like(observed)
    if test_fold is not None:
        with_validation_fold(phenos, test_fold, "--test-fold")  # the checks of --cv
        test = observed & (phenos["cv"].values == test_fold)
    rest = observed & ~test
    lines = np.flatnonzero(rest.any(axis=1))
    n_val = int(round(val_fraction * len(lines)))
    if val_fraction > 0 and len(lines) > 1:
        n_val = min(max(n_val, 1), len(lines) - 1)
    else:
        n_val = 0
    chosen = np.random.default_rng([seed, 0x5EED]).choice(lines, size=n_val, replace=False)
    val_lines = np.zeros(len(observed), bool)
    val_lines[chosen] = True
    val = rest & val_lines[:, None]
    return rest & ~val, val, test


def responses(phenos: xr.Dataset) -> str:
    """What a response of `phenos` is, for metrics.json: a line mean or a single row."""
    return ("line means of replicate rows per block" if phenos.attrs.get("replicated_means")
            else "one row per line and block")


def block_table(phenos: xr.Dataset) -> str:
    """TSV text `output block`: which block each model output stands for."""
    labels = np.asarray(phenos["block"].values).tolist()
    return "output\tblock\n" + "".join(f"{k}\t{label}\n" for k, label in enumerate(labels))
