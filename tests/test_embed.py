"""`gperceiver embed`: dims and coordinates, per-sample independence, chunked writes, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

import gperceiver
import gperceiver.embedding as embed_module
from gperceiver import plots
from gperceiver.cli.main import main
from gperceiver.embedding import embed
from gperceiver.errors import ExitCode, InputFormatError
from gperceiver.store import open_store, schema
from gperceiver.train.checkpoint import load_model
from tests.conftest import TEST_DATA, run_cli
from tests.test_plots import assert_png

# A tiny model: every dimension distinct, so a swapped axis cannot pass the shape checks.
TINY = {
    "allele_embed_dim": 6, "position_embed_dim": 10, "num_latents": 3, "latent_dim": 12,
    "projection_dim": 8, "num_self_attention_heads": 2, "num_self_attention": 1,
    "num_encode_iters": 2, "feedforward_dim": 20, "output_dim": 8, "epochs": 2,
    "batch_size": 8, "val_fraction": 0.2, "lr": 0.01,
}


def pretrained_run(tmp_path_factory, store: Path) -> Path:
    """A real pretraining run on `store` (best.ckpt, metrics.csv), made once per session."""
    run = tmp_path_factory.getbasetemp() / "pretrained_tiny"
    if (run / "best.ckpt").is_file():
        return run
    from gperceiver.train.params import params_from_dict
    from gperceiver.train.pretrain import pretrain

    pretrain(store, run, params=params_from_dict(TINY), progress=False)
    return run


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, example_store) -> Path:
    return pretrained_run(tmp_path_factory, example_store)


@pytest.fixture(scope="session")
def emb_path(tmp_path_factory, run_dir, example_store) -> Path:
    """`gperceiver embed --latents` through the real CLI."""
    out = tmp_path_factory.mktemp("emb") / "emb.zarr"
    proc = run_cli("embed", run_dir / "best.ckpt", example_store, "-o", out, "--latents",
                   "--batch-size", "7", check=True)
    assert f"wrote {out}" in proc.stdout
    return out


def test_dims_coordinates_and_merge_with_the_store(emb_path, example_store, run_dir):
    emb = xr.open_zarr(emb_path)
    store = open_store(example_store)
    assert dict(emb["sample_embedding"].sizes) == {"samples": 40, "embedding": 12}
    assert dict(emb["sample_latents"].sizes) == {"samples": 40, "latents": 3, "embedding": 12}
    assert dict(emb["variant_embedding"].sizes) == {"variants": 60, "position_embedding": 10}
    for name in ("sample_embedding", "sample_latents", "variant_embedding"):
        assert emb[name].dtype == np.float32 and np.isfinite(emb[name].values).all()
    for name in ("sample_id", "variant_id", "variant_contig", "variant_position", "contig_id"):
        assert emb[name].dims == store[name].dims
        assert emb[name].values.tolist() == store[name].values.tolist(), name
    merged = xr.merge([store, emb], compat="equals", join="exact")
    assert {"call_genotype", "sample_embedding", "variant_embedding"} <= set(merged.data_vars)
    # Pooled = the mean of the latents; variants = the learned per-locus table.
    np.testing.assert_allclose(emb["sample_embedding"], emb["sample_latents"].mean("latents"),
                               atol=1e-6)
    state = torch.load(run_dir / "best.ckpt", weights_only=True)["state_dict"]
    np.testing.assert_allclose(emb["variant_embedding"],
                               state["model.embed.position.table.weight"].numpy(), atol=1e-6)


def test_each_sample_is_embedded_from_its_own_genotype(run_dir, example_store):
    """Alone in a batch or with others: the same vector, equal to a direct encode."""
    ckpt = run_dir / "best.ckpt"
    alone = embed(run_dir, example_store, batch_size=1)  # a run folder: its best.ckpt
    together = embed(ckpt, example_store, batch_size=16)
    np.testing.assert_allclose(alone["sample_embedding"], together["sample_embedding"],
                               atol=1e-5)
    whole = gperceiver.embed(ckpt, example_store, batch_size=40)  # the package exports it
    np.testing.assert_allclose(whole["sample_embedding"], together["sample_embedding"],
                               atol=1e-5)
    model, _, _ = load_model(ckpt)
    calls = open_store(example_store)["call_genotype"].values  # (variants, samples, ploidy)
    for i in (0, 17, 39):
        tokens = torch.from_numpy(calls[:, i, :].astype(np.int64) + 1)[None]
        with torch.no_grad():
            direct = model.encode(tokens, torch.arange(60)[None]).mean(1)[0].numpy()
        np.testing.assert_allclose(together["sample_embedding"][i], direct, atol=1e-5)
    # Different genotypes, different embeddings (no collapse to a constant).
    vectors = together["sample_embedding"].values
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    assert distances[~np.eye(40, dtype=bool)].min() > 1e-4


def test_chunked_zarr_writes_match_memory(run_dir, example_store, tmp_path, monkeypatch):
    monkeypatch.setattr(embed_module, "SAMPLES_CHUNK", 8)
    monkeypatch.setattr(embed_module, "VARIANTS_CHUNK", 25)
    ckpt = run_dir / "best.ckpt"
    written = embed(ckpt, example_store, tmp_path / "e.zarr", latents=True, batch_size=3)
    assert zarr.open_group(tmp_path / "e.zarr")["sample_latents"].chunks[0] == 8
    memory = embed(ckpt, example_store, latents=True, batch_size=5)
    for name in ("sample_embedding", "sample_latents", "variant_embedding"):
        np.testing.assert_allclose(written[name], memory[name], atol=1e-5)
    for ds in (written, memory):
        schema.check(ds, schema.EMBEDDING_VARIABLES)


def test_written_embedding_follows_its_declaration(emb_path):
    """The embedding store has the variables, dims and dtypes schema.EMBEDDING_VARIABLES
    declares; a variable with other dims is named."""
    ds = xr.open_zarr(emb_path)
    schema.check(ds, schema.EMBEDDING_VARIABLES, where=str(emb_path))
    declared = {name: var.dtype for name, var in schema.EMBEDDING_VARIABLES.items()
                if var.dtype and name in ds.variables}
    assert {"sample_embedding", "variant_embedding", "variant_contig"} <= set(declared)
    assert {name: str(ds[name].dtype) for name in declared} == declared
    swapped = ds.assign(sample_embedding=ds["sample_embedding"].T)
    with pytest.raises(schema.SchemaError, match="'sample_embedding' has dims"):
        schema.check(swapped, schema.EMBEDDING_VARIABLES)


def test_refuses_other_variants_and_existing_output(run_dir, example_store, emb_path, tmp_path,
                                                    capsys):
    other = tmp_path / "other.zarr"
    shutil.copytree(example_store, other)
    ids = zarr.open_group(other, mode="a")["variant_id"]
    renamed = ids[:]
    renamed[3] = "zzz"
    ids[:] = renamed
    zarr.consolidate_metadata(other)
    with pytest.raises(InputFormatError, match="variant 3 is 'zzz'"):
        embed(run_dir / "best.ckpt", other, tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()
    code = main(["embed", str(run_dir / "best.ckpt"), str(example_store), "-o", str(emb_path)])
    err = capsys.readouterr().err
    assert code == ExitCode.CANNOT_WRITE and "--force" in err
    assert len(err.strip().splitlines()) == 1
    table = tmp_path / "emb.tsv"
    code = main(["embed", str(run_dir / "best.ckpt"), str(example_store), "-o", str(table)])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE and "writes a Zarr store, not a table" in err
    assert not table.exists()


def test_pictures_of_a_real_run_and_its_embedding(run_dir, emb_path, tmp_path):
    """Learning curves from Lightning's own metrics.csv; PCA of a real embedding."""
    written = plots.plot_path(run_dir, tmp_path)
    assert written == [tmp_path / plots.LEARNING_CURVES]
    pca = plots.plot_path(emb_path, tmp_path, phenos=TEST_DATA / "phenos.tsv",
                          block=0)
    for path in written + pca:
        assert_png(path)
    fig = plots.learning_curves_figure(run_dir / "metrics.csv")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert {"loss", "accuracy"} <= {ax.get_title() for ax in panels}
    assert {ax.get_xlabel() for ax in panels} == {"epoch"}  # Lightning logged per epoch
    lines = {line.get_label(): line for line in panels[0].get_lines()}
    assert list(lines[f"val_{panels[0].get_title()}"].get_xdata()) == [0, 1]
    assert json.loads((run_dir / "params.json").read_text())["latent_dim"] == 12


def test_encode_latents_match_embed_and_the_latent_probe_reports(run_dir, emb_path,
                                                                   example_store):
    """`encode_latents` (the fit's latent kernel) gives embed's latents; the probe benchmark
    runs GBLUP on them, on the pooled embedding and on the markers, for both encoders."""
    import subprocess
    import sys

    from gperceiver.encode import encode_latents

    model, _, _ = load_model(run_dir / "best.ckpt")
    np.testing.assert_allclose(encode_latents(model, example_store, batch_size=5),
                               xr.open_zarr(emb_path)["sample_latents"].values, atol=1e-5)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, root / "benchmarks" / "latent_probe.py",
                           run_dir / "best.ckpt", example_store, TEST_DATA / "phenos.tsv"],
                          capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for encoder in ("pretrained", "random_init"):
        for kernel in ("latents", "pooled"):
            assert len(out[encoder][kernel]["block_r"]) == 2
    assert -1 <= out["markers"]["mean_r"] <= 1


@pytest.mark.parametrize("slab_bytes", [32 << 20, 8])
def test_chunk_writer_writes_whole_chunks_in_order(monkeypatch, slab_bytes):
    """Rows reach the targets a whole chunk at a time (any sample axis), the rest on
    flush, in slabs of the other axes when a chunk is large; rows out of order are
    refused."""
    from gperceiver.store import chunk_writer
    from gperceiver.store.chunk_writer import ChunkWriter

    monkeypatch.setattr(chunk_writer, "SLAB_BYTES", slab_bytes)
    first, second, calls = np.zeros((10, 2)), np.zeros((3, 10)), np.zeros((5, 10, 2))
    scalars = np.zeros(10)
    writer = ChunkWriter({"a": (first, 0), "b": (second, 1), "c": (calls, 1),
                          "d": (scalars, 0)}, chunk=4)
    rows = np.arange(20, dtype=float).reshape(10, 2) + 1
    genotypes = np.arange(100, dtype=float).reshape(10, 5, 2)  # (samples, variants, ploidy)

    def put(lo, hi):
        writer.put(np.arange(lo, hi), {"a": rows[lo:hi], "b": rows[lo:hi, :1].repeat(3, 1),
                                       "c": genotypes[lo:hi], "d": rows[lo:hi, 0]})

    put(0, 3)
    assert not first.any() and not calls.any()  # no whole chunk yet
    put(3, 6)
    np.testing.assert_array_equal(first[:4], rows[:4])
    np.testing.assert_array_equal(calls[:, :4], genotypes[:4].transpose(1, 0, 2))
    assert not first[4:].any() and not calls[:, 4:].any()
    put(6, 10)
    writer.flush()
    np.testing.assert_array_equal(first, rows)
    np.testing.assert_array_equal(second, rows[:, :1].repeat(3, 1).T)
    np.testing.assert_array_equal(calls, genotypes.transpose(1, 0, 2))
    np.testing.assert_array_equal(scalars, rows[:, 0])
    with pytest.raises(RuntimeError, match="in order"):
        ChunkWriter({"a": (np.zeros((4, 2)), 0)}, 2).put(np.array([1]), {"a": rows[:1]})
