"""VCF/BCF files -> the genotype store, through bio2zarr's vcf2zarr (explode, then encode).

bio2zarr splits a file into partitions through its tabix/CSI index, and refuses a
multi-contig file without one. So each input is first made ready: an indexed
bgzipped VCF or BCF is used as it is; an unindexed one is indexed (a CSI index,
which also covers contigs over 512 Mb) beside a link to it in a temporary
folder; a plain-gzip or uncompressed VCF is recompressed with BGZF there first.
The user's files are never written to. bio2zarr's intermediate columnar format
(ICF) goes into the same temporary folder, removed whatever happens. The VCZ that
bio2zarr writes with our chunks is then finished in place by
`gperceiver.store.write.finish_vcz`.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import re
import shutil
import sys
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from gperceiver.atomic import TMP_MARK, atomic_output, is_url
from gperceiver.converters.vcz import (
    bio2zarr_errors,
    local_output,
    one_line,
    via_local,
)
from gperceiver.errors import InputFormatError, UsageError
from gperceiver.inputs import open_binary
from gperceiver.progress import shown as show_progress
from gperceiver.store import schema
from gperceiver.store.write import ZARR_FORMAT, finish_vcz

GZIP_MAGIC = b"\x1f\x8b"
VCF_MAGIC = b"##fileformat=VCF"
BCF_MAGIC = b"BCF\x02"
INDEX_SUFFIXES = (".tbi", ".csi")
COPY_BYTES = 4 << 20


# ---------------------------------------------------------------- one-line errors


@contextlib.contextmanager
def htslib_messages() -> Iterator[list[str]]:
    """Capture what htslib writes to stderr (fd 2) meanwhile; the list fills on exit.

    htslib reports problems as `[E::function] text` lines on stderr; we turn the
    last one into part of our own one-line message instead of letting it through.
    Python's own `sys.stderr` (progress bars, warnings) still reaches the terminal.
    """
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        python_stderr = sys.stderr
        sys.stderr = open(os.dup(saved), "w", buffering=1, encoding=python_stderr.encoding,
                          errors="replace")
        try:
            yield lines
        finally:
            sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            lines.extend(
                re.sub(r"^\[[EW]::\w+\]\s*", "", ln) for ln in text.splitlines() if ln.strip()
            )


def _last(lines: list[str], fallback: str) -> str:
    return lines[-1] if lines else fallback


# ---------------------------------------------------------------- making inputs ready


def sniff(path: Path) -> str:
    """'bgzf-vcf', 'bgzf-bcf', 'gzip-vcf' or 'text-vcf'; anything else is refused."""
    with open_binary(path, "a VCF or BCF file") as f:
        head = f.read(18)
    if head.startswith(GZIP_MAGIC):
        bgzf = len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC"
        try:
            with gzip.open(path, "rb") as f:
                start = f.read(len(VCF_MAGIC))
        except (EOFError, OSError) as e:
            raise InputFormatError(path, f"cannot read compressed data ({e})") from None
        if start.startswith(BCF_MAGIC) and bgzf:
            return "bgzf-bcf"
        if start.startswith(VCF_MAGIC):
            return "bgzf-vcf" if bgzf else "gzip-vcf"
    elif head.startswith(VCF_MAGIC):
        return "text-vcf"
    elif head.startswith(BCF_MAGIC[:3]):
        raise InputFormatError(path, "uncompressed BCF is not supported: write it with -Ob")
    raise InputFormatError(
        path, "not a VCF or BCF file (it does not start with '##fileformat=VCF')", line=1
    )


def gzip_fault(path: Path) -> str | None:
    """Why the (b)gzip stream of `path` cannot be read to its end, or None if it can."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(COPY_BYTES):
                pass
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        return f"truncated or corrupt gzip data ({e})"
    return None


def check_header(path: Path) -> None:
    """Refuse a file htslib cannot parse, with no samples, or with no GT field."""
    import cyvcf2

    with htslib_messages() as messages:
        try:
            vcf = cyvcf2.VCF(str(path))
        except Exception:  # noqa: BLE001 - cyvcf2 raises bare Exception for a bad header
            vcf = None
    if vcf is None:
        problem = gzip_fault(path) if sniff(path) != "text-vcf" else None
        raise InputFormatError(
            path, problem or f"cannot read the header ({_last(messages, 'bad header')})"
        )
    try:
        if not vcf.samples:
            raise InputFormatError(path, "no samples (the #CHROM line has no sample columns)")
        has_gt = any(
            h.info().get("HeaderType") == "FORMAT" and h.info().get("ID") == "GT"
            for h in vcf.header_iter()
        )
        if not has_gt:
            raise InputFormatError(path, "no GT field (the header has no ##FORMAT=<ID=GT,...>)")
    finally:
        vcf.close()


def has_index(path: Path) -> bool:
    return any(path.with_name(path.name + s).exists() for s in INDEX_SUFFIXES)


def build_index(path: Path, where: Path) -> None:
    """Write a CSI index beside `path` (needs a BGZF file sorted by contig and position)."""
    import pysam

    with htslib_messages() as messages:
        try:
            pysam.tabix_index(str(path), preset="vcf", csi=True, force=True)
        except OSError:
            problem = None
        else:
            return
    fault = gzip_fault(path)
    if fault:
        raise InputFormatError(where, fault)
    problem = _last(messages, "htslib failed")
    bad = _bad_position(where)
    if bad is not None:  # htslib reads '12a' as 12, then calls the file unsorted
        raise InputFormatError(where, f"POS '{bad[1]}' is not a whole number", line=bad[0],
                               column="POS")
    hint = ""
    if "nsorted" in problem or "not continuous" in problem:
        hint = "; records must be sorted by contig, then position (bcftools sort)"
    raise InputFormatError(where, f"cannot index it ({problem}{hint})")


def _text_lines(path: Path) -> Iterator[bytes] | None:
    """The lines of a text VCF, plain or gzipped (None for BCF)."""
    kind = sniff(path)
    if kind.endswith("bcf"):
        return None
    return open_binary(path) if kind == "text-vcf" else gzip.open(path, "rb")


def _bad_position(path: Path) -> tuple[int, str] | None:
    """(line, POS) of the first record of a text VCF whose POS is not a whole number."""
    lines = _text_lines(path)
    if lines is None:
        return None
    with lines:
        for number, line in enumerate(lines, start=1):
            if line.startswith(b"#"):
                continue
            fields = line.split(b"\t", 2)
            if len(fields) > 1 and not fields[1].isdigit():
                return number, fields[1].decode("utf-8", "replace")
    return None


def recompress(path: Path, dest: Path, compressed: bool) -> None:
    """Copy a plain-gzip or uncompressed VCF into a BGZF file at `dest`."""
    import pysam

    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as src, pysam.BGZFile(str(dest), "wb") as out:
            while piece := src.read(COPY_BYTES):
                out.write(piece)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise InputFormatError(path, f"truncated or corrupt gzip data ({e})") from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise InputFormatError(path, f"cannot read it ({e})") from None


def prepare_input(path: Path, work: Path) -> Path:
    """A path bio2zarr can partition: the file itself, or an indexed copy/link in `work`."""
    kind = sniff(path)
    check_header(path)
    if kind.startswith("bgzf") and has_index(path):
        return path
    work.mkdir(parents=True, exist_ok=True)
    if kind.startswith("bgzf"):
        ready = work / path.name
        ready.symlink_to(path.absolute())
    else:
        ready = work / (re.sub(r"(\.vcf)?(\.gz)?$", "", path.name) + ".vcf.gz")
        recompress(path, ready, compressed=kind == "gzip-vcf")
    build_index(ready, path)
    return ready


# ---------------------------------------------------------------- conversion


def convert_vcf(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    samples_chunk: int = schema.DEFAULT_SAMPLES_CHUNK,
    variants_chunk: int = schema.DEFAULT_VARIANTS_CHUNK,
    workers: int = 1,
    temp_dir: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Convert VCF/BCF file(s) (same samples; e.g. one per chromosome) into a store.

    `workers` processes explode and encode in parallel (1: all in this process).
    The ICF goes into `temp_dir` (default: beside `output`) and is always removed.
    """
    if is_url(output):
        return via_local(os.fspath(output), force, lambda local: convert_vcf(
            inputs, local, samples_chunk=samples_chunk, variants_chunk=variants_chunk,
            workers=workers, temp_dir=temp_dir, progress=progress), temp_dir)
    if samples_chunk < 1 or variants_chunk < 1 or workers < 1:
        raise UsageError("--samples-chunk, --variants-chunk and --workers must be >= 1")
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    if not paths:
        raise UsageError("no VCF/BCF input given")
    if len({p.resolve() for p in paths}) != len(paths):
        raise UsageError("the same VCF/BCF file is given twice")
    output = local_output(output, force)
    where = paths[0] if len(paths) == 1 else Path(", ".join(map(str, paths)))
    with atomic_output(output, force) as tmp, _work_folder(output, temp_dir) as work:
        ready = [prepare_input(p, work / f"input{i}") for i, p in enumerate(paths)]
        _vcf2zarr(paths, ready, tmp, work / "icf", where, samples_chunk, variants_chunk,
                  workers, progress)
        finish_vcz(tmp, source="vcf", where=where, attrs={"vcf_inputs": [p.name for p in paths]})
    return output


@contextlib.contextmanager
def _work_folder(output: Path, temp_dir: str | os.PathLike | None) -> Iterator[Path]:
    """A temporary folder, removed on exit; named so a later run cleans it after a kill."""
    parent = Path(temp_dir) if temp_dir is not None else output.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"--temp-dir {parent}: no such folder")
    prefix = f".{output.name}{TMP_MARK}{os.getpid()}-work"
    with tempfile.TemporaryDirectory(dir=parent, prefix=prefix) as work:
        yield Path(work)


def _record_line(paths: list[Path], message: str) -> tuple[Path, int] | None:
    """The (file, line) of the record htslib's `message` names ('... at CHROM:POS'): the
    first text line of `paths` with that CHROM and POS (None for BCF, or not found)."""
    found = re.search(r" at (\S+):(\d+)", message)
    if found is None:
        return None
    prefix = f"{found.group(1)}\t{found.group(2)}\t".encode()
    for path in paths:
        lines = _text_lines(path)
        if lines is None:
            continue
        with lines:
            for number, line in enumerate(lines, start=1):
                if line.startswith(prefix):
                    return path, number
    return None


def _unparsable(paths: list[Path], where: Path, messages: list[str], e: Exception
                ) -> InputFormatError:
    """A record htslib cannot parse, as one line naming its file and line."""
    problem = _last(messages, one_line(e))
    path, line = _record_line(paths, problem) or (where, None)
    return InputFormatError(path, f"a record cannot be read ({problem})", line=line)


def _vcf2zarr(
    paths: list[Path],
    ready: list[Path],
    dest: Path,
    icf: Path,
    where: Path,
    samples_chunk: int,
    variants_chunk: int,
    workers: int,
    progress: bool,
) -> None:
    """bio2zarr explode + encode of `ready` (`paths` made readable), with its failures
    turned into one-line input errors."""
    from bio2zarr import vcf as vcf2zarr

    processes = 0 if workers == 1 else workers
    shown = show_progress(progress)
    try:
        with bio2zarr_errors(where, (ValueError, RuntimeError, KeyError, IndexError, EOFError)):
            with htslib_messages() as messages:
                try:
                    vcf2zarr.explode(icf, ready, worker_processes=processes,
                                     show_progress=shown)
                except Exception as e:  # noqa: BLE001 - cyvcf2 raises bare Exception
                    if type(e) is not Exception:
                        raise
                    failed = e
                else:
                    failed = None
            if failed is not None:  # the messages are read once the capture ends
                raise _unparsable(paths, where, messages, failed) from None
            vcf2zarr.encode(
                icf,
                dest,
                variants_chunk_size=variants_chunk,
                samples_chunk_size=samples_chunk,
                worker_processes=processes,
                show_progress=shown,
                zarr_format=ZARR_FORMAT,
            )
    finally:
        shutil.rmtree(icf, ignore_errors=True)


