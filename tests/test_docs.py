"""Every snippet of docs/inspect.md runs, in order, as a user would paste it.

The page promises a working folder with `panel.zarr` (test_data converted),
`phenos.tsv` (test_data's) and `run/` (a pretraining run with best.ckpt and
metrics.csv); this test prepares exactly that in a temporary folder, then runs the
```python blocks in one shared namespace and each line of the ```sh blocks as a
`gperceiver` command (in-process, through the CLI's own `main`).
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from gperceiver.cli.main import main
from tests.conftest import ROOT, TEST_DATA
from tests.test_embed import pretrained_run
from tests.test_plots import assert_png

PAGE = ROOT / "docs" / "inspect.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


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


def test_every_snippet_runs_in_order(workdir):
    namespace: dict = {"__name__": "__docs__"}
    for kind, code, line in snippets(PAGE):
        where = f"{PAGE.name}:{line}"
        if kind == "python":
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the docs' own code
            continue
        for command in filter(None, (c.strip() for c in code.splitlines())):
            argv = shlex.split(command)
            assert argv[0] == "gperceiver", f"{where}: not a gperceiver command: {command}"
            assert main(argv[1:]) == 0, f"{where}: `{command}` failed"
    # What the page says it makes is there.
    for png in ["emb.pca.png", "run/learning_curves.png", "afs.png", "missing.png",
                "pca_folds.png"]:
        assert_png(workdir / png)
    assert namespace["genotype_pcs"].shape == (40, 2)
    assert namespace["in_memory"]["sample_embedding"].shape == (40, 12)
