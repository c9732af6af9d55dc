"""The original tool's integer-coded TSVs -> the genotype store.

Inputs, as in the original README:
- markers: a header `name` then one column per marker; one row per genotype whose
  cells are, by `coding`: integer codes into the allele decoder (`decoder`, the
  original's; `gen_allele_decoder`), 0..ploidy copies of the alternate allele
  (`dosage`, as breeding databases and BGLR export), or -1/0/1 (`rrblup`, diploid);
  in the last two NA, NaN, `.` or an empty cell is missing. A table in decoder
  coding whose codes look like dosages is refused (naming `--coding`);
- chroms: columns `chr marker pos` (others ignored), pos an int or a float.

The markers file is streamed in batches of rows (one sample chunk each), parsed with
vectorised numpy, decoded, reordered into contig/position order and written
chunk-column by chunk-column, so peak memory depends on the number of markers and
the sample chunk, never on the number of samples. Every problem is reported as one
line naming the file, line and column.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gperceiver.atomic import atomic_output, check_writable
from gperceiver.errors import InputFormatError, InputNotFoundError, UsageError
from gperceiver.inputs import CODINGS, open_decompressed
from gperceiver.preprocessing import decoder_table, gen_allele_decoder
from gperceiver.progress import progress_bar
from gperceiver.store import schema
from gperceiver.store.write import create_store, finish_store

TAB, ZERO, NINE = 9, 48, 57
CHROMS_COLUMNS = ("chr", "marker", "pos")
MAX_CODE_DIGITS = 9
MISSING_CELLS = ("", "NA", "N/A", "NAN", ".")
# Largest |position| in base pairs: exact in float64, and max - min + 1 fits int64.
MAX_POSITION = 2**53
DOSAGE_LIKE_ZEROS = 0.2  # decoder-coded cells that are 0 (missing) beyond which, with no
# code above the ploidy, a table is taken for dosages


# ---------------------------------------------------------------- opening files


READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _lines(path: Path, f: io.BufferedIOBase) -> Iterator[bytes]:
    """Lines without their end-of-line, turning gzip faults into clean errors."""
    try:
        for line in f:
            yield line.rstrip(b"\r\n")
    except READ_ERRORS as e:
        raise InputFormatError(path, f"cannot read compressed data ({e})") from None


def _decode(path: Path, raw: bytes, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFormatError(path, "not UTF-8 text", line=line) from None


# ---------------------------------------------------------------- decoder


def load_decoder(
    decoder_file: str | os.PathLike | list | None, ploidy: int | None, nalleles: int | None
) -> list[list[int]]:
    """The decoder from a JSON file (or given as a list, e.g. an original params file's
    allele_decoder), or `gen_allele_decoder(ploidy, nalleles)`."""
    if decoder_file is None:
        ploidy = 2 if ploidy is None else ploidy
        nalleles = 3 if nalleles is None else nalleles
        try:
            return gen_allele_decoder(ploidy, nalleles)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if nalleles is not None:
        raise UsageError("give either --nalleles or --decoder, not both")
    if isinstance(decoder_file, list):
        path, decoder = "allele_decoder", decoder_file
    else:
        path = Path(decoder_file)
        try:
            decoder = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputNotFoundError(f"{path}: no such file") from None
        except json.JSONDecodeError as e:
            raise InputFormatError(path, f"not valid JSON ({e.msg})", line=e.lineno) from None
    if not isinstance(decoder, list) or not decoder:
        raise InputFormatError(path, "expected a non-empty JSON list of allele lists")
    for k, entry in enumerate(decoder):
        if not (
            isinstance(entry, list)
            and entry
            and all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in entry)
        ):
            raise InputFormatError(path, f"code {k}: expected a list of allele numbers >= 0")
        if len(entry) != len(decoder[0]):
            raise InputFormatError(
                path, f"code {k}: has {len(entry)} alleles, code 0 has {len(decoder[0])}"
            )
    if ploidy is not None and ploidy != len(decoder[0]):
        raise UsageError(f"--ploidy {ploidy} does not match the decoder's {len(decoder[0])}")
    if max(max(e) for e in decoder) < 1:
        raise InputFormatError(path, "the decoder names no allele (all entries are 0)")
    return decoder


# ---------------------------------------------------------------- chroms file


@dataclass
class VariantTable:
    """The variants in store order, and where each sits in the markers file."""

    variant_id: np.ndarray  # object
    contig_id: np.ndarray  # object
    variant_contig: np.ndarray  # schema's variant_contig dtype
    variant_position: np.ndarray  # int64 or float64


def read_chroms(path: str | os.PathLike) -> tuple[list[str], list[str], list[str], list[int]]:
    """Read `chr marker pos`; return marker, chr, pos (as text) and line numbers."""
    path = Path(path)
    with open_decompressed(path) as f:
        lines = _lines(path, f)
        header_raw = next(lines, None)
        if header_raw is None or not header_raw.strip():
            raise InputFormatError(path, "empty file (expected a header 'chr marker pos')")
        header = _decode(path, header_raw, 1).split("\t")
        missing = [c for c in CHROMS_COLUMNS if c not in header]
        if missing:
            raise InputFormatError(
                path,
                f"missing required header column '{missing[0]}' "
                f"(expected 'chr', 'marker' and 'pos', tab-separated)",
                line=1,
            )
        ci, mi, pi = (header.index(c) for c in CHROMS_COLUMNS)
        width = len(header)
        markers, chrs, poss, linenos = [], [], [], []
        for lineno, raw in enumerate(lines, start=2):
            if not raw.strip():
                continue
            cells = _decode(path, raw, lineno).split("\t")
            if len(cells) != width:
                raise InputFormatError(
                    path, f"ragged row: {len(cells)} columns, the header has {width}", line=lineno
                )
            for col, idx in zip(CHROMS_COLUMNS, (ci, mi, pi), strict=True):
                if not cells[idx].strip():
                    raise InputFormatError(path, "empty cell", line=lineno, column=col)
            chrs.append(cells[ci])
            markers.append(cells[mi])
            poss.append(cells[pi])
            linenos.append(lineno)
    if not markers:
        raise InputFormatError(path, "no markers listed below the header")
    return markers, chrs, poss, linenos


def _parse_positions(path: Path, poss: list[str], linenos: list[int]) -> np.ndarray:
    """Positions as int64 (all whole) or float64; each finite and within MAX_POSITION.

    The store keeps integers: fractional positions are scaled by 10^6 there
    (`integer_positions`), so the bound applies after that scaling, and leaves room
    for the offset that lifts the smallest to 1.
    """
    try:
        values, scale = np.array(poss, dtype=np.int64), 1
    except (ValueError, OverflowError):
        values = _float_positions(path, poss, linenos)
        scale = 1 if np.all(values == np.round(values)) else 1_000_000
    bad = np.abs(values) > MAX_POSITION / scale
    if bad.any():
        k = int(np.argmax(bad))
        unit = "" if scale == 1 else " (fractional positions are read as Mb)"
        raise InputFormatError(
            path, f"position '{poss[k]}' is out of range: at most {MAX_POSITION // scale:,} "
                  f"either side of 0{unit}", line=linenos[k], column="pos",
        )
    return values


def _float_positions(path: Path, poss: list[str], linenos: list[int]) -> np.ndarray:
    """Positions as float64, each a finite number."""
    try:
        values = np.array(poss, dtype=np.float64)
    except ValueError:
        for p, ln in zip(poss, linenos, strict=True):
            try:
                float(p)
            except ValueError:
                raise InputFormatError(
                    path, f"position '{p}' is not a number", line=ln, column="pos"
                ) from None
        raise
    bad = ~np.isfinite(values)
    if bad.any():
        k = int(np.argmax(bad))
        raise InputFormatError(
            path, f"position '{poss[k]}' is not a finite number", line=linenos[k], column="pos"
        )
    return values


def variant_table(
    chroms_path: Path, marker_columns: list[str], markers_path: Path
) -> tuple[VariantTable, np.ndarray]:
    """Store-ordered variants, and `perm`: store variant i is markers-file column perm[i]."""
    markers, chrs, poss, linenos = read_chroms(chroms_path)
    seen: dict[str, int] = {}
    for m, ln in zip(markers, linenos, strict=True):
        if m in seen:
            raise InputFormatError(
                chroms_path,
                f"duplicate marker '{m}' (first on line {seen[m]})",
                line=ln,
                column="marker",
            )
        seen[m] = ln
    positions = _parse_positions(chroms_path, poss, linenos)

    column_of = {m: i for i, m in enumerate(marker_columns)}
    only_chroms = [m for m in markers if m not in column_of]
    only_markers = [m for m in marker_columns if m not in seen]
    for names, here, there in ((only_chroms, chroms_path, markers_path),
                               (only_markers, markers_path, chroms_path)):
        if names:
            shown = ", ".join(f"'{n}'" for n in names[:3])
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            raise InputFormatError(here, f"{len(names)} marker(s) not in {there}: {shown}{more}")

    contig_names, contig_index = np.unique(np.asarray(chrs, dtype=object), return_inverse=True)
    first_seen = np.full(len(contig_names), len(chrs))
    np.minimum.at(first_seen, contig_index, np.arange(len(chrs)))
    order_of_contig = np.argsort(np.argsort(first_seen, kind="stable"), kind="stable")
    variant_contig = order_of_contig[contig_index].astype(schema.VARIABLES["variant_contig"].dtype)
    contig_id = contig_names[np.argsort(first_seen, kind="stable")]
    # Contig order of first appearance, then position; ties keep file order.
    order = np.lexsort((np.arange(len(markers)), positions, variant_contig))
    marker_arr = np.asarray(markers, dtype=object)[order]
    table = VariantTable(
        variant_id=marker_arr,
        contig_id=contig_id,
        variant_contig=variant_contig[order],
        variant_position=positions[order],
    )
    perm = np.fromiter((column_of[m] for m in marker_arr), dtype=np.int64, count=len(marker_arr))
    return table, perm


# ---------------------------------------------------------------- markers file


def read_markers_header(path: Path, f: io.BufferedIOBase) -> list[str]:
    """Marker names from the header line, checked for 'name' and duplicates."""
    raw = next(_lines(path, f), b"")
    if not raw.strip():
        raise InputFormatError(path, "empty file (expected a header 'name' then marker names)")
    header = _decode(path, raw, 1).split("\t")
    if header[0] != "name":
        raise InputFormatError(
            path, f"first header column must be 'name', found '{header[0]}'", line=1, column=1
        )
    markers = header[1:]
    if not markers:
        raise InputFormatError(path, "the header names no marker", line=1)
    seen: dict[str, int] = {}
    for i, m in enumerate(markers, start=2):
        if not m:
            raise InputFormatError(path, "empty marker name", line=1, column=i)
        if m in seen:
            raise InputFormatError(
                path, f"duplicate marker '{m}' (also column {seen[m]})", line=1, column=i
            )
        seen[m] = i
    return markers


def count_rows(path: Path) -> int:
    """Data rows of the markers file: lines after the header, trailing blank lines ignored."""
    n, tail = 0, b""
    with open_decompressed(path) as f:
        try:
            while piece := f.read(1 << 24):
                n += piece.count(b"\n")
                tail = (tail + piece)[-4096:]
        except READ_ERRORS as e:
            raise InputFormatError(path, f"cannot read compressed data ({e})") from None
    stripped = tail.rstrip(b"\r\n \t")
    if not stripped:
        return 0
    # Lines up to the last non-blank byte, minus the header.
    return n - tail[len(stripped) :].count(b"\n")


class RowParser:
    """Parses batches of rows of the markers file into int codes, with located errors."""

    def __init__(self, path: Path, markers: list[str], n_codes: int):
        self.path, self.markers, self.n_codes = path, markers, n_codes
        self.n = len(markers)

    def _column(self, i: int) -> str:
        return f"{i + 2} ({self.markers[i]})"

    def split(self, lines: list[bytes], first_line: int) -> tuple[list[str], list[bytes]]:
        """Names and bodies (cells after the name) of raw lines; checks the column count."""
        names, bodies = [], []
        for k, line in enumerate(lines):
            tab = line.find(b"\t")
            found = line.count(b"\t") + 1
            if tab < 0 or found != self.n + 1:
                raise InputFormatError(
                    self.path,
                    f"ragged row: {found} columns, the header has {self.n + 1}",
                    line=first_line + k,
                )
            names.append(_decode(self.path, line[:tab], first_line + k))
            bodies.append(line[tab + 1 :])
        return names, bodies

    def parse(self, bodies: list[bytes], first_line: int) -> np.ndarray:
        """(rows, markers) codes; fast path for one-digit codes, exact row parse otherwise."""
        buf = np.frombuffer(b"\t".join(bodies), dtype=np.uint8)
        n_cells = len(bodies) * self.n
        if len(buf) == 2 * n_cells - 1:
            digits = buf[0::2] - ZERO
            if (buf[1::2] == TAB).all() and (digits <= 9).all():
                codes = digits.reshape(len(bodies), self.n)
                return self._check_range(codes, first_line)
        codes = np.empty((len(bodies), self.n), dtype=np.int64)
        for k, body in enumerate(bodies):
            codes[k] = self._parse_row(body, first_line + k)
        return self._check_range(codes, first_line)

    def _parse_row(self, body: bytes, line: int) -> np.ndarray:
        a = np.frombuffer(body, dtype=np.uint8)
        seps = np.flatnonzero(a == TAB)
        starts = np.concatenate(([0], seps + 1))
        ends = np.concatenate((seps, [len(a)]))
        lengths = ends - starts
        if (lengths == 0).any():
            col = int(np.argmax(lengths == 0))
            raise InputFormatError(self.path, "empty cell", line=line, column=self._column(col))
        bad = (a != TAB) & ((a < ZERO) | (a > NINE))
        if bad.any():
            col = int(np.searchsorted(seps, np.argmax(bad)))
            cell = body[starts[col] : ends[col]].decode("utf-8", "replace")
            hint = (" (dosages or rrBLUP -1/0/1 with NA? see --coding)"
                    if cell.strip().upper() in MISSING_CELLS or cell.startswith("-") else "")
            raise InputFormatError(
                self.path,
                f"'{cell}' is not a non-negative integer code{hint}",
                line=line,
                column=self._column(col),
            )
        if lengths.max() > MAX_CODE_DIGITS:
            col = int(np.argmax(lengths > MAX_CODE_DIGITS))
            cell = body[starts[col] : ends[col]].decode()
            self._out_of_range(cell, line, col)
        digits = (a - ZERO).astype(np.int64)
        values = np.zeros(self.n, dtype=np.int64)
        for w in range(1, int(lengths.max()) + 1):
            has = lengths >= w
            values[has] += digits[ends[has] - w] * 10 ** (w - 1)
        return values

    def _check_range(self, codes: np.ndarray, first_line: int) -> np.ndarray:
        over = codes >= self.n_codes
        if over.any():
            row, col = np.unravel_index(int(np.argmax(over)), codes.shape)
            self._out_of_range(str(codes[row, col]), first_line + int(row), int(col))
        return codes

    def _out_of_range(self, cell: str, line: int, col: int) -> None:
        raise InputFormatError(
            self.path,
            f"code {cell} is outside the decoder (codes 0..{self.n_codes - 1}; "
            "set --nalleles/--ploidy or --decoder)",
            line=line,
            column=self._column(col),
        )


class CountParser(RowParser):
    """Parses dosage (0..ploidy alternate copies) or rrBLUP (-1/0/1) cells into codes
    of `dosage_table`: 0 = missing, d + 1 = d alternate copies."""

    def __init__(self, path: Path, markers: list[str], coding: str, ploidy: int):
        super().__init__(path, markers, ploidy + 2)
        self.coding, self.ploidy = coding, ploidy
        shift = 1 if coding == "rrblup" else 0  # rrBLUP's -1/0/1 are 0/1/2 copies
        self.lookup = {str(d - shift).encode(): d + 1 for d in range(ploidy + 1)}
        self.lookup.update({f"{d - shift}.0".encode(): d + 1 for d in range(ploidy + 1)})

    def _code(self, cell: bytes) -> int:
        """The code of one cell; -1 for a cell that is no count (missing in any case)."""
        cell = cell.strip()
        if cell in self.lookup:
            return self.lookup[cell]
        return 0 if cell.decode("utf-8", "replace").upper() in MISSING_CELLS else -1

    def parse(self, bodies: list[bytes], first_line: int) -> np.ndarray:
        codes = np.empty((len(bodies), self.n), dtype=np.int64)
        for k, body in enumerate(bodies):
            cells = np.array(body.split(b"\t"))
            values, inverse = np.unique(cells, return_inverse=True)
            mapped = np.array([self._code(v) for v in values.tolist()])
            if (mapped < 0).any():
                bad = values[int(np.argmax(mapped < 0))]
                col = int(np.argmax(cells == bad))
                lo, hi = (-1, 1) if self.coding == "rrblup" else (0, self.ploidy)
                raise InputFormatError(
                    self.path, f"'{bad.decode('utf-8', 'replace')}' is not a {self.coding} "
                    f"code ({lo}..{hi}, or NA, NaN, . or empty for missing)",
                    line=first_line + k, column=self._column(col))
            codes[k] = mapped[inverse]
        return codes


def dosage_table(ploidy: int) -> np.ndarray:
    """(ploidy + 2, ploidy) store calls of dosage codes: row 0 missing, row d + 1 has
    d alternate (1) and ploidy - d reference (0) copies."""
    table = np.full((ploidy + 2, ploidy), -1, dtype=schema.VARIABLES["call_genotype"].dtype)
    for d in range(ploidy + 1):
        table[d + 1] = [0] * (ploidy - d) + [1] * d
    return table


def check_not_dosages(path: Path, codes: np.ndarray, ploidy: int, n_codes: int) -> None:
    """Refuse decoder codes that look like 0..ploidy dosages: many zeros (= missing in
    decoder coding) and no code above the ploidy although the decoder has some."""
    if codes.size == 0 or n_codes <= ploidy + 1:
        return
    zeros = float(np.mean(codes == 0))
    if zeros > DOSAGE_LIKE_ZEROS and int(codes.max()) <= ploidy:
        raise InputFormatError(
            path, f"{zeros:.0%} of the cells are code 0 (missing in the original's decoder "
            f"coding, where low codes also lack a copy) and no code is above {ploidy}: these "
            f"look like 0..{ploidy} dosages. "
            "Convert with --coding dosage (or --coding rrblup for -1/0/1); --coding decoder "
            "reads them as decoder codes anyway")


def _row_batches(
    path: Path, f: io.BufferedIOBase, rows: int, total: int
) -> Iterator[list[bytes]]:
    """Batches of `rows` lines, `total` lines in all; what follows must be blank."""
    lines = _lines(path, f)
    done = 0
    while done < total:
        batch = list(itertools.islice(lines, min(rows, total - done)))
        if not batch:
            break
        done += len(batch)
        yield batch
    for extra in lines:
        if extra.strip():
            raise InputFormatError(path, "the file grew while it was being converted")


# ---------------------------------------------------------------- conversion


def convert_tsv(
    markers: str | os.PathLike,
    chroms: str | os.PathLike,
    output: str | os.PathLike,
    *,
    ploidy: int | None = None,
    nalleles: int | None = None,
    decoder_file: str | os.PathLike | list | None = None,
    coding: str | None = None,
    samples_chunk: int = schema.DEFAULT_SAMPLES_CHUNK,
    variants_chunk: int = schema.DEFAULT_VARIANTS_CHUNK,
    force: bool = False,
    progress: bool = True,
) -> str | Path:
    """Convert a markers TSV and its chroms TSV into a genotype store at `output`.

    `output` is a local path or an fsspec URL (s3://, gs://, file://). `coding`:
    one of CODINGS; None is decoder coding that refuses dosage-like tables.
    """
    if samples_chunk < 1 or variants_chunk < 1:
        raise UsageError("--samples-chunk and --variants-chunk must be >= 1")
    if coding is not None and coding not in CODINGS:
        raise UsageError(f"--coding must be one of {', '.join(CODINGS)}, got '{coding}'")
    markers_path, chroms_path = Path(markers), Path(chroms)
    output = check_writable(output, force)
    if coding in ("dosage", "rrblup"):
        if decoder_file is not None or nalleles is not None:
            raise UsageError(f"--coding {coding} counts alternate alleles: --nalleles and "
                             "--decoder belong to --coding decoder")
        ploidy = 2 if ploidy is None else ploidy
        if coding == "rrblup" and ploidy != 2:
            raise UsageError(f"--coding rrblup is diploid (-1/0/1); got --ploidy {ploidy}")
        if ploidy < 1:
            raise UsageError(f"--ploidy must be >= 1, got {ploidy}")
        decoder, table_lookup = None, dosage_table(ploidy)
        n_alleles = 2
    else:
        decoder = load_decoder(decoder_file, ploidy, nalleles)
        table_lookup = decoder_table(decoder)
        ploidy = table_lookup.shape[1]
        n_alleles = int(table_lookup.max()) + 1

    with open_decompressed(markers_path) as f:
        marker_columns = read_markers_header(markers_path, f)
    variants, perm = variant_table(chroms_path, marker_columns, markers_path)
    n_samples = count_rows(markers_path)
    if n_samples < 1:
        raise InputFormatError(markers_path, "no genotype rows below the header")

    if decoder is None:
        parser = CountParser(markers_path, marker_columns, coding, ploidy)
    else:
        parser = RowParser(markers_path, marker_columns, len(decoder))
    check = None if coding is not None else (
        lambda codes: check_not_dosages(markers_path, codes, ploidy, len(decoder)))
    with atomic_output(output, force) as tmp:
        calls = create_store(
            tmp,
            sample_id=np.full(n_samples, "", dtype=object),
            variant_id=variants.variant_id,
            contig_id=variants.contig_id,
            variant_contig=variants.variant_contig,
            variant_position=variants.variant_position,
            ploidy=ploidy,
            n_alleles=n_alleles,
            samples_chunk=samples_chunk,
            variants_chunk=variants_chunk,
            attrs={
                "source": "tsv",
                "tsv_coding": coding or "decoder",
                "tsv_decoder": decoder,
                "tsv_markers": markers_path.name,
                "tsv_chroms": chroms_path.name,
            },
        )
        sample_id = _write_calls(
            markers_path, parser, perm, table_lookup, calls, samples_chunk, n_samples, progress,
            check,
        )
        finish_store(tmp, sample_id=sample_id)
    return output


def _write_calls(
    path: Path,
    parser: RowParser,
    perm: np.ndarray,
    table: np.ndarray,
    calls,
    samples_chunk: int,
    n_samples: int,
    progress: bool,
    check=None,
) -> list[str]:
    """Stream batches of rows: parse, decode, transpose, write; the write overlaps the next parse.
    `check(codes)` sees the first batch's codes before anything is written."""
    names: list[str] = []
    first_line_of: dict[str, int] = {}
    genotypes = np.ascontiguousarray(table).view(f"V{table.shape[1]}").ravel()  # code -> calls
    bar = progress_bar(n_samples, "convert", "samples", progress)
    with open_decompressed(path) as f, ThreadPoolExecutor(max_workers=1) as pool:
        f.readline()
        pending = None
        line = 2
        for rows in _row_batches(path, f, samples_chunk, n_samples):
            batch_names, bodies = parser.split(rows, line)
            for k, name in enumerate(batch_names):
                if not name:
                    raise InputFormatError(path, "empty genotype name", line=line + k, column=1)
                if name in first_line_of:
                    raise InputFormatError(
                        path,
                        f"duplicate genotype name '{name}' (first on line {first_line_of[name]})",
                        line=line + k,
                        column=1,
                    )
                first_line_of[name] = line + k
            codes = parser.parse(bodies, line)
            del bodies
            if check is not None:
                check(codes)
                check = None
            # (variants, rows) codes in store order, then one gather of whole genotypes.
            by_variant = np.ascontiguousarray(codes[:, perm].T)
            batch_calls = genotypes[by_variant].view(table.dtype).reshape(*by_variant.shape, -1)
            start = len(names)
            if start + len(batch_names) > n_samples:
                raise InputFormatError(path, "the file grew while it was being converted")
            if pending is not None:
                pending.result()
            pending = pool.submit(_write_samples, calls, batch_calls, start)
            names.extend(batch_names)
            line += len(rows)
            bar.update(len(rows))
        if pending is not None:
            pending.result()
    bar.close()
    if len(names) != n_samples:
        raise InputFormatError(path, f"expected {n_samples} rows, read {len(names)}")
    return names


def _write_samples(calls, batch_calls: np.ndarray, start: int) -> None:
    calls[:, start : start + batch_calls.shape[1], :] = batch_calls
