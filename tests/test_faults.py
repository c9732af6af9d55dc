"""Faults: a killed conversion leaves nothing behind, and a rerun succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

from gperceiver import open_store
from gperceiver.errors import ExitCode
from tests.test_convert_tsv import write_panel


def _convert(mpath, cpath, out) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gperceiver", "convert", "tsv", "--markers", str(mpath),
         "--chroms", str(cpath), "-o", str(out), "--samples-chunk", "16", "-q"],
        stderr=subprocess.PIPE, text=True,
    )


def _wait_for_tmp(folder, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith(".out.zarr.tmp-") for p in folder.iterdir()):
            return True
        time.sleep(0.02)
    return False


def test_sigkill_during_convert_leaves_nothing(tmp_path):
    codes = np.random.default_rng(0).integers(3, 6, size=(3000, 1500))
    mpath, cpath = write_panel(tmp_path, codes)
    out = tmp_path / "out.zarr"
    proc = _convert(mpath, cpath, out)
    assert _wait_for_tmp(tmp_path, proc), "the conversion never started writing"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    rerun = _convert(mpath, cpath, out)
    assert rerun.wait() == 0, rerun.stderr.read()
    assert open_store(out).sizes["samples"] == 3000
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.zarr")]
    assert leftovers == []  # the killed run's temporary store was cleaned up


def test_ctrl_c_during_convert_exits_interrupted(tmp_path):
    codes = np.random.default_rng(1).integers(3, 6, size=(3000, 1500))
    mpath, cpath = write_panel(tmp_path, codes)
    out = tmp_path / "out.zarr"
    proc = _convert(mpath, cpath, out)
    assert _wait_for_tmp(tmp_path, proc)
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait() == ExitCode.INTERRUPTED
    assert proc.stderr.read().strip() == "gperceiver: error: interrupted"
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.zarr")]
