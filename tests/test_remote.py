"""Stores on object storage (fsspec URLs), and Dask work on a distributed cluster.

A real S3-compatible server (moto's) runs on loopback; every command talks to it
through s3fs, configured the way users configure AWS tools: environment variables.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

from gperceiver import open_store
from gperceiver.errors import ExitCode
from tests.conftest import TEST_DATA, run_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("panels")
    yield env
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_convert_into_s3_and_read_back(s3_env, example_store):
    url = "s3://panels/example.zarr"
    args = ("convert", "tsv", "--markers", TEST_DATA / "markers.tsv",
            "--chroms", TEST_DATA / "chroms.tsv", "-o", url, "-q")
    assert run_cli(*args, env=s3_env).returncode == 0
    remote, local = open_store(url), open_store(example_store)
    np.testing.assert_array_equal(remote.call_genotype.values, local.call_genotype.values)
    np.testing.assert_array_equal(remote.sample_id.values, local.sample_id.values)
    import s3fs

    names = [p.rsplit("/", 1)[-1] for p in s3fs.S3FileSystem().ls("panels")]
    assert names == ["example.zarr"]  # no temporary sibling left
    info = run_cli("info", url, "--json", env=s3_env)
    assert info.returncode == 0 and '"samples": 40' in info.stdout
    again = run_cli(*args, env=s3_env)
    assert again.returncode == ExitCode.CANNOT_WRITE and "--force" in again.stderr
    assert run_cli(*args, "--force", env=s3_env).returncode == 0


def test_convert_on_a_dask_cluster_gives_the_same_store(tmp_path, example_store):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        out = tmp_path / "c.zarr"
        proc = run_cli("convert", "tsv", "--markers", TEST_DATA / "markers.tsv",
                       "--chroms", TEST_DATA / "chroms.tsv", "-o", out, "-q",
                       "--samples-chunk", "16", "--variants-chunk", "32",
                       "--scheduler", cluster.scheduler_address)
        assert proc.returncode == 0, proc.stderr
        info = run_cli("info", out, "--json", "--scheduler", cluster.scheduler_address)
        assert info.returncode == 0, info.stderr
    a, b = open_store(out), open_store(example_store)
    for name in ("call_genotype", "variant_allele_frequency", "variant_position"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_unreachable_scheduler_is_a_usage_error(tmp_path):
    proc = run_cli("info", tmp_path / "x.zarr", "--scheduler", f"tcp://127.0.0.1:{_free_port()}")
    assert proc.returncode == ExitCode.USAGE
    assert "cannot connect" in proc.stderr and proc.stderr.count("\n") == 1


def test_pretrain_fit_predict_impute_embed_with_s3(s3_env, tmp_path):
    """Training and prediction stream the genotypes straight from object storage."""
    import json

    from tests.test_fit import TINY
    from tests.tiny_stores import ONE_THREAD

    url = "s3://panels/train.zarr"
    env = {**s3_env, **ONE_THREAD}
    assert run_cli("convert", "tsv", "--markers", TEST_DATA / "markers.tsv",
                   "--chroms", TEST_DATA / "chroms.tsv", "-o", url, "-q", env=env).returncode == 0
    params = tmp_path / "p.json"
    params.write_text(json.dumps({**TINY, "epochs": 1, "batch_size": 8}))
    pre = run_cli("pretrain", url, "-o", tmp_path / "pre", "--params", params, "-q", env=env)
    assert pre.returncode == 0, pre.stderr
    fit = run_cli("fit", url, TEST_DATA / "phenos.tsv", "-o", tmp_path / "fit", "--cv", "1",
                  "--params", params, "--pretrained", tmp_path / "pre" / "best.ckpt", "-q",
                  env=env)
    assert fit.returncode == 0, fit.stderr
    pred = run_cli("predict", tmp_path / "fit", url, "-q", env=env)
    assert pred.returncode == 0, pred.stderr
    rows = [line.split("\t") for line in pred.stdout.strip().splitlines()]
    assert rows[0][:3] == ["name", "block", "predicted"] and len(rows) == 1 + 40 * 2
    # outputs may live there too: an imputed store and an embedding
    imp = run_cli("impute", tmp_path / "pre" / "best.ckpt", url, "-o", "s3://panels/imp.zarr",
                  "-q", env=env)
    assert imp.returncode == 0, imp.stderr
    assert open_store("s3://panels/imp.zarr").sizes["samples"] == 40
    emb = run_cli("embed", tmp_path / "fit", url, "-o", "s3://panels/emb.zarr", "-q", env=env)
    assert emb.returncode == 0, emb.stderr
    import xarray as xr

    assert xr.open_zarr("s3://panels/emb.zarr")["sample_embedding"].shape[0] == 40


def test_convert_vcf_and_plink_into_s3(s3_env, tmp_path):
    """bio2zarr writes locally; the finished store then moves to object storage whole."""
    import s3fs

    from gperceiver.converters.plink import convert_plink
    from gperceiver.converters.vcf import convert_vcf
    from tests.test_convert_plink import write_fileset
    from tests.test_convert_vcf import GOOD, write

    vcf = write(tmp_path / "g.vcf", GOOD)
    assert run_cli("convert", "vcf", vcf, "-o", "s3://panels/vcf.zarr", "-q",
                   env=s3_env).returncode == 0
    local = convert_vcf(vcf, tmp_path / "vcf.zarr", progress=False)
    write_fileset(tmp_path / "panel")
    convert_plink(tmp_path / "panel", "s3://panels/plink.zarr", progress=False)
    local_plink = convert_plink(tmp_path / "panel", tmp_path / "plink.zarr", progress=False)
    for url, path in (("s3://panels/vcf.zarr", local), ("s3://panels/plink.zarr", local_plink)):
        remote, here = open_store(url), open_store(path)
        for name in ("call_genotype", "variant_id", "sample_id", "variant_allele_frequency"):
            np.testing.assert_array_equal(remote[name].values, here[name].values)
    names = sorted(p.rsplit("/", 1)[-1] for p in s3fs.S3FileSystem().ls("panels"))
    assert not [n for n in names if ".tmp-" in n]  # nothing half-written left behind
