"""`convert vcf` and `convert vcz`: VCFs made here (msprime and by hand) -> genotype store.

Every store is checked against a direct cyvcf2 read of the same file.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import zarr

from gperceiver.converters.tsv import convert_tsv
from gperceiver.converters.vcf import convert_vcf
from gperceiver.converters.vcz import convert_vcz
from gperceiver.errors import ExitCode, UsageError
from gperceiver.preprocessing import gen_allele_decoder
from gperceiver.store import open_store
from tests.conftest import run_cli

HEADER = "##fileformat=VCFv4.2\n{contigs}##FORMAT=<ID=GT,Number=1,Type=String,Description=\"GT\">\n"
COLUMNS = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT"


def vcf_text(rows: list[str], samples: list[str], contigs: list[str]) -> str:
    """A VCF: `rows` are 'CHROM POS ID REF ALT GT GT ...' separated by spaces."""
    lines = [HEADER.format(contigs="".join(f"##contig=<ID={c}>\n" for c in contigs))]
    lines.append("\t".join([COLUMNS, *samples]) + "\n")
    for row in rows:
        chrom, pos, vid, ref, alt, *gts = row.split()
        lines.append("\t".join([chrom, pos, vid, ref, alt, ".", ".", ".", "GT", *gts]) + "\n")
    return "".join(lines)


def write(path: Path, text: str, how: str = "text") -> Path:
    """Write `text` uncompressed, bgzipped ('bgzf', + 'index' for a CSI) or plain gzip."""
    import pysam

    if how == "text":
        path.write_text(text)
    elif how == "gzip":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        plain = path.with_name(path.name + ".txt")
        plain.write_text(text)
        pysam.tabix_compress(str(plain), str(path), force=True)
        plain.unlink()
        if how == "bgzf+index":
            pysam.tabix_index(str(path), preset="vcf", csi=True, force=True)
    return path


def cyvcf2_calls(*paths: Path) -> tuple[np.ndarray, dict]:
    """(variants, samples, max ploidy) calls read with cyvcf2, padded with -2; and labels."""
    import cyvcf2

    rows, labels = [], {"contig": [], "pos": [], "id": [], "alleles": []}
    samples = None
    for path in paths:
        vcf = cyvcf2.VCF(str(path))
        samples = vcf.samples
        for v in vcf:
            rows.append([g[:-1] for g in v.genotypes])  # drop the phasing flag
            labels["contig"].append(v.CHROM)
            labels["pos"].append(v.POS)
            labels["id"].append(v.ID)
            labels["alleles"].append([v.REF, *v.ALT])
        vcf.close()
    ploidy = max(len(g) for row in rows for g in row)
    calls = np.full((len(rows), len(samples), ploidy), -2, dtype=np.int8)
    for i, row in enumerate(rows):
        for j, g in enumerate(row):
            calls[i, j, : len(g)] = g
    labels["samples"] = samples
    return calls, labels


def frequencies(calls: np.ndarray, n_alleles: int) -> np.ndarray:
    counts = np.stack([(calls == a).sum(axis=(1, 2)) for a in range(n_alleles)], axis=1)
    return (counts / counts.sum(axis=1, keepdims=True)).astype(np.float32)


def check_against_cyvcf2(store: Path, *vcfs: Path) -> None:
    ds = open_store(store)
    expected, labels = cyvcf2_calls(*vcfs)
    calls = ds.call_genotype.values
    assert ds.call_genotype.dtype == np.int8
    np.testing.assert_array_equal(calls, expected)
    assert list(ds.sample_id.values) == labels["samples"]
    assert list(ds.variant_position.values) == labels["pos"]
    contigs = np.asarray(ds.contig_id.values, dtype=object)
    assert list(contigs[ds.variant_contig.values]) == labels["contig"]
    n_alleles = ds.sizes["alleles"]
    alleles = [[a for a in row if a] for row in ds.variant_allele.values.tolist()]
    assert alleles == labels["alleles"]
    ids = list(ds.variant_id.values)
    assert len(set(ids)) == len(ids)
    for have, given in zip(ids, labels["id"], strict=True):
        if given is not None and labels["id"].count(given) == 1:
            assert have == given
    assert ds.attrs["ploidy"] == expected.shape[2] == ds.sizes["ploidy"]
    assert ds.attrs["n_alleles"] == n_alleles
    assert ds.attrs["source"] in ("vcf", "vcz")
    np.testing.assert_allclose(
        ds.variant_allele_frequency.values, frequencies(calls, n_alleles), rtol=1e-6
    )


# ---------------------------------------------------------------- simulated data


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> list[Path]:
    """Two chromosomes of 20 diploid samples each, simulated with msprime (linkage, some
    multi-allelic sites), as two bgzipped, unindexed VCFs."""
    import msprime

    folder = tmp_path_factory.mktemp("msprime")
    paths = []
    for k, chrom in enumerate(["chr1", "chr2"]):
        ts = msprime.sim_ancestry(
            samples=20, sequence_length=50_000, recombination_rate=1e-8,
            population_size=10_000, random_seed=11 + k,
        )
        ts = msprime.sim_mutations(ts, rate=2e-8, random_seed=5 + k)
        assert 50 < ts.num_sites < 1000
        plain = folder / f"{chrom}.vcf"
        with open(plain, "w") as f:
            ts.write_vcf(f, contig_id=chrom, position_transform=lambda x: np.asarray(x) + 1)
        path = write(folder / f"{chrom}.vcf.gz", plain.read_text(), "bgzf")
        plain.unlink()
        paths.append(path)
    return paths


def test_msprime_vcfs_through_the_cli(simulated, tmp_path, monkeypatch):
    monkeypatch.setenv("GPERCEIVER_PROGRESS", "1")  # bars even though stderr is a pipe
    out = tmp_path / "sim.zarr"
    proc = run_cli("convert", "vcf", *simulated, "-o", out, "--workers", "2",
                   "--samples-chunk", "8", "--variants-chunk", "64")
    assert proc.returncode == 0, proc.stderr
    assert "Explode" in proc.stderr and "Encode" in proc.stderr and proc.stdout == ""
    check_against_cyvcf2(out, *simulated)
    ds = open_store(out)
    assert list(ds.contig_id.values) == ["chr1", "chr2"]
    assert ds.call_genotype.data.chunksize == (64, 8, 2)
    # Inputs untouched: no index written beside them; no temporary folder left.
    assert sorted(p.name for p in simulated[0].parent.iterdir()) == ["chr1.vcf.gz", "chr2.vcf.gz"]
    assert [p.name for p in tmp_path.iterdir()] == ["sim.zarr"]


# ---------------------------------------------------------------- hand-written cases

MIXED = vcf_text(
    [
        # multi-allelic, every allele used; a missing diploid call
        "1 100 rs1 A C,G,T 0/1 2/3 ./. 3|3",
        # haploid, diploid, triploid and a missing haploid call in one row
        "1 200 . C T 1 0/1 0/1/1 .",
        # a partly missing call; a repeated ID
        "1 300 rs1 G A 1/. 0/0 1/1 0/1",
        "2 50 . T G,C 0/2 2/2 1/2 0/0",
        "2 60 . T G 0|1 1|0 0/0 ./1",
    ],
    samples=["s1", "s2", "s3", "s4"],
    contigs=["1", "2", "3"],
)


def test_multiallelic_mixed_ploidy_missing_several_contigs(tmp_path):
    vcf = write(tmp_path / "mixed.vcf", MIXED)
    out = convert_vcf(vcf, tmp_path / "mixed.zarr", workers=1, progress=False)
    check_against_cyvcf2(out, vcf)
    ds = open_store(out)
    calls = ds.call_genotype.values
    assert ds.sizes["alleles"] == 4 and ds.sizes["ploidy"] == 3
    np.testing.assert_array_equal(calls[0, :, :], [[0, 1, -2], [2, 3, -2], [-1, -1, -2], [3, 3, -2]])
    np.testing.assert_array_equal(calls[1, :, :], [[1, -2, -2], [0, 1, -2], [0, 1, 1], [-1, -2, -2]])
    np.testing.assert_array_equal(calls[2, 0], [1, -1, -2])
    assert list(ds.variant_allele.values[0]) == ["A", "C", "G", "T"]
    assert list(ds.variant_id.values) == ["rs1", "1:200:C:T", "1:300:G:A", "2:50:T:G,C", "2:60:T:G"]
    # padded copies (-2) and missing calls (-1) count in no frequency
    np.testing.assert_allclose(ds.variant_allele_frequency.values[1], [1 / 3, 2 / 3, 0, 0], rtol=1e-6)


def test_tetraploid(tmp_path):
    text = vcf_text(
        ["7 10 a A C 0/0/1/1 1/1/1/1 0/./1/1", "7 20 b A C,G 0/1/2/2 ./././. 2/2/2/2"],
        samples=["x", "y", "z"], contigs=["7"],
    )
    vcf = write(tmp_path / "tetra.vcf.gz", text, "bgzf+index")
    out = convert_vcf(vcf, tmp_path / "tetra.zarr", workers=1, progress=False)
    check_against_cyvcf2(out, vcf)
    assert open_store(out).attrs["ploidy"] == 4


@pytest.mark.parametrize("how", ["text", "gzip", "bgzf", "bgzf+index", "bcf"])
def test_every_compression_of_a_multi_contig_vcf(tmp_path, how):
    """Unindexed bgzip, plain gzip and uncompressed multi-contig files are indexed or
    recompressed in a temporary folder; the user's folder gets nothing new."""
    folder = tmp_path / "in"
    folder.mkdir()
    if how == "bcf":
        import pysam

        text = write(tmp_path / "src.vcf", MIXED)
        with pysam.VariantFile(str(text)) as src, pysam.VariantFile(
            str(folder / "m.bcf"), "wb", header=src.header
        ) as dst:
            for record in src:
                dst.write(record)
        vcf = folder / "m.bcf"
    else:
        vcf = write(folder / ("m.vcf" if how == "text" else "m.vcf.gz"), MIXED, how)
    before = sorted(p.name for p in folder.iterdir())
    out = convert_vcf(vcf, tmp_path / "m.zarr", workers=1, progress=False)
    check_against_cyvcf2(out, write(tmp_path / "ref.vcf", MIXED))
    assert sorted(p.name for p in folder.iterdir()) == before


def test_same_genotypes_as_tsv_and_vcf_give_identical_calls(tmp_path):
    """Diploid, two alleles, missing copies; the TSV decoder's sorted copies are written
    as the same unphased GT strings."""
    rng = np.random.default_rng(3)
    decoder = gen_allele_decoder(2, 3)  # allele number 0 = missing
    n_samples, n_markers = 12, 30
    codes = rng.integers(0, len(decoder), size=(n_samples, n_markers))
    chrom = np.where(np.arange(n_markers) < 18, "chrB", "chrA")  # chrB comes first
    pos = np.concatenate([np.arange(18) * 100 + 5, np.arange(12) * 70 + 9])
    names = [f"m{j}" for j in range(n_markers)]
    samples = [f"g{i}" for i in range(n_samples)]
    markers = tmp_path / "markers.tsv"
    markers.write_text(
        "\t".join(["name", *names]) + "\n"
        + "".join("\t".join([s, *map(str, row)]) + "\n" for s, row in zip(samples, codes,
                                                                          strict=True))
    )
    chroms = tmp_path / "chroms.tsv"
    chroms.write_text("chr\tmarker\tpos\n" + "".join(
        f"{c}\t{m}\t{p}\n" for c, m, p in zip(chrom, names, pos, strict=True)))

    def gt(code: int) -> str:
        return "/".join("." if a == 0 else str(a - 1) for a in decoder[code])

    rows = [
        " ".join([chrom[j], str(pos[j]), names[j], "A", "C", *(gt(c) for c in codes[:, j])])
        for j in range(n_markers)
    ]
    vcf = write(tmp_path / "same.vcf.gz", vcf_text(rows, samples, ["chrB", "chrA"]), "bgzf")
    tsv_store = convert_tsv(markers, chroms, tmp_path / "tsv.zarr", progress=False)
    vcf_store = convert_vcf(vcf, tmp_path / "vcf.zarr", workers=1, progress=False)
    a, b = open_store(tsv_store), open_store(vcf_store)
    np.testing.assert_array_equal(a.call_genotype.values, b.call_genotype.values)
    assert list(a.variant_id.values) == list(b.variant_id.values)
    assert list(a.sample_id.values) == list(b.sample_id.values)
    np.testing.assert_allclose(
        a.variant_allele_frequency.values[:, :2], b.variant_allele_frequency.values
    )


# ---------------------------------------------------------------- bad input

GOOD = vcf_text(["1 1 . A C 0/1", "1 2 . A C 1/1"], ["s"], ["1"])


def _bad_inputs(folder: Path) -> dict[str, tuple[Path, ExitCode, str]]:
    body = vcf_text([f"1 {p} . A C 0/1 1/1" for p in range(1, 30000)], ["a", "b"], ["1"])
    whole = gzip.compress(body.encode())
    (folder / "cut.vcf.gz").write_bytes(whole[: len(whole) // 2])
    write(folder / "bgzf.vcf.gz", body, "bgzf")
    data = (folder / "bgzf.vcf.gz").read_bytes()
    (folder / "cutbgzf.vcf.gz").write_bytes(data[: len(data) // 2])
    (folder / "bgzf.vcf.gz").unlink()
    (folder / "folder.vcf").mkdir()
    return {
        "not a VCF": (write(folder / "x.vcf", "chr\tpos\n1\t2\n"), ExitCode.INPUT_FORMAT,
                      "not a VCF"),
        "truncated gzip": (folder / "cut.vcf.gz", ExitCode.INPUT_FORMAT, "truncated"),
        "truncated bgzip": (folder / "cutbgzf.vcf.gz", ExitCode.INPUT_FORMAT, "truncated"),
        "no GT field": (
            write(folder / "nogt.vcf", GOOD.replace("##FORMAT=<ID=GT", "##FORMAT=<ID=DP")
                  .replace("\tGT\t", "\tDP\t")),
            ExitCode.INPUT_FORMAT, "no GT field",
        ),
        "no samples": (
            write(folder / "nosamples.vcf", "".join(
                "\t".join(line.split("\t")[:8]) + "\n" if not line.startswith("##") else line
                for line in GOOD.splitlines(keepends=True))),
            ExitCode.INPUT_FORMAT, "no samples",
        ),
        "unsorted": (
            write(folder / "unsorted.vcf", vcf_text(["1 9 . A C 0/1", "1 2 . A C 1/1"], ["s"],
                                                    ["1"])),
            ExitCode.INPUT_FORMAT, "sorted",
        ),
        # htslib's own message is captured into ours, with the record's line
        "a short record": (
            write(folder / "short.vcf", vcf_text(["1 1 . A C 0/1 1/1", "1 2 . A C 0/1"],
                                                 ["a", "b"], ["1"])),
            ExitCode.INPUT_FORMAT, "short.vcf, line 6: a record cannot be read (Number of "
            "columns at 1:2 does not match the number of samples (1 vs 2))",
        ),
        "a bad genotype": (
            write(folder / "badgt.vcf.gz", vcf_text(["1 1 . A C 0/1 1/1", "1 2 . A C 0/x 1/1"],
                                                    ["a", "b"], ["1"]), "gzip"),
            ExitCode.INPUT_FORMAT, "badgt.vcf.gz, line 6: a record cannot be read (Couldn't "
            "read GT data",
        ),
        "a POS that is no number": (
            write(folder / "pos.vcf", vcf_text(["1 9 . A C 0/1", "1 2a . A C 1/1"], ["s"],
                                               ["1"])),
            ExitCode.INPUT_FORMAT, "pos.vcf, line 6, column POS: POS '2a' is not a whole number",
        ),
        "missing path": (folder / "nope.vcf.gz", ExitCode.INPUT_NOT_FOUND, "no such file"),
        "a folder": (folder / "folder.vcf", ExitCode.INPUT_NOT_FOUND, "folder"),
    }


def test_bad_inputs_one_line_exit_code_nothing_written(tmp_path, capfd):
    """Each case through the CLI's main() in this process (fast), one in a subprocess."""
    from gperceiver.cli.main import main

    folder = tmp_path / "in"
    folder.mkdir()
    for case, (path, code, words) in _bad_inputs(folder).items():
        out = tmp_path / f"{path.stem}.zarr"
        args = ["convert", "vcf", str(path), "-o", str(out), "--workers", "1"]
        if case == "not a VCF":
            proc = run_cli(*args)
            returncode, stderr = proc.returncode, proc.stderr
        else:
            returncode = main(args)
            stderr = capfd.readouterr().err
        lines = stderr.strip().splitlines()
        assert returncode == code, (case, stderr)
        assert len(lines) == 1 and str(path.name) in lines[0], (case, stderr)
        assert words in lines[0], (case, lines[0])
        assert not out.exists(), case
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_temp_dir_is_used_and_emptied(tmp_path, monkeypatch):
    """The work folder (recompressed input, index, ICF) goes to --temp-dir, then away."""
    import gperceiver.converters.vcf as vcf_module

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen = []
    real = vcf_module._vcf2zarr

    def spy(paths, ready, *args):
        seen.extend(p.parent.parent for p in ready)
        return real(paths, ready, *args)

    monkeypatch.setattr(vcf_module, "_vcf2zarr", spy)
    vcf = write(tmp_path / "g.vcf", GOOD)
    out = convert_vcf(vcf, tmp_path / "g.zarr", workers=1, temp_dir=scratch, progress=False)
    assert seen and seen[0].parent == scratch
    assert list(scratch.iterdir()) == []
    assert open_store(out).sizes["variants"] == 2
    with pytest.raises(UsageError):
        convert_vcf(vcf, tmp_path / "h.zarr", temp_dir=tmp_path / "nope", progress=False)


def test_existing_output_needs_force(tmp_path):
    vcf = write(tmp_path / "g.vcf", GOOD)
    (tmp_path / "out.zarr").mkdir()
    proc = run_cli("convert", "vcf", vcf, "-o", tmp_path / "out.zarr")
    assert proc.returncode == ExitCode.CANNOT_WRITE
    assert list((tmp_path / "out.zarr").iterdir()) == []


# ---------------------------------------------------------------- existing VCF Zarr


@pytest.fixture(scope="module")
def bio2zarr_vcz(simulated, tmp_path_factory) -> Path:
    """What a user already has: vcf2zarr's output with its default chunks (10,000 samples)."""
    from bio2zarr import vcf as vcf2zarr

    out = tmp_path_factory.mktemp("vcz") / "sim.vcz"
    vcf2zarr.convert(simulated, out, worker_processes=0, variants_chunk_size=100)
    return out


def test_vcz_with_default_chunks_is_rechunked_for_training(bio2zarr_vcz, simulated, tmp_path):
    before = sorted(p.name for p in bio2zarr_vcz.iterdir())
    out = tmp_path / "train.zarr"
    proc = run_cli("convert", "vcz", bio2zarr_vcz, "-o", out, "--samples-chunk", "16")
    assert proc.returncode == 0, proc.stderr
    ds = open_store(out)
    assert ds.call_genotype.data.chunksize[1] == 16
    assert ds.attrs["source"] == "vcz"
    src = zarr.open_group(bio2zarr_vcz, mode="r")
    np.testing.assert_array_equal(ds.call_genotype.values, src["call_genotype"][:])
    np.testing.assert_array_equal(ds.call_genotype_phased.values, src["call_genotype_phased"][:])
    expected, _ = cyvcf2_calls(*simulated)
    np.testing.assert_array_equal(ds.call_genotype.values, expected)
    np.testing.assert_allclose(
        ds.variant_allele_frequency.values, frequencies(expected, ds.sizes["alleles"]),
        rtol=1e-6,
    )
    assert sorted(p.name for p in bio2zarr_vcz.iterdir()) == before  # input unchanged
    assert "variant_allele_frequency" not in src


def test_vcz_chunk_rules(bio2zarr_vcz, tmp_path):
    """Small sample chunks are kept (a plain copy); zarr v3 input with int16 calls is
    read too (calls narrowed to int8)."""
    from bio2zarr import vcf as vcf2zarr  # noqa: F401 - bio2zarr made the store

    v2 = tmp_path / "ok.vcz"
    convert_vcz(bio2zarr_vcz, v2, samples_chunk=8, variants_chunk=50, progress=False)
    assert open_store(v2).call_genotype.data.chunksize == (50, 8, 2)
    again = convert_vcz(v2, tmp_path / "again.zarr", progress=False)
    assert open_store(again).call_genotype.data.chunksize == (50, 8, 2)

    v3 = tmp_path / "v3.vcz"
    src = zarr.open_group(bio2zarr_vcz, mode="r")
    dst = zarr.open_group(v3, mode="w", zarr_format=3)
    for name, array in src.arrays():
        copy = dst.create_array(
            name, shape=array.shape, chunks=array.chunks,
            dtype=str if array.dtype.kind in "UOT" else
            np.int16 if name == "call_genotype" else array.dtype,
            dimension_names=array.attrs["_ARRAY_DIMENSIONS"],
        )
        copy[...] = array[...]
    out = convert_vcz(v3, tmp_path / "from_v3.zarr", progress=False)
    ds = open_store(out)
    assert ds.call_genotype.dtype == np.int8
    np.testing.assert_array_equal(ds.call_genotype.values, src["call_genotype"][:])
    assert ds.call_genotype.data.chunksize[1] == 20  # 20 samples in one chunk: kept


def test_zipped_vcz(tmp_path):
    from bio2zarr import vcf as vcf2zarr

    vcf = write(tmp_path / "m.vcf.gz", MIXED, "bgzf+index")
    vcf2zarr.convert([vcf], tmp_path / "m.vcz.zip", worker_processes=0)
    out = convert_vcz(tmp_path / "m.vcz.zip", tmp_path / "m.zarr", progress=False)
    check_against_cyvcf2(out, vcf)
    assert open_store(out).attrs["source"] == "vcz"


def test_vcz_bad_input(tmp_path, capfd):
    from gperceiver.cli.main import main

    not_zarr = tmp_path / "x.vcz"
    not_zarr.mkdir()
    (not_zarr / "hello.txt").write_text("hi")
    out = str(tmp_path / "o.zarr")
    assert main(["convert", "vcz", str(not_zarr), "-o", out]) == ExitCode.INPUT_FORMAT
    assert len(capfd.readouterr().err.strip().splitlines()) == 1
    assert main(["convert", "vcz", str(tmp_path / "no.vcz"), "-o", out]) == ExitCode.INPUT_NOT_FOUND
    assert "no.vcz" in capfd.readouterr().err
    no_calls = zarr.open_group(tmp_path / "nocalls.vcz", mode="w")
    no_calls.create_array("sample_id", shape=(2,), dtype=str)
    assert main(["convert", "vcz", str(tmp_path / "nocalls.vcz"), "-o", out]) == 3
    assert "no call_genotype" in capfd.readouterr().err
    assert main(["convert", "vcz", str(not_zarr), "-o", out, "--workers", "0"]) == ExitCode.USAGE
    assert "--workers" in capfd.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nocalls.vcz", "x.vcz"]
