"""The store as the VCF Zarr ecosystem reads it: plain xarray and sgkit's variable specs,
labelled access, `upgrade` of older stores, `filter`, and round trips through vcztools
and bio2zarr's vcf2zarr, plink2zarr and tskit2zarr."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from gperceiver import open_store
from gperceiver.errors import ExitCode
from gperceiver.store import input_positions
from tests.conftest import TEST_DATA, run_cli
from tests.tiny_stores import ONE_THREAD, founder_store

# sgkit 0.10's variable specs (dtype kind, dims) for the variables a store holds.
# sgkit itself pins zarr < 3 and cannot be installed beside us, so they are restated.
SGKIT_SPECS = {
    "call_genotype": ("i", ("variants", "samples", "ploidy")),
    "call_genotype_mask": ("b", ("variants", "samples", "ploidy")),
    "variant_contig": ("iu", ("variants",)),
    "contig_id": ("USO", ("contigs",)),
    "variant_position": ("i", ("variants",)),
    "variant_id": ("USO", ("variants",)),
    "variant_allele": ("SO", ("variants", "alleles")),
    "sample_id": ("USO", ("samples",)),
    "variant_allele_frequency": ("f", ("variants", "alleles")),
}


def plain(path: Path) -> xr.Dataset:
    """What a user gets from xarray alone."""
    return xr.open_zarr(path)


@pytest.fixture(scope="module")
def tree_sequence(tmp_path_factory):
    """A small msprime panel: 24 diploid samples, two contigs' worth of sites."""
    import msprime

    ts = msprime.sim_ancestry(samples=24, sequence_length=200_000, recombination_rate=1e-8,
                              population_size=10_000, random_seed=7)
    ts = msprime.sim_mutations(ts, rate=2e-8, random_seed=3,
                               model=msprime.BinaryMutationModel())
    folder = tmp_path_factory.mktemp("ts")
    ts.dump(folder / "panel.trees")
    return ts, folder / "panel.trees"


@pytest.fixture(scope="module")
def bio2zarr_store(tree_sequence, tmp_path_factory) -> Path:
    """vcf2zarr's own store of the panel's VCF, untouched by us."""
    from bio2zarr import vcf as vcf2zarr

    ts, _ = tree_sequence
    folder = tmp_path_factory.mktemp("b2z")
    vcf = folder / "panel.vcf"
    with open(vcf, "w") as f:
        ts.write_vcf(f, contig_id="chr1", position_transform=lambda x: np.asarray(x) + 1)
    out = folder / "panel.vcz"
    vcf2zarr.convert([vcf], out, worker_processes=0)
    return out


def test_plain_xarray_reads_every_variable_as_sgkit_specifies(example_store, bio2zarr_store):
    """call_genotype int8 with -1 (not float NaN) under plain xarray, and every other
    variable of the spec's kind and dims; a string dtype is only allowed to be numpy's
    StringDType where bio2zarr's own store gives the same under this xarray."""
    ours, theirs = plain(example_store), plain(bio2zarr_store)
    assert ours.call_genotype.dtype == np.int8
    assert (ours.call_genotype.values == -1).any()  # missing calls are data, not NaN
    assert theirs.call_genotype.dtype == np.int8
    for name, (kinds, dims) in SGKIT_SPECS.items():
        if name not in ours:
            continue
        var = ours[name]
        assert var.dims == dims, name
        allowed = kinds + ("T" if name in theirs and theirs[name].dtype.kind == "T" else "")
        assert var.dtype.kind in allowed, (name, var.dtype)


def test_tsv_positions_are_vcf_integers_with_their_scale(example_store):
    ds = plain(example_store)
    assert ds.variant_position.dtype == np.int32 and ds.variant_position.values.min() >= 1
    chroms = pd.read_csv(TEST_DATA / "chroms.tsv", sep="\t").set_index("marker")
    store = open_store(example_store)
    np.testing.assert_allclose(input_positions(store),
                               chroms.loc[store.variant_id.values, "pos"].to_numpy())
    assert list(store.variant_allele.values[0]) == ["A", "B"]  # TSV codes name no alleles


def test_labelled_access(example_store):
    ds = open_store(example_store)
    name, marker = str(ds.sample_id.values[5]), str(ds.variant_id.values[7])
    one = ds.sel(samples=name)
    np.testing.assert_array_equal(one.call_genotype.values, ds.call_genotype.values[:, 5])
    assert int(ds.sel(variants=marker).variant_position) == int(ds.variant_position[7])
    chr2 = ds.sel(variant_contig_name="chr2")
    assert chr2.sizes["variants"] == int((ds.variant_contig.values == 1).sum()) > 0
    assert set(chr2.variant_contig.values) == {1}
    by_index = ds.variant_allele_frequency.sel(variants=ds.variant_contig == 0)
    assert by_index.sizes["variants"] == int((ds.variant_contig.values == 0).sum())
    assert ds.sample_id.values.astype(str)[5] == name
    assert pd.Index(ds.variant_id.values)[7] == marker


# ---------------------------------------------------------------- upgrade


def make_old(store: Path, old: Path) -> None:
    """The store as earlier versions wrote it: call_genotype with fill value -1 (an
    all-missing chunk then never reaches the disk), float positions, strings with no
    fill value, empty allele labels."""
    shutil.copytree(store, old)
    group = zarr.open_group(old, mode="r+")
    calls = group["call_genotype"]
    calls[: calls.chunks[0], : calls.chunks[1]] = -1
    for name, fill in (("call_genotype", -1), ("sample_id", None), ("variant_id", None),
                       ("contig_id", None)):
        meta = json.loads((old / name / ".zarray").read_text())
        meta["fill_value"] = fill
        (old / name / ".zarray").write_text(json.dumps(meta))
    (old / "call_genotype" / "0.0.0").unlink()  # as zarr skipped a chunk equal to the fill
    attrs = json.loads((old / "call_genotype" / ".zattrs").read_text())
    del attrs["every_chunk_written"]  # a mark of today's stores
    (old / "call_genotype" / ".zattrs").write_text(json.dumps(attrs))
    positions = input_positions(open_store(store))
    attrs = {"_ARRAY_DIMENSIONS": ["variants"]}
    fresh = group.create_array("variant_position", shape=positions.shape, dtype="float64",
                               fill_value=np.nan, attributes=attrs, overwrite=True)
    fresh[:] = positions
    group["variant_allele"][:] = ""
    zarr.consolidate_metadata(old)


def test_upgrade_rewrites_an_old_store_in_place_without_changing_a_call(example_store, tmp_path):
    old = tmp_path / "old.zarr"
    make_old(example_store, old)
    assert plain(old).call_genotype.dtype == np.float32  # what users met
    before = open_store(old)  # open_store reads old stores as they are
    calls = before.call_genotype.values
    assert (calls[:32, :16] == -1).all()  # the absent chunk (32 variants x 16 samples)
    np.testing.assert_array_equal(calls[:, 16:],
                                  open_store(example_store).call_genotype.values[:, 16:])

    proc = run_cli("upgrade", old)
    assert proc.returncode == 0, proc.stderr
    assert "call_genotype fill value -1 -> none" in proc.stdout
    assert "variant_position float64 -> int32" in proc.stdout
    after = plain(old)
    assert after.call_genotype.dtype == np.int8
    np.testing.assert_array_equal(after.call_genotype.values, calls)
    assert after.sample_id.dtype == object and list(after.variant_allele.values[0]) == ["A", "B"]
    np.testing.assert_allclose(input_positions(open_store(old)), input_positions(before))
    again = run_cli("upgrade", old)
    assert again.returncode == 0 and "already up to date" in again.stdout


def test_upgrade_refuses_what_is_not_a_store(tmp_path):
    proc = run_cli("upgrade", tmp_path / "nothing.zarr")
    assert proc.returncode == ExitCode.INPUT_NOT_FOUND
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- filter


def expected_selection(calls: np.ndarray, names: np.ndarray, keep: set[str], maf: float,
                       max_missing: float, min_call_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """The filters of `gperceiver filter`, in its order, with plain numpy."""
    samples = np.isin(names, list(keep))
    rate = (calls[:, samples] >= 0).mean(axis=(0, 2))
    samples[np.flatnonzero(samples)[rate < min_call_rate]] = False
    part = calls[:, samples]
    missing = (part == -1).mean(axis=(1, 2))
    alt = (part == 1).sum(axis=(1, 2)) / (part >= 0).sum(axis=(1, 2))
    minor = np.minimum(alt, 1 - alt)
    variants = (missing <= max_missing) & (minor >= maf)
    return samples, variants


def test_filter_writes_what_plink_would_keep_and_info_counts_it(tmp_path):
    store = tmp_path / "panel.zarr"
    calls, _ = founder_store(store, n_samples=60, n_variants=80, missing=0.06, seed=3)
    calls[:, 7] = -1  # one sample called nowhere: --min-call-rate drops it
    zarr.open_group(store, mode="r+")["call_genotype"][:] = calls
    names = np.array([f"s{i}" for i in range(60)])
    keep = tmp_path / "keep.txt"
    keep.write_text("# FID IID\n" + "".join(f"fam {n}\n" for n in names[:50]) + "fam ghost\n")
    flags = ["--keep", keep, "--min-call-rate", "0.5", "--max-missing", "0.08", "--maf", "0.2"]
    samples, variants = expected_selection(calls, names, set(names[:50]), 0.2, 0.08, 0.5)
    assert 0 < variants.sum() < 80 and samples.sum() == 49

    out = tmp_path / "qc.zarr"
    proc = run_cli("filter", store, "-o", out, *flags)
    assert proc.returncode == 0, proc.stderr
    summary = (f"kept {variants.sum()} of 80 variants and 49 of 60 samples (dropped 10 "
               f"samples by --keep, 1 sample by --min-call-rate")
    assert summary in proc.stderr
    assert "1 name(s) are not samples of the store: 'ghost'" in proc.stderr
    ds = open_store(out)
    assert list(ds.sample_id.values) == list(names[samples])
    np.testing.assert_array_equal(ds.call_genotype.values, calls[variants][:, samples])
    part = calls[variants][:, samples]
    alt = (part == 1).sum(axis=(1, 2)) / (part >= 0).sum(axis=(1, 2))
    np.testing.assert_allclose(ds.variant_allele_frequency.values[:, 1], alt, rtol=1e-6)
    assert ds.call_genotype.data.chunksize[:2] == (32, 16)  # the source's chunks

    info = run_cli("info", store, "--json", *flags)
    assert info.returncode == 0, info.stderr
    counts = json.loads(info.stdout)["filters"]
    assert counts["kept_variants"] == variants.sum() and counts["kept_samples"] == 49
    assert counts["dropped"]["--min-call-rate"] == {"samples": 1}

    from gperceiver.store.qc import Filters, select

    view = select(open_store(store), Filters(keep=keep, min_call_rate=0.5, max_missing=0.08,
                                             maf=0.2)).view(open_store(store))
    np.testing.assert_array_equal(view.call_genotype.values, ds.call_genotype.values)


def test_filter_by_contig_and_region(tmp_path):
    store = tmp_path / "panel.zarr"
    founder_store(store, n_samples=20, n_variants=60)
    ds = open_store(store)
    out = tmp_path / "r.zarr"
    proc = run_cli("filter", store, "-o", out, "--region", "chr1:2001-5001,chr3")
    assert proc.returncode == 0, proc.stderr
    pos, contig = ds.variant_position.values, ds.variant_contig.values
    want = ((contig == 0) & (pos >= 2001) & (pos <= 5001)) | (contig == 2)
    assert list(open_store(out).variant_id.values) == list(ds.variant_id.values[want])
    proc = run_cli("filter", store, "-o", tmp_path / "c.zarr", "--contigs", "chr2", "--remove",
                   tmp_path / "none.txt")
    assert proc.returncode == ExitCode.INPUT_NOT_FOUND and not (tmp_path / "c.zarr").exists()
    (tmp_path / "rm.txt").write_text("s0\ns1\n")
    proc = run_cli("filter", store, "-o", tmp_path / "c.zarr", "--contigs", "chr2", "--remove",
                   tmp_path / "rm.txt")
    assert proc.returncode == 0, proc.stderr
    got = open_store(tmp_path / "c.zarr")
    assert set(got.variant_contig.values) == {1} and "s0" not in set(got.sample_id.values)


def test_filter_thresholds_names_and_regions_as_plink_and_bcftools_read_them(tmp_path):
    """A MAF exactly at --maf passes (as plink keeps it); a keep file may name samples
    with spaces, carry a byte-order mark or plink's FID IID; a contig with ':' is
    written {CHR} as in bcftools; info counts a filter that keeps nothing."""
    from gperceiver.store.qc import Filters, select
    from gperceiver.store.write import create_store, finish_store

    store = tmp_path / "exact.zarr"
    calls = np.zeros((3, 10, 2), dtype=np.int8)
    calls[0, :2, 0] = 1  # 2 of 20 copies: MAF exactly 0.1
    calls[1, :1, 0] = 1  # 1 of 20: 0.05
    calls[2, :5, :] = 1  # 10 of 20: 0.5
    out = create_store(store, sample_id=np.array([f"line {i}" for i in range(10)]),
                       variant_id=np.array(["a", "b", "c"]), contig_id=np.array(["Un:2"]),
                       variant_contig=np.zeros(3, int), variant_position=np.array([5, 9, 20]),
                       ploidy=2, n_alleles=2)
    out[:] = calls
    finish_store(store)
    ds = open_store(store)
    kept = select(ds, Filters(maf=0.1)).variants
    assert kept.tolist() == [True, False, True]
    keep = tmp_path / "keep.txt"
    keep.write_text("\ufeffline 1\r\nfam line 3\r\n# comment\r\n")  # a whole name; FID IID
    names = ds.sample_id.values[select(ds, Filters(keep=keep)).samples]
    assert list(names) == ["line 1"]
    region = select(ds, Filters(region="{Un:2}:6-20")).variants
    assert region.tolist() == [False, True, True]
    assert select(ds, Filters(region="Un:2")).variants.all()
    info = run_cli("info", store, "--json", "--maf", "0.5", "--max-missing", "0")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["filters"]["kept_variants"] == 1
    info = run_cli("info", store, "--region", "{Un:2}:1000-")
    assert info.returncode == 0 and "kept 0 of 3 variants" in info.stdout, info.stderr
    proc = run_cli("filter", store, "-o", "/proc/out.zarr", "--maf", "0.1")
    assert proc.returncode == ExitCode.CANNOT_WRITE and "not writable" in proc.stderr
    proc = run_cli("info", store, "--keep", tmp_path)
    assert proc.returncode == ExitCode.INPUT_NOT_FOUND and "is a folder" in proc.stderr


@pytest.mark.parametrize(("flags", "words"), [
    (["--maf", "0.7"], "--maf must be within 0..0.5"),
    (["--region", "chr9:1-5"], "--region: 'chr9:1-5': 'chr9' is not a contig of the store "
                               "(it has chr1"),
    (["--region", "chr1:x-5"], "--region: 'chr1:x-5' is not CHR, CHR:START-END"),
    (["--region", "chr1:1,000-2,000"], "no thousands separators"),
    (["--maf", "1.5"], "--maf must be within 0..0.5"),
    (["--contigs", "chrX"], "--contigs: 'chrX' is not a contig"),
    (["--region", "chr1:999999-"], "the filters drop every variant"),
    ([], "no filter given"),
])
def test_filter_refusals_are_one_line_and_write_nothing(tmp_path, flags, words):
    store = tmp_path / "panel.zarr"
    founder_store(store, n_samples=20, n_variants=30)
    out = tmp_path / "out.zarr"
    proc = run_cli("filter", store, "-o", out, *flags)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert words in proc.stderr and proc.stderr.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".out.zarr*"))


# ---------------------------------------------------------------- round trips


def vcztools(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vcztools", *map(str, args)],
                          capture_output=True, text=True)


def test_store_to_vcf_with_vcztools_and_back_is_identical(example_store, tmp_path):
    pytest.importorskip("vcztools")  # needs Python >= 3.11
    vcf = tmp_path / "panel.vcf"
    proc = vcztools("view", example_store, "-o", vcf)
    assert proc.returncode == 0, proc.stderr
    back = tmp_path / "back.zarr"
    proc = run_cli("convert", "vcf", vcf, "-o", back, "--workers", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    a, b = open_store(example_store), open_store(back)
    for name in ("call_genotype", "variant_position", "sample_id", "variant_id"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert b.variant_position.dtype == np.int32
    assert list(a.contig_id.values) == list(b.contig_id.values)


@pytest.fixture(scope="module")
def plink_prefix(tmp_path_factory) -> Path:
    from bed_reader import to_bed

    rng = np.random.default_rng(1)
    counts = rng.integers(0, 3, size=(30, 40)).astype(np.float32)
    counts[rng.random(counts.shape) < 0.05] = np.nan
    prefix = tmp_path_factory.mktemp("plink") / "panel"
    to_bed(prefix.with_suffix(".bed"), counts, properties={
        "iid": [f"ind{i}" for i in range(30)], "sid": [f"snp{j}" for j in range(40)],
        "chromosome": np.repeat(["1", "2"], 20), "bp_position": np.tile(np.arange(1, 21), 2) * 50,
        "allele_1": ["A"] * 40, "allele_2": ["G"] * 40})
    return prefix


def bio2zarr_cli(*args: object) -> None:
    proc = subprocess.run([sys.executable, "-m", "bio2zarr", *map(str, args)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("tool", ["vcf2zarr", "plink2zarr", "tskit2zarr"])
def test_bio2zarr_stores_open_train_and_convert(tool, tree_sequence, bio2zarr_store,
                                                plink_prefix, tmp_path):
    """Each of bio2zarr's converters: its store opens as it is (frequencies computed,
    missing ids made), trains without conversion, and `convert vcz` takes it."""
    if tool == "vcf2zarr":
        vcz = bio2zarr_store
    elif tool == "plink2zarr":
        vcz = tmp_path / "plink.vcz"
        bio2zarr_cli("plink2zarr", "convert", plink_prefix, vcz)
    else:
        vcz = tmp_path / "ts.vcz"
        bio2zarr_cli("tskit2zarr", "convert", tree_sequence[1], vcz)
    raw = zarr.open_group(vcz, mode="r")
    ds = open_store(vcz)
    assert "variant_allele_frequency" not in raw
    calls = raw["call_genotype"][:]
    alt = (calls == 1).sum(axis=(1, 2)) / (calls >= 0).sum(axis=(1, 2))
    np.testing.assert_allclose(ds.variant_allele_frequency.values[:, 1], alt, rtol=1e-6)
    ids = list(ds.variant_id.values)
    assert len(set(ids)) == len(ids) and "." not in ids and "" not in ids

    run = tmp_path / "run"
    params = tmp_path / "tiny.json"
    params.write_text(json.dumps(dict(
        latent_dim=16, num_latents=4, feedforward_dim=16, projection_dim=8, allele_embed_dim=4,
        position_embed_dim=4, output_dim=8, num_self_attention=1, num_encode_iters=1,
        num_self_attention_heads=2, batch_size=8, epochs=1)))
    proc = run_cli("pretrain", vcz, "-o", run, "--params", params, "-q", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    assert (run / "best.ckpt").exists() or (run / "checkpoints").exists()

    out = tmp_path / "converted.zarr"
    proc = run_cli("convert", "vcz", vcz, "-o", out)
    assert proc.returncode == 0, proc.stderr
    converted = open_store(out)
    assert list(converted.variant_id.values) == ids
    np.testing.assert_array_equal(converted.call_genotype.values, ds.call_genotype.values)


# ---------------------------------------------------------------- selections, unwritten


def test_loader_reads_a_selection_as_the_filtered_store(example_store, tmp_path):
    """`make_loader` on a lazily selected Dataset yields what it yields on the store
    that `filter` writes for the same selection; nothing is written for the view."""
    from gperceiver.data import make_loader
    from gperceiver.store.qc import Filters, select

    ds = open_store(example_store)
    filters = Filters(maf=0.3, region="chr1,chr3:1-60000000")
    view = select(ds, filters).view(ds).isel(samples=slice(3, 37))
    out = tmp_path / "f.zarr"
    from gperceiver.store.qc import filter_store

    filter_store(example_store, out, filters, progress=False)
    names = list(view.sample_id.values)
    assert 0 < view.sizes["variants"] < ds.sizes["variants"]
    a = next(iter(make_loader(view, "plain", batch_size=64, shuffle=False)))
    b = next(iter(make_loader(out, "plain", batch_size=64, shuffle=False, samples=names)))
    np.testing.assert_array_equal(a["x_alleles"].numpy(), b["x_alleles"].numpy())
    np.testing.assert_array_equal(
        a["x_alleles"].numpy() - 1, view.call_genotype.values.transpose(1, 0, 2))
    with pytest.raises(Exception, match="store order"):
        make_loader(ds.isel(variants=[5, 2]), "plain")


TINY_PARAMS = dict(latent_dim=16, num_latents=4, feedforward_dim=16, projection_dim=8,
                   allele_embed_dim=4, position_embed_dim=4, output_dim=8,
                   num_self_attention=1, num_encode_iters=1, num_self_attention_heads=2,
                   batch_size=16, epochs=2)


def test_every_command_runs_on_a_selection_of_samples_and_variants(example_store, tmp_path):
    """fit, predict, pretrain, embed and impute on a lazily selected Dataset: they read
    its samples and variants only, and their rows are its rows."""
    import torch

    from gperceiver.embedding import embed
    from gperceiver.fit import fit
    from gperceiver.impute import impute
    from gperceiver.predict import predict
    from gperceiver.train.params import Params
    from gperceiver.train.pretrain import pretrain

    ds = open_store(example_store)
    view = ds.isel(samples=slice(5, 40, 2)).sel(variants=ds.variant_contig != 1)
    names, n_variants = list(view.sample_id.values), view.sizes["variants"]
    params = Params.build(**TINY_PARAMS)
    result = fit(view, TEST_DATA / "phenos.tsv", tmp_path / "fit", params, test_fold=0,
                 progress=False, predict_all=True)
    metrics = json.loads((tmp_path / "fit" / "metrics.json").read_text())
    assert f"a selection: {len(names)} samples x {n_variants} variants" in metrics["store"]
    assert list(result.predictions.sample_id.values) == names
    state = torch.load(tmp_path / "fit" / "best.ckpt", weights_only=False)["state_dict"]
    assert state["model.embed.position.table.weight"].shape[0] == n_variants
    again = predict(tmp_path / "fit", view)
    np.testing.assert_allclose(again.predicted.values, result.predictions.predicted.values,
                               rtol=1e-4, atol=1e-5)

    pretrain(view, tmp_path / "pre", "masked", params, progress=False)
    emb = embed(tmp_path / "pre" / "best.ckpt", view, batch_size=8)
    assert list(emb.sample_id.values) == names and emb.sizes["variants"] == n_variants
    alone = embed(tmp_path / "pre" / "best.ckpt", view.isel(samples=[3]), batch_size=8)
    np.testing.assert_allclose(alone.sample_embedding.values[0],
                               emb.sample_embedding.values[3], atol=1e-5)
    imputed = impute(tmp_path / "pre" / "best.ckpt", view, tmp_path / "imputed.zarr",
                     progress=False)
    assert list(imputed.sample_id.values) == names
    calls, filled = view.call_genotype.values, imputed.call_genotype.values
    assert (filled >= 0).all() and (filled[calls >= 0] == calls[calls >= 0]).all()
    with pytest.raises(Exception, match="store order"):
        make_loader_of(ds.isel(samples=[7, 2]))
    with pytest.raises(Exception, match="dropped the 'samples' dimension"):
        make_loader_of(ds.isel(samples=3))
    with pytest.raises(Exception, match="holds no samples"):
        make_loader_of(ds.isel(samples=[]))


def make_loader_of(view):
    from gperceiver.data import make_loader

    return make_loader(view, "plain")


def test_large_sample_chunks_train_with_a_warning_and_convert_says_why(tmp_path):
    """bio2zarr's default sample chunk (10,000) holds all 600 samples here: training
    straight from it warns, and `convert vcz` rechunks it and says why."""
    import msprime

    ts = msprime.sim_ancestry(samples=600, sequence_length=20_000, recombination_rate=1e-8,
                              population_size=10_000, random_seed=4)
    ts = msprime.sim_mutations(ts, rate=2e-8, random_seed=4,
                               model=msprime.BinaryMutationModel())
    ts.dump(tmp_path / "big.trees")
    vcz = tmp_path / "big.vcz"
    bio2zarr_cli("tskit2zarr", "convert", tmp_path / "big.trees", vcz)
    assert zarr.open_group(vcz, mode="r")["call_genotype"].chunks[1] == 600

    import warnings

    from gperceiver.data import make_loader
    from gperceiver.errors import GPerceiverWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        next(iter(make_loader(vcz, "masked", batch_size=4, prop_y=0.2)))
    assert any(issubclass(w.category, GPerceiverWarning) and "600 samples per chunk" in
               str(w.message) and "convert vcz" in str(w.message) for w in caught)

    proc = run_cli("convert", "vcz", vcz, "-o", tmp_path / "big.zarr")
    assert proc.returncode == 0, proc.stderr
    assert "rechunking to" in proc.stderr and "its 600 samples per chunk" in proc.stderr
    assert open_store(tmp_path / "big.zarr").call_genotype.data.chunksize[1] == 256
