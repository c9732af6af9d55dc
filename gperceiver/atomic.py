"""Atomic outputs: write into a temporary sibling, move it into place when complete.

A crash, a kill or an error midway leaves nothing at the destination (at most a
hidden `.NAME.tmp-*` sibling, which the next run removes). Destinations may be
local paths or fsspec URLs (`s3://...`, `gs://...`, `file://...`); on an object
store the final move is a copy then delete, still after the output is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from gperceiver.errors import CannotWriteError

TMP_MARK = ".tmp-"


def is_url(path: str | os.PathLike) -> bool:
    """True for a remote fsspec URL (file:// URLs are treated as local paths)."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


def local_path(path: str | os.PathLike) -> Path:
    """A local path, from a path or a file:// URL."""
    return Path(os.fspath(path).removeprefix("file://"))


def _remote(url: str):
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return fs, root


def check_writable(dest: str | os.PathLike, force: bool) -> str | Path:
    """Refuse an existing `dest` unless `force`; refuse a missing or read-only parent."""
    if is_url(dest):
        url = os.fspath(dest)
        fs, root = _remote(url)
        if fs.exists(root) and not force:
            raise CannotWriteError(f"{url}: output exists; pass --force to replace it")
        return url
    dest = local_path(dest)
    if (dest.exists() or dest.is_symlink()) and not force:
        raise CannotWriteError(f"{dest}: output exists; pass --force to replace it")
    parent = dest.absolute().parent
    if not parent.is_dir():
        raise CannotWriteError(f"{dest}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CannotWriteError(f"{dest}: folder {parent} is not writable")
    try:  # os.access trusts permission bits; some file systems (/proc, read-only) say no later
        fd, probe = tempfile.mkstemp(prefix=".gperceiver-probe-", dir=parent)
    except OSError as e:
        raise CannotWriteError(f"{dest}: folder {parent} is not writable ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return dest


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling; move it to `dest` only if the `with` body succeeds.

    For a URL destination the yielded value is a URL string (typed Path for the
    common local case); pass it on as given.
    """
    checked = check_writable(dest, force)
    if isinstance(checked, str):
        with _atomic_remote(checked) as tmp:
            yield tmp  # type: ignore[misc]
        return
    dest = checked.absolute()
    for stale in dest.parent.glob(f".{dest.name}{TMP_MARK}*"):
        if not _owner_alive(stale.name):
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


@contextlib.contextmanager
def _atomic_remote(url: str) -> Iterator[str]:
    fs, root = _remote(url)
    protocol = url.split("://", 1)[0]
    parent, _, name = root.rstrip("/").rpartition("/")
    tmp_root = f"{parent}/.{name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield f"{protocol}://{tmp_root}"
        if fs.exists(root):
            fs.rm(root, recursive=True)
        files = fs.find(tmp_root)
        # Top-level metadata goes last, so a reader never sees a half-copied store whole.
        files.sort(key=lambda f: f.rsplit("/", 1)[0] == tmp_root)
        fs.copy(files, [root + f[len(tmp_root) :] for f in files])
        fs.rm(tmp_root, recursive=True)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp_root, recursive=True)
        raise


def _remove(path: Path, settle: float = 2.0) -> None:
    """Remove a temporary output, again while it comes back: after Ctrl-C, writes
    already in flight (zarr's I/O thread, Dask workers) may recreate parts of it for a
    moment. Gives up after `settle` seconds (the next run removes what is left)."""
    deadline = time.monotonic() + settle
    while True:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        time.sleep(0.05)
        if not (path.exists() or path.is_symlink()) or time.monotonic() > deadline:
            return


def _owner_alive(name: str) -> bool:
    """Whether the process that named a temporary sibling `.X.tmp-PID-HEX` still runs."""
    pid = name.rsplit("-", 2)[-2] if name.count("-") >= 2 else ""
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
