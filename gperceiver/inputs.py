"""Opening user input files: one place that maps OS failures to clean, one-line errors."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

from gperceiver.errors import InputNotFoundError

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
