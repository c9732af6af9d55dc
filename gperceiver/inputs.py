"""Opening user input files: one place that maps OS failures to clean, one-line errors."""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gperceiver.errors import InputFormatError, InputNotFoundError

# What the cells of a markers TSV are (`convert tsv --coding`): codes into the allele
# decoder (the original tool's), alternate-allele dosages 0..ploidy, or rrBLUP's -1/0/1.
CODINGS = ("decoder", "dosage", "rrblup")

GZIP_MAGIC = b"\x1f\x8b"


def open_binary(path: str | os.PathLike, expected: str = "a file") -> io.BufferedReader:
    """Open `path` for binary reading; a missing, folder or unreadable path is refused."""
    path = Path(path)
    try:
        return open(path, "rb")  # noqa: SIM115 - returned to the caller
    except FileNotFoundError:
        raise InputNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputNotFoundError(f"{path}: is a folder, expected {expected}") from None
    except PermissionError:
        raise InputNotFoundError(f"{path}: permission denied") from None


def open_decompressed(path: str | os.PathLike, expected: str = "a file") -> io.BufferedIOBase:
    """Open `path` for binary reading, gunzipping it when it starts with gzip's magic."""
    f = open_binary(path, expected)
    if f.peek(2)[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    return f


def read_tsv(path: Path, what: str, required: Sequence[str], **kwargs) -> pd.DataFrame:
    """Read a tab-separated file with a header; one clear line when it is not one."""
    if not path.is_file():
        raise InputNotFoundError(f"{path}: no such {what}")
    try:
        table = pd.read_csv(path, sep="\t", **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputFormatError(path, f"not a tab-separated {what} ({str(e).strip()})") from None
    for column in required:
        if column not in table.columns:
            raise InputFormatError(
                path, f"missing column '{column}' (expected {', '.join(required)})", line=1
            )
    return table


def numeric_column(path: Path, table: pd.DataFrame, column: str, *,
                   allow_empty: bool) -> np.ndarray:
    """A column as floats; the first unparsable cell is reported with its line."""
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(values) & (table[column].notna().to_numpy() | (not allow_empty))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputFormatError(
            path, f"'{table[column].iloc[row]}' is not a number", line=row + 2, column=column
        )
    return values
