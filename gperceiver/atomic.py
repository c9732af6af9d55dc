"""Atomic outputs: write into a temporary sibling, rename into place when complete.

A crash, a kill or an error midway leaves nothing at the destination (at most a
hidden `.NAME.tmp-*` sibling, which the next run removes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from gperceiver.errors import CannotWriteError

TMP_MARK = ".tmp-"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def check_writable(dest: str | os.PathLike, force: bool) -> Path:
    """Refuse an existing `dest` unless `force`; refuse a missing parent folder."""
    dest = Path(dest)
    if dest.exists() and not force:
        raise CannotWriteError(f"{dest}: output exists; pass --force to replace it")
    parent = dest.absolute().parent
    if not parent.is_dir():
        raise CannotWriteError(f"{dest}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CannotWriteError(f"{dest}: folder {parent} is not writable")
    return dest


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; move it to `dest` only if the block succeeds."""
    dest = check_writable(dest, force).absolute()
    for stale in dest.parent.glob(f".{dest.name}{TMP_MARK}*"):
        # Left by a killed run: the process that wrote it is gone or it is ours to replace.
        pid = stale.name.rsplit("-", 2)[-2] if stale.name.count("-") >= 2 else ""
        if not (pid.isdigit() and _pid_alive(int(pid))):
            _remove(stale)
    tmp = dest.parent / f".{dest.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{tmp}: nothing was written")
        old = None
        if dest.exists() or dest.is_symlink():
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            _remove(old)
    except BaseException:
        _remove(tmp)
        raise


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
