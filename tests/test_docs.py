"""Every snippet of README.md and docs/*.md runs, in order, as a user would paste it.

Each page promises a working folder (docs/inspect.md: `panel.zarr`, test_data
converted, `phenos.tsv` and `run/`, a pretraining run; docs/ecosystem.md:
`panel.zarr` and `panel.trees`; README.md: the repository's `test_data/`); each
test prepares exactly that in a temporary folder, then runs the ```python blocks
in one shared namespace and each line of the ```sh/```bash blocks as a command:
`gperceiver` in-process through the CLI's own `main`, `vcztools` and
`python -m ...` as subprocesses.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gperceiver.cli.main import main
from tests.conftest import ROOT, TEST_DATA
from tests.test_embed import pretrained_run
from tests.test_plots import assert_png

PAGE = ROOT / "docs" / "inspect.md"
ECOSYSTEM = ROOT / "docs" / "ecosystem.md"
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SHELLS = ("sh", "bash")


def snippets(page: Path) -> list[tuple[str, str, int]]:
    """(language, code, first line) of every fenced block, in page order."""
    text = page.read_text()
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 2)
            for m in BLOCK.finditer(text)]


@pytest.fixture
def workdir(tmp_path_factory, tmp_path, example_store, monkeypatch) -> Path:
    shutil.copytree(example_store, tmp_path / "panel.zarr")
    shutil.copy(TEST_DATA / "phenos.tsv", tmp_path / "phenos.tsv")
    shutil.copytree(pretrained_run(tmp_path_factory, example_store), tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_page_has_python_and_shell_snippets():
    kinds = [kind for kind, _, _ in snippets(PAGE)]
    assert set(kinds) == {"python", "sh"}, "only python and sh blocks are runnable here"
    assert kinds.count("python") >= 8


def run_page(page: Path, skip: int = 0) -> dict:
    """Run the page's python and shell blocks (after the first `skip`) in order; return
    the python namespace."""
    namespace: dict = {"__name__": "__docs__"}
    for kind, code, line in snippets(page)[skip:]:
        where = f"{page.name}:{line}"
        if kind == "python":
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the docs' own code
            continue
        assert kind in SHELLS, f"{where}: a ```{kind} block cannot run"
        for command in (c.split("#")[0].strip() for c in code.splitlines()):
            if command:
                run_command(shlex.split(command), where)
    return namespace


def run_command(argv: list[str], where: str) -> None:
    if argv[0] == "gperceiver":
        assert main(argv[1:]) == 0, f"{where}: `{shlex.join(argv)}` failed"
        return
    if argv[0] == "vcztools":
        argv = ["python", "-m", *argv]
    assert argv[:2] == ["python", "-m"], f"{where}: cannot run `{shlex.join(argv)}`"
    proc = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True)
    assert proc.returncode == 0, f"{where}: `{shlex.join(argv)}` failed: {proc.stderr}"


def test_every_snippet_runs_in_order(workdir):
    namespace = run_page(PAGE)
    # What the page says it makes is there.
    for png in ["emb.pca.png", "run/learning_curves.png", "afs.png", "missing.png",
                "pca_folds.png"]:
        assert_png(workdir / png)
    assert namespace["genotype_pcs"].shape == (40, 2)
    assert namespace["in_memory"]["sample_embedding"].shape == (40, 12)


def test_ecosystem_page_runs_in_order(tmp_path, example_store, monkeypatch):
    pytest.importorskip("vcztools")  # Python >= 3.11
    import msprime

    shutil.copytree(example_store, tmp_path / "panel.zarr")
    ts = msprime.sim_ancestry(samples=20, sequence_length=100_000, recombination_rate=1e-8,
                              population_size=10_000, random_seed=2)
    msprime.sim_mutations(ts, rate=2e-8, random_seed=2).dump(tmp_path / "panel.trees")
    monkeypatch.chdir(tmp_path)
    namespace = run_page(ECOSYSTEM)
    assert namespace["view"].sizes["samples"] == 40
    assert "drop" in namespace["selection"].summary()


def test_readme_quickstart_and_python_run_in_order(tmp_path, monkeypatch):
    """Everything after the two install commands: the quickstart in `test_data/`'s
    folder, then the Python snippets."""
    shutil.copytree(ROOT / "test_data", tmp_path / "test_data")
    monkeypatch.chdir(tmp_path)
    kinds = [kind for kind, _, _ in snippets(README)]
    assert kinds[0] == "bash" and "python" in kinds
    run_page(README, skip=1)
    assert (tmp_path / "predictions.tsv").exists()
