"""Property-based: randomly damaged inputs end in our clean error or a valid output.

Hypothesis damages a valid markers/chroms pair or phenotype file (bad cells,
short and long rows, duplicated or dropped lines and columns, blank lines, cut
files, bytes that are not UTF-8, CRLF line ends). Whatever it makes, the command
exits 0 with a valid output, or with 2/3/4 and one line naming the file; never
exit 1 (an unexpected error), a traceback, or anything left at the output path.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gperceiver import open_store
from gperceiver.cli.main import main
from gperceiver.errors import ExitCode
from tests.conftest import TEST_DATA
from tests.test_convert_tsv import write_panel

CLEAN = {ExitCode.USAGE, ExitCode.INPUT_FORMAT, ExitCode.INPUT_NOT_FOUND}
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                       HealthCheck.too_slow])
NASTY = ["", " ", "x", "-1", "3.5", "99", "nan", "NA", " 4", "4 ", "1e3", "é", "0x3",
         "inf", "-", "\x00", '"4"', "3\t4", "g0", "m0", "chr1", "12345678901234567890"]


@st.composite
def damage(draw, text: str) -> tuple[bytes, int | None]:
    """`text` (a TSV) with one to three random kinds of damage; and the line number of
    a byte that is not UTF-8, when one was put in."""
    rows = [line.split("\t") for line in text.splitlines()]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from([
            "cell", "cell", "cell", "short", "long", "dup_line", "drop_line", "blank",
            "dup_column", "drop_column", "header_cell", "swap_lines"]))
        i = draw(st.integers(0, len(rows) - 1)) if rows else 0
        if not rows:
            break
        row = rows[i]
        if kind in ("cell", "header_cell"):
            i = 0 if kind == "header_cell" else i
            j = draw(st.integers(0, max(len(rows[i]) - 1, 0)))
            if rows[i]:
                rows[i][j] = draw(st.sampled_from(NASTY))
        elif kind == "short" and len(row) > 1:
            rows[i] = row[:draw(st.integers(1, len(row) - 1))]
        elif kind == "long":
            rows[i] = row + [draw(st.sampled_from(NASTY))]
        elif kind == "dup_line":
            rows.insert(i, list(row))
        elif kind == "drop_line":
            rows.pop(i)
        elif kind == "blank":
            rows.insert(i, [""])
        elif kind in ("dup_column", "drop_column"):
            j = draw(st.integers(0, max(len(rows[0]) - 1, 0)))
            for r in rows:
                if j < len(r):
                    if kind == "dup_column":
                        r.insert(j, r[j])
                    else:
                        r.pop(j)
        elif kind == "swap_lines":
            k = draw(st.integers(0, len(rows) - 1))
            rows[i], rows[k] = rows[k], rows[i]
    end = draw(st.sampled_from(["\n", "\r\n"]))
    data = "".join("\t".join(r) + end for r in rows).encode("utf-8")
    bad_line = None
    tail = draw(st.sampled_from(["keep", "keep", "cut", "not utf-8"]))
    if tail != "keep" and data:
        at = draw(st.integers(0, len(data)))
        if tail == "cut":
            data = data[:at]
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:  # cut inside a multi-byte character ("é")
                bad_line = data.count(b"\n") + 1
        else:
            data = data[:at] + b"\xff\xfe" + data[at:]
            bad_line = data[:at].count(b"\n") + 1
    return data, bad_line


def check_utf8_line(err: str, path: Path, bad_line: int | None) -> None:
    """A 'not UTF-8' error names the line that holds the bad byte."""
    if "not UTF-8" in err:
        assert bad_line is not None and f"{path}, line {bad_line}:" in err, (bad_line, err)


def run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def assert_clean_failure(code: int, err: str, out: Path) -> None:
    assert code in CLEAN, err
    # one error line, last; before it only one-line notes and warnings about the input
    *before, line = err.strip().splitlines()
    assert line.startswith("gperceiver: error: "), err
    assert all(b.startswith(("gperceiver: note: ", "gperceiver: warning: ")) for b in before), err
    assert "Traceback" not in err and "unexpected" not in line, err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.fixture(scope="module")
def panel_text() -> tuple[str, str]:
    """A valid little markers/chroms pair, as text."""
    with tempfile.TemporaryDirectory() as d:
        codes = np.random.default_rng(0).integers(3, 6, size=(6, 8))
        mpath, cpath = write_panel(Path(d), codes)
        return mpath.read_text(), cpath.read_text()


@settings(max_examples=60, **SETTINGS)
@given(data=st.data(), which=st.sampled_from(["markers", "chroms"]))
def test_damaged_markers_or_chroms_end_in_a_clean_error_or_a_valid_store(
        data, which, panel_text):
    markers, chroms = panel_text
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        mpath, cpath, out = d / "markers.tsv", d / "chroms.tsv", d / "out.zarr"
        mpath.write_text(markers)
        cpath.write_text(chroms)
        target = mpath if which == "markers" else cpath
        damaged, bad_line = data.draw(damage(target.read_text()))
        target.write_bytes(damaged)
        code, err = run(["convert", "tsv", "--markers", str(mpath), "--chroms", str(cpath),
                         "-o", str(out), "--samples-chunk", "4", "-q"])
        if code == ExitCode.OK:
            ds = open_store(out)  # validated on opening
            assert ds.sizes["variants"] >= 1 and ds.sizes["samples"] >= 1
        else:
            assert_clean_failure(code, err, out)
            assert str(target) in err
            check_utf8_line(err, target, bad_line)


@settings(max_examples=60, **SETTINGS)
@given(data=st.data(), cv=st.sampled_from([None, 0]))
def test_damaged_phenotypes_end_in_a_clean_error_or_a_result(data, cv, example_store):
    phenos = (TEST_DATA / "phenos.tsv").read_text()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        path, out = d / "phenos.tsv", d / "out"
        damaged, bad_line = data.draw(damage(phenos))
        path.write_bytes(damaged)
        argv = ["baseline", str(example_store), str(path), "-o", str(out)]
        code, err = run(argv + ([] if cv is None else ["--cv", str(cv)]))
        if code == ExitCode.OK:
            assert any(out.iterdir())
        else:
            assert_clean_failure(code, err, out)
            assert str(path) in err or "--cv" in err
            check_utf8_line(err, path, bad_line)
