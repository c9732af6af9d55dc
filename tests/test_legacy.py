"""The original scripts, gperceiver_pretrain and gperceiver_finetune, on the original TSVs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd

from gperceiver.errors import ExitCode
from tests.conftest import TEST_DATA
from tests.test_fit import TINY
from tests.tiny_stores import ONE_THREAD


def script(name: str, *args, cwd=None) -> subprocess.CompletedProcess:
    """Run an original script's entry point in a real process."""
    code = f"from gperceiver.cli.legacy import {name}_main; {name}_main()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
        cwd=cwd, env={**os.environ, **ONE_THREAD}, timeout=600,
    )


def test_pretrain_then_finetune_with_a_cached_store(tmp_path):
    params = tmp_path / "p.json"
    params.write_text(json.dumps({**TINY, "epochs": 1, "batch_size": 8}))
    chroms, markers = TEST_DATA / "chroms.tsv", TEST_DATA / "markers.tsv"
    pre = script("pretrain", chroms, markers, "--model", tmp_path / "pre", "--params", params,
                 "--best-checkpoint", tmp_path / "best.ckpt", "-q")
    assert pre.returncode == 0, pre.stderr
    assert (tmp_path / "pre" / "best.ckpt").is_file() and (tmp_path / "best.ckpt").is_file()
    cache = list((tmp_path / ".gperceiver-cache").iterdir())
    assert len(cache) == 1 and cache[0].suffix == ".zarr"
    stamp = (cache[0] / ".zmetadata").stat().st_mtime_ns

    fine = script("finetune", TEST_DATA / "phenos.tsv", chroms, markers, "--model",
                  tmp_path / "fine", "--pretrained", tmp_path / "pre", "--cv", "1",
                  "--block-strategy", "pool", "--encoder-nontrainable", "--params", params,
                  "--predictions", tmp_path / "preds.tsv", "-q")
    assert fine.returncode == 0, fine.stderr
    preds = pd.read_csv(tmp_path / "preds.tsv", sep="\t")
    assert len(preds) == 40 * 2 and preds.predicted.notna().all()
    assert json.loads((tmp_path / "fine" / "params.json").read_text())["head"] == "pool"
    # the unchanged TSVs were not converted again
    assert list((tmp_path / ".gperceiver-cache").iterdir()) == cache
    assert (cache[0] / ".zmetadata").stat().st_mtime_ns == stamp

    # changed content: a new store
    changed = tmp_path / "markers.tsv"
    changed.write_text(markers.read_text().replace("\t3\t", "\t4\t", 1))
    again = script("pretrain", chroms, changed, "--model", tmp_path / "pre", "--params",
                   params, "-q")
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / ".gperceiver-cache").iterdir())) == 2

    # other markers than the pretrained model's: named by the user's files, not the cache
    renamed = tmp_path / "renamed_markers.tsv", tmp_path / "renamed_chroms.tsv"
    renamed[0].write_text(markers.read_text().replace("name\tm0\t", "name\tx0\t", 1))
    renamed[1].write_text(chroms.read_text().replace("\tm0\t", "\tx0\t", 1))
    other = script("finetune", TEST_DATA / "phenos.tsv", renamed[1], renamed[0], "--model",
                   tmp_path / "other", "--pretrained", tmp_path / "pre", "--params", params,
                   "-q")
    assert other.returncode == ExitCode.INPUT_FORMAT, other.stderr
    assert other.stderr.count("\n") == 1 and ".gperceiver-cache" not in other.stderr
    assert f"{renamed[0]} (with {renamed[1]}): not the model's variants: variant 0 is " \
        "'x0'" in other.stderr


def test_bad_inputs_end_in_one_line(tmp_path):
    missing = script("finetune", TEST_DATA / "phenos.tsv", TEST_DATA / "chroms.tsv",
                     tmp_path / "nope.tsv", "--model", tmp_path / "m")
    assert missing.returncode == ExitCode.INPUT_NOT_FOUND
    assert missing.stderr.strip().endswith("nope.tsv: no such file")
    assert missing.stderr.count("\n") == 1
    usage = script("pretrain", TEST_DATA / "chroms.tsv")
    assert usage.returncode == ExitCode.USAGE
    helped = script("finetune", "--help")
    assert helped.returncode == 0 and "exit codes:" in helped.stdout
    assert "--block-strategy" in helped.stdout and "--encoder-nontrainable" in helped.stdout
