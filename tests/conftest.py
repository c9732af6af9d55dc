"""Shared fixtures: paths to the example data and a subprocess runner for the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = ROOT / "test_data"
MICE = ROOT.parent / "shared" / "data" / "mice"

# pytest-xdist runs one worker per core (pyproject's addopts): each worker, and the CLI
# subprocesses it starts, takes its share of the cores instead of all of them
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


def run_cli(
    *args: object, check: bool = False, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `gperceiver ARGS` in a real subprocess, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "gperceiver", *map(str, args)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"gperceiver {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def example_store(tmp_path_factory) -> Path:
    """test_data's markers/chroms converted once per session."""
    out = tmp_path_factory.mktemp("example") / "example.zarr"
    from gperceiver.converters.tsv import convert_tsv

    convert_tsv(
        TEST_DATA / "markers.tsv", TEST_DATA / "chroms.tsv", out,
        samples_chunk=16, variants_chunk=32, progress=False,
    )
    return out
