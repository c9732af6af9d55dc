"""`convert plink`: PLINK filesets written with bed-reader -> genotype store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gperceiver.converters.plink import convert_plink
from gperceiver.errors import ExitCode
from gperceiver.store import open_store
from tests.conftest import run_cli

N_SAMPLES, N_VARIANTS = 13, 21  # 13 samples: the last .bed byte of a variant is partial


def write_fileset(prefix: Path, seed: int = 0, iids: list[str] | None = None) -> np.ndarray:
    """A fileset with 3 contigs, missing calls and some '.' IDs; returns A1 counts (NaN missing)."""
    from bed_reader import to_bed

    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 3, size=(N_SAMPLES, N_VARIANTS)).astype(np.float32)
    counts[rng.random(counts.shape) < 0.1] = np.nan
    chrom = np.repeat(["5", "X", "2"], 7)
    to_bed(
        prefix.with_suffix(".bed"),
        counts,
        properties={
            "iid": iids or [f"ind{i}" for i in range(N_SAMPLES)],
            "sid": [f"snp{j}" if j % 4 else "." for j in range(N_VARIANTS)],
            "chromosome": chrom,
            "bp_position": np.tile(np.arange(1, 8) * 1000, 3),
            "allele_1": ["A"] * N_VARIANTS,
            "allele_2": ["G"] * N_VARIANTS,
        },
    )
    return counts


def test_plink_matches_bed_reader(tmp_path):
    from bed_reader import open_bed

    write_fileset(tmp_path / "panel")
    out = tmp_path / "panel.zarr"
    proc = run_cli("convert", "plink", tmp_path / "panel", "-o", out, "--workers", "1",
                   "--samples-chunk", "4", "--variants-chunk", "5")
    assert proc.returncode == 0, proc.stderr
    ds = open_store(out)
    with open_bed(tmp_path / "panel.bed") as bed:
        a1 = bed.read(dtype="float32").T  # (variants, samples): copies of allele_1
        iid, chrom, pos = bed.iid, bed.chromosome, bed.bp_position
    calls = ds.call_genotype.values
    missing = np.isnan(a1)
    assert calls.dtype == np.int8 and calls.shape == (N_VARIANTS, N_SAMPLES, 2)
    assert (calls[missing] == -1).all()
    np.testing.assert_array_equal(calls.sum(axis=2)[~missing], a1[~missing])
    assert (calls[~missing] >= 0).all()
    np.testing.assert_array_equal(ds.variant_allele.values[:, 1], ["A"] * N_VARIANTS)  # A1
    np.testing.assert_array_equal(ds.variant_allele.values[:, 0], ["G"] * N_VARIANTS)  # A2
    assert list(ds.sample_id.values) == list(iid)
    assert list(ds.contig_id.values) == ["5", "X", "2"]  # first appearance in the .bim
    contigs = np.asarray(ds.contig_id.values, dtype=object)
    assert list(contigs[ds.variant_contig.values]) == list(chrom)
    np.testing.assert_array_equal(ds.variant_position.values, pos)
    ids = list(ds.variant_id.values)
    assert len(set(ids)) == N_VARIANTS
    assert ids[1] == "snp1" and ids[0] == "5:1000:G:A"  # '.' made CHROM:POS:REF:ALT
    freq = np.nansum(a1, axis=1) / (2 * (~missing).sum(axis=1))
    np.testing.assert_allclose(ds.variant_allele_frequency.values[:, 1], freq, rtol=1e-6)
    assert ds.attrs["source"] == "plink" and ds.attrs["ploidy"] == 2
    assert ds.attrs["n_alleles"] == 2
    assert ds.call_genotype.data.chunksize == (5, 4, 2)


def test_prefix_may_name_the_bed_file(tmp_path):
    counts = write_fileset(tmp_path / "p", seed=1)
    out = convert_plink(tmp_path / "p.bed", tmp_path / "p.zarr", workers=1, progress=False)
    calls = open_store(out).call_genotype.values
    np.testing.assert_array_equal(np.isnan(counts.T), (calls == -1).all(axis=2))


def _break(prefix: Path, how: str) -> None:
    bed = prefix.with_suffix(".bed")
    if how == "no .fam":
        prefix.with_suffix(".fam").unlink()
    elif how == "bad magic":
        bed.write_bytes(b"\x00\x00\x00" + bed.read_bytes()[3:])
    elif how == "truncated .bed":
        bed.write_bytes(bed.read_bytes()[:-2])
    elif how == "short .bim row":
        bim = prefix.with_suffix(".bim")
        lines = bim.read_text().splitlines()
        lines[3] = "\t".join(lines[3].split("\t")[:3])
        bim.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "how, code, words",
    [
        ("no .fam", ExitCode.INPUT_NOT_FOUND, "bad.fam: no such file"),
        ("bad magic", ExitCode.INPUT_FORMAT, "bad.bed: not a variant-major PLINK"),
        ("truncated .bed", ExitCode.INPUT_FORMAT, "bad.bed: has"),
        ("short .bim row", ExitCode.INPUT_FORMAT, "bad.bim"),
        ("duplicate IIDs", ExitCode.INPUT_FORMAT, "duplicate sample ID 'same'"),
    ],
)
def test_bad_filesets(tmp_path, capfd, how, code, words):
    from gperceiver.cli.main import main

    iids = ["same"] * N_SAMPLES if how == "duplicate IIDs" else None
    write_fileset(tmp_path / "bad", iids=iids)
    _break(tmp_path / "bad", how)
    out = tmp_path / "out.zarr"
    assert main(["convert", "plink", str(tmp_path / "bad"), "-o", str(out)]) == code
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
