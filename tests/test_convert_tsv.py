"""The TSV converter: round trips, frequencies, chunks, gzip, atomicity, every bad input."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from gperceiver import gen_allele_decoder, open_store
from gperceiver.cli.main import main
from gperceiver.converters.tsv import convert_tsv
from gperceiver.errors import ExitCode, InputFormatError
from gperceiver.store import input_positions
from tests.conftest import TEST_DATA, run_cli


def write_panel(
    folder: Path,
    codes: np.ndarray,
    *,
    chroms: list[tuple[str, str, str]] | None = None,
    names: list[str] | None = None,
    markers: list[str] | None = None,
    gz: bool = False,
) -> tuple[Path, Path]:
    """Write markers/chroms TSVs for integer `codes` (samples x markers)."""
    n, m = codes.shape
    markers = markers or [f"m{j}" for j in range(m)]
    names = names or [f"s{i}" for i in range(n)]
    if chroms is None:
        chroms = [(f"c{j % 3}", mk, str(j)) for j, mk in enumerate(markers)]
    text = "name\t" + "\t".join(markers) + "\n"
    text += "".join(f"{nm}\t" + "\t".join(map(str, row)) + "\n" for nm, row in zip(names, codes, strict=True))
    ctext = "chr\tmarker\tpos\n" + "".join("\t".join(r) + "\n" for r in chroms)
    suffix = ".tsv.gz" if gz else ".tsv"
    mpath, cpath = folder / f"markers{suffix}", folder / f"chroms{suffix}"
    for path, body in ((mpath, text), (cpath, ctext)):
        if gz:
            with gzip.open(path, "wt") as f:
                f.write(body)
        else:
            path.write_text(body)
    return mpath, cpath


def decode_store(path: Path, decoder: list[list[int]]) -> np.ndarray:
    """Back from the store to codes (samples x variants in store order)."""
    g = zarr.open_group(str(path), mode="r")["call_genotype"][:]  # (V, S, P)
    lookup = {tuple(np.array(t) - 1): k for k, t in enumerate(decoder)}
    v, s, _ = g.shape
    return np.array([[lookup[tuple(g[j, i])] for j in range(v)] for i in range(s)])


def test_gen_allele_decoder():
    assert gen_allele_decoder(2, 3) == [[0, 0], [0, 1], [0, 2], [1, 1], [1, 2], [2, 2]]
    for ploidy, nalleles in itertools.product([1, 2, 4, 6], [2, 3, 5]):
        dec = gen_allele_decoder(ploidy, nalleles)
        assert len(dec) == len(set(map(tuple, dec)))
        assert all(list(t) == sorted(t) and len(t) == ploidy for t in dec)
        assert len(dec) == len(list(itertools.combinations_with_replacement(range(nalleles), ploidy)))


@pytest.mark.parametrize(
    ("ploidy", "nalleles"), [(1, 2), (1, 5), (2, 3), (2, 5), (4, 3), (4, 5), (6, 2), (6, 5)]
)
def test_round_trip(tmp_path, ploidy, nalleles):
    rng = np.random.default_rng(ploidy * 10 + nalleles)
    decoder = gen_allele_decoder(ploidy, nalleles)
    n, m = 23, 17
    codes = rng.integers(0, len(decoder), size=(n, m))  # includes missing (allele 0) copies
    # chroms listed in a shuffled order: store order is contig first appearance, then position
    order = rng.permutation(m)
    chroms = [(f"chr{j % 4}", f"m{j}", f"{rng.uniform(0, 50):.3f}") for j in order]
    mpath, cpath = write_panel(tmp_path, codes, chroms=chroms)
    out = tmp_path / "store.zarr"
    convert_tsv(
        mpath, cpath, out, ploidy=ploidy, nalleles=nalleles,
        samples_chunk=5, variants_chunk=4, progress=False,
    )
    ds = open_store(out)
    # expected order of variants
    first = {}
    for c, _, _ in chroms:
        first.setdefault(c, len(first))
    expected = sorted(chroms, key=lambda r: (first[r[0]], float(r[2])))
    assert list(ds.variant_id.values) == [r[1] for r in expected]
    assert list(ds.contig_id.values) == list(first)
    assert list(ds.sample_id.values) == [f"s{i}" for i in range(n)]
    assert ds.variant_position.dtype == np.int32  # VCF Zarr's, from fractional positions
    np.testing.assert_allclose(input_positions(ds), [float(r[2]) for r in expected])
    cols = [int(r[1][1:]) for r in expected]
    np.testing.assert_array_equal(decode_store(out, decoder), codes[:, cols])
    assert ds.attrs["ploidy"] == ploidy and ds.sizes["alleles"] == nalleles - 1


@pytest.mark.parametrize(("ploidy", "nalleles"), [(2, 3), (4, 4)])
def test_frequencies_equal_numpy(tmp_path, ploidy, nalleles):
    rng = np.random.default_rng(7)
    decoder = gen_allele_decoder(ploidy, nalleles)
    codes = rng.integers(0, len(decoder), size=(31, 12))
    codes[:, 3] = 0  # a locus with no call at all
    mpath, cpath = write_panel(tmp_path, codes, chroms=[("1", f"m{j}", str(j)) for j in range(12)])
    out = tmp_path / "s.zarr"
    convert_tsv(mpath, cpath, out, ploidy=ploidy, nalleles=nalleles, progress=False)
    freq = open_store(out).variant_allele_frequency.values
    g = np.asarray(decoder)[codes] - 1  # (S, V, P)
    for j in range(12):
        calls = g[:, j].ravel()
        calls = calls[calls >= 0]
        if calls.size == 0:
            assert np.isnan(freq[j]).all()
            continue
        want = np.bincount(calls, minlength=nalleles - 1) / calls.size
        np.testing.assert_allclose(freq[j], want, rtol=1e-6)


def test_chunks_honoured(tmp_path):
    codes = np.random.default_rng(0).integers(3, 6, size=(50, 30))
    mpath, cpath = write_panel(tmp_path, codes)
    out = tmp_path / "s.zarr"
    convert_tsv(mpath, cpath, out, samples_chunk=8, variants_chunk=7, progress=False)
    assert zarr.open_group(str(out))["call_genotype"].chunks == (7, 8, 2)
    assert open_store(out).call_genotype.data.chunksize == (7, 8, 2)


def test_gzip_input_equals_plain(tmp_path):
    codes = np.random.default_rng(1).integers(0, 6, size=(20, 9))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = write_panel(tmp_path / "a", codes)
    gz = write_panel(tmp_path / "b", codes, gz=True)
    convert_tsv(*plain, tmp_path / "p.zarr", progress=False)
    convert_tsv(*gz, tmp_path / "g.zarr", progress=False)
    a, b = open_store(tmp_path / "p.zarr"), open_store(tmp_path / "g.zarr")
    np.testing.assert_array_equal(a.call_genotype.values, b.call_genotype.values)


def test_multi_digit_codes_and_crlf(tmp_path):
    decoder = gen_allele_decoder(4, 4)  # 35 codes: two digits
    codes = np.random.default_rng(2).integers(0, len(decoder), size=(9, 6))
    mpath, cpath = write_panel(tmp_path, codes)
    mpath.write_bytes(mpath.read_bytes().replace(b"\n", b"\r\n"))
    out = tmp_path / "s.zarr"
    convert_tsv(mpath, cpath, out, ploidy=4, nalleles=4, progress=False)
    np.testing.assert_array_equal(decode_store(out, decoder), codes[:, np.argsort(
        [j % 3 * 100 + j for j in range(6)])])


def test_decoder_file(tmp_path):
    decoder = [[0, 0], [1, 1], [1, 2], [2, 2], [1, 3], [3, 3]]  # a custom, 3-allele decoder
    (tmp_path / "dec.json").write_text(json.dumps(decoder))
    codes = np.random.default_rng(3).integers(0, 6, size=(10, 5))
    mpath, cpath = write_panel(tmp_path, codes, chroms=[("1", f"m{j}", str(j)) for j in range(5)])
    out = tmp_path / "s.zarr"
    assert main(["convert", "tsv", "--markers", str(mpath), "--chroms", str(cpath),
                 "--decoder", str(tmp_path / "dec.json"), "-o", str(out), "-q"]) == 0
    ds = open_store(out)
    assert ds.sizes["alleles"] == 3 and ds.attrs["tsv_decoder"] == decoder
    np.testing.assert_array_equal(decode_store(out, decoder), codes)


def test_failure_midway_leaves_nothing(tmp_path):
    codes = np.random.default_rng(4).integers(3, 6, size=(40, 10))
    codes[37, 4] = 9  # outside the default decoder, in the last sample block
    mpath, cpath = write_panel(tmp_path, codes)
    out = tmp_path / "s.zarr"
    with pytest.raises(Exception, match="line 39, column 6 .m4.: code 9 is outside"):
        convert_tsv(mpath, cpath, out, samples_chunk=8, progress=False)
    assert sorted(tmp_path.iterdir()) == sorted([mpath, cpath])


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "ex.zarr"
    proc = run_cli("convert", "tsv", "--markers", TEST_DATA / "markers.tsv",
                   "--chroms", TEST_DATA / "chroms.tsv", "-o", out, env={"GPERCEIVER_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "convert" in proc.stderr and "100%" in proc.stderr  # the progress bar
    info = run_cli("info", out, "--json", check=True)
    summary = json.loads(info.stdout)
    assert summary["samples"] == 40 and summary["variants"] == 60 and summary["ploidy"] == 2
    assert 0 < summary["missing_rate"] < 0.1
    text = run_cli("info", out, check=True).stdout
    assert "samples" in text and "MAF" in text
    # exists without --force: refused, untouched; with --force: replaced
    before = (out / "call_genotype" / ".zarray").stat().st_mtime_ns
    again = run_cli("convert", "tsv", "--markers", TEST_DATA / "markers.tsv",
                    "--chroms", TEST_DATA / "chroms.tsv", "-o", out)
    assert again.returncode == ExitCode.CANNOT_WRITE
    assert again.stderr.strip().count("\n") == 0 and "--force" in again.stderr
    assert (out / "call_genotype" / ".zarray").stat().st_mtime_ns == before
    forced = run_cli("convert", "tsv", "--markers", TEST_DATA / "markers.tsv",
                     "--chroms", TEST_DATA / "chroms.tsv", "-o", out, "--force", "-q")
    assert forced.returncode == 0
    assert open_store(out).sizes["samples"] == 40


# ---------------------------------------------------------------- bad inputs, one per case

GOOD = np.array([[3, 4, 5], [4, 4, 3], [5, 3, 0]])
GOOD_CHROMS = [("1", "a", "1"), ("1", "b", "2"), ("2", "c", "1.5")]


def _bad_markers(text: str):
    def make(folder: Path):
        m, c = write_panel(folder, GOOD, markers=["a", "b", "c"], chroms=GOOD_CHROMS)
        m.write_text(text)
        return m, c
    return make


def _bad_chroms(text: str):
    def make(folder: Path):
        m, c = write_panel(folder, GOOD, markers=["a", "b", "c"], chroms=GOOD_CHROMS)
        c.write_text(text)
        return m, c
    return make


HEAD = "name\ta\tb\tc\n"


def _truncated_gzip(folder: Path):
    _, c = write_panel(folder, GOOD, markers=["a", "b", "c"], chroms=GOOD_CHROMS)
    m = folder / "markers.tsv.gz"
    m.write_bytes(gzip.compress((HEAD + "x\t3\t4\t4\n" * 500).encode())[:-40])
    return m, c


CASES = {
    "code outside decoder": (_bad_markers(HEAD + "x\t3\t7\t4\n"), 3, "markers.tsv, line 2, column 3 (b): code 7 is outside"),
    "non-integer cell": (_bad_markers(HEAD + "x\t3\t4\t4\ny\t3\t1.5\t4\n"), 3, "markers.tsv, line 3, column 3 (b): '1.5' is not a non-negative integer"),
    "negative cell": (_bad_markers(HEAD + "x\t3\t-1\t4\n"), 3, "line 2, column 3 (b): '-1' is not"),
    "empty cell": (_bad_markers(HEAD + "x\t3\t\t4\n"), 3, "markers.tsv, line 2, column 3 (b): empty cell"),
    "ragged row": (_bad_markers(HEAD + "x\t3\t4\t4\ny\t3\t4\n"), 3, "markers.tsv, line 3: ragged row: 3 columns, the header has 4"),
    "duplicate sample": (_bad_markers(HEAD + "x\t3\t4\t4\nx\t3\t4\t4\n"), 3, "markers.tsv, line 3, column 1: duplicate genotype name 'x' (first on line 2)"),
    "duplicate marker in markers": (_bad_markers("name\ta\tb\ta\nx\t3\t4\t4\n"), 3, "markers.tsv, line 1, column 4: duplicate marker 'a'"),
    "duplicate marker in chroms": (_bad_chroms("chr\tmarker\tpos\n1\ta\t1\n1\tb\t2\n2\tc\t1\n2\ta\t3\n"), 3, "chroms.tsv, line 5, column marker: duplicate marker 'a' (first on line 2)"),
    "marker only in chroms": (_bad_chroms("chr\tmarker\tpos\n1\ta\t1\n1\tb\t2\n2\tc\t1\n2\td\t3\n"), 3, "chroms.tsv: 1 marker(s) not in"),
    "marker only in markers": (_bad_chroms("chr\tmarker\tpos\n1\ta\t1\n1\tb\t2\n"), 3, "markers.tsv: 1 marker(s) not in"),
    "non-numeric position": (_bad_chroms("chr\tmarker\tpos\n1\ta\t1\n1\tb\tten\n2\tc\t1\n"), 3, "chroms.tsv, line 3, column pos: position 'ten' is not a number"),
    "position beyond int64": (_bad_chroms("chr\tmarker\tpos\n1\ta\t1\n1\tb\t12345678901234567890\n2\tc\t1\n"), 3, "chroms.tsv, line 3, column pos: position '12345678901234567890' is out of range"),
    "fractional position too large": (_bad_chroms("chr\tmarker\tpos\n1\ta\t0.5\n1\tb\t1e12\n2\tc\t1\n"), 3, "chroms.tsv, line 3, column pos: position '1e12' is out of range: at most 9,007,199,254 either side of 0 (fractional positions are read as Mb)"),
    "missing chroms header": (_bad_chroms("chr\tmarker\tposition\n1\ta\t1\n"), 3, "chroms.tsv, line 1: missing required header column 'pos'"),
    "missing markers header": (_bad_markers("id\ta\tb\tc\nx\t3\t4\t4\n"), 3, "markers.tsv, line 1, column 1: first header column must be 'name'"),
    "empty markers file": (_bad_markers(""), 3, "markers.tsv: empty file"),
    "empty chroms file": (_bad_chroms(""), 3, "chroms.tsv: empty file"),
    "no genotype rows": (_bad_markers(HEAD), 3, "markers.tsv: no genotype rows"),
    "truncated gzip": (_truncated_gzip, 3, "markers.tsv.gz: cannot read compressed data"),
    "unreadable path": (lambda f: (f / "nope.tsv", write_panel(f, GOOD)[1]), 4, "nope.tsv: no such file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(tmp_path, capsys, case):
    make, code, message = CASES[case]
    mpath, cpath = make(tmp_path)
    out = tmp_path / "out.zarr"
    rc = main(["convert", "tsv", "--markers", str(mpath), "--chroms", str(cpath),
               "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == code, err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.zarr")]


def test_bad_input_in_subprocess(tmp_path):
    """The same clean line and exit code from a real process, nothing left behind."""
    mpath, cpath = _bad_markers(HEAD + "x\t3\tAA\t4\n")(tmp_path)
    proc = run_cli("convert", "tsv", "--markers", mpath, "--chroms", cpath, "-o", tmp_path / "o")
    assert proc.returncode == ExitCode.INPUT_FORMAT
    assert proc.stderr.strip() == (
        f"gperceiver: error: {mpath}, line 2, column 3 (b): 'AA' is not a non-negative integer code"
    )
    assert not (tmp_path / "o").exists()
    # a line break inside a cell is shown escaped: the error stays one line
    mpath, cpath = _bad_markers(HEAD + "x\t3\t5\r\x0b\t4\n")(tmp_path)
    proc = run_cli("convert", "tsv", "--markers", mpath, "--chroms", cpath, "-o", tmp_path / "o")
    assert proc.returncode == ExitCode.INPUT_FORMAT
    assert proc.stderr.strip().splitlines() == [
        f"gperceiver: error: {mpath}, line 2, column 3 (b): '5\\r\\x0b' is not a "
        "non-negative integer code"]


def test_usage_errors(tmp_path, capsys):
    m, c = write_panel(tmp_path, GOOD, markers=["a", "b", "c"], chroms=GOOD_CHROMS)
    assert main(["convert", "tsv", "--markers", str(m), "--chroms", str(c), "-o",
                 str(tmp_path / "o"), "--nalleles", "1"]) == ExitCode.USAGE
    assert "nalleles must be >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["convert", "tsv", "--markers", str(m)])
    assert e.value.code == ExitCode.USAGE


# ---------------------------------------------------------------- codings


def _count_table(tmp_path, cells: list[list[str]], name="m.tsv"):
    """A markers TSV of the given cells and its chroms TSV."""
    markers, chroms = tmp_path / name, tmp_path / "c.tsv"
    m = len(cells[0])
    markers.write_text("name\t" + "\t".join(f"m{j}" for j in range(m)) + "\n" + "".join(
        f"s{i}\t" + "\t".join(row) + "\n" for i, row in enumerate(cells)))
    chroms.write_text("chr\tmarker\tpos\n" + "".join(f"1\tm{j}\t{10 * j}\n" for j in range(m)))
    return markers, chroms


def _dosages(store) -> tuple[np.ndarray, np.ndarray]:
    """(samples, variants) alternate-allele counts and missing flags of a store."""
    from gperceiver.store import open_store

    calls = open_store(store)["call_genotype"].values
    return (calls == 1).sum(-1).T, (calls < 0).any(-1).T


@pytest.mark.parametrize("coding, ploidy, shift", [("dosage", 2, 0), ("dosage", 4, 0),
                                                   ("dosage", 1, 0), ("rrblup", 2, -1)])
def test_dosage_and_rrblup_tables_convert(tmp_path, coding, ploidy, shift):
    rng = np.random.default_rng(ploidy)
    dose = rng.integers(0, ploidy + 1, size=(12, 9))
    cells = [[str(d + shift) for d in row] for row in dose]
    cells[2][3], cells[5][0], cells[7][8], cells[9][1] = "NA", "", ".", "NaN"
    markers, chroms = _count_table(tmp_path, cells)
    out = convert_tsv(markers, chroms, tmp_path / "s.zarr", coding=coding, ploidy=ploidy,
                      progress=False)
    got, missing = _dosages(out)
    assert missing.sum() == 4 and missing[2, 3] and missing[5, 0] and missing[7, 8]
    assert missing[9, 1]
    np.testing.assert_array_equal(got[~missing], dose[~missing])


def test_dosage_like_decoder_table_is_refused_naming_the_flag(tmp_path, cli):
    dose = np.random.default_rng(0).integers(0, 3, size=(20, 10))
    markers, chroms = _count_table(tmp_path, [[str(d) for d in row] for row in dose])
    with pytest.raises(InputFormatError, match=r"look like 0\.\.2 dosages.*--coding dosage"):
        convert_tsv(markers, chroms, tmp_path / "s.zarr", progress=False)
    assert not (tmp_path / "s.zarr").exists()
    # said explicitly, decoder coding reads them anyway: 0 is missing, 1 and 2 are
    # genotypes with one missing copy (0/1, 0/2 in gen_allele_decoder)
    out = convert_tsv(markers, chroms, tmp_path / "s.zarr", coding="decoder", progress=False)
    assert _dosages(out)[1].all()
    # a decoder table without code 0 and many 1s and 2s still converts
    codes = np.random.default_rng(1).integers(1, 3, size=(20, 10))
    markers2, _ = _count_table(tmp_path, [[str(c) for c in row] for row in codes], "d.tsv")
    convert_tsv(markers2, chroms, tmp_path / "d.zarr", progress=False)
    proc = cli("convert", "tsv", "--markers", markers, "--chroms", chroms, "-o",
               tmp_path / "c.zarr", "--coding", "dosage", "-q")
    assert proc.returncode == 0, proc.stderr
    refused = cli("convert", "tsv", "--markers", markers, "--chroms", chroms, "-o",
                  tmp_path / "e.zarr")
    assert refused.returncode == ExitCode.INPUT_FORMAT and "--coding dosage" in refused.stderr


@pytest.mark.parametrize("coding, cell, fragment", [
    ("dosage", "3", "'3' is not a dosage code (0..2"),
    ("rrblup", "2", "'2' is not a rrblup code (-1..1"),
    ("dosage", "x", "'x' is not a dosage code"),
    (None, "NA", "'NA' is not a non-negative integer code (dosages or rrBLUP"),
])
def test_bad_count_cells_are_located(tmp_path, coding, cell, fragment):
    cells = [["0", "1", "1"], ["1", "1", "0"], ["1", cell, "1"]]
    markers, chroms = _count_table(tmp_path, cells)
    with pytest.raises(InputFormatError) as err:
        convert_tsv(markers, chroms, tmp_path / "s.zarr", coding=coding, progress=False)
    assert f"{markers}, line 4, column 3 (m1): " in str(err.value)
    assert fragment in str(err.value)
