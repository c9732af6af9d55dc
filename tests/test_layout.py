"""Data flows one way: each layer imports only the layers before it (docs/architecture.md).

Every import is read from the source, lazy ones inside functions included.
"""

import ast
import re

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "gperceiver"

# a module under the folder on the left may not import any module on the right
FORBIDDEN = {
    "gperceiver/model": ("gperceiver.train", "gperceiver.data", "gperceiver.cli",
                         "gperceiver.store", "gperceiver.converters"),
    "gperceiver/data": ("gperceiver.train", "gperceiver.model", "gperceiver.cli",
                        "gperceiver.fit", "gperceiver.predict", "gperceiver.outputs"),
    # training writes checkpoints; predicting and reporting come after it
    "gperceiver/train": ("gperceiver.fit", "gperceiver.predict", "gperceiver.outputs",
                         "gperceiver.embedding", "gperceiver.plots", "gperceiver.cli"),
    # the store layer: opened, written and checked by everything after it, knowing none
    "gperceiver/store": ("gperceiver.converters", "gperceiver.train", "gperceiver.model",
                         "gperceiver.data", "gperceiver.cli", "gperceiver.fit",
                         "gperceiver.predict", "gperceiver.outputs"),
    # converters parse inputs and write through the store layer (and never load torch)
    "converters": ("gperceiver.train", "gperceiver.model", "gperceiver.data",
                   "gperceiver.cli", "torch"),
    "gperceiver": ("gperceiver.cli",),  # nothing outside the CLI imports it
}


def imports(path) -> set[str]:
    """Every module `path` imports (absolute names), at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules(folder: str):
    for path in sorted((ROOT / folder).rglob("*.py")):
        if folder == "gperceiver" and (path.is_relative_to(PACKAGE / "cli")
                                       or path.name == "__main__.py"):  # the CLI itself
            continue
        yield path


@pytest.mark.parametrize("folder", FORBIDDEN)
def test_no_layer_imports_a_later_one(folder):
    bad = [f"{path.relative_to(ROOT)} imports {name}"
           for path in modules(folder) for name in sorted(imports(path))
           if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[folder])]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("folder", ["gperceiver", "converters", "tests", "benchmarks"])
def test_nothing_imports_a_top_level_converters(folder):
    """converters/ installs as gperceiver.converters: a top-level `converters` exists only
    in a checkout (and would collide with any other project's)."""
    bad = [f"{path.relative_to(ROOT)} imports {name}"
           for path in sorted((ROOT / folder).rglob("*.py")) for name in sorted(imports(path))
           if name == "converters" or name.startswith("converters.")]
    assert not bad, "\n".join(bad)


def test_pyproject_installs_every_package_and_converters_inside_gperceiver():
    """pyproject.toml lists every package folder, with converters/ as gperceiver.converters."""
    text = (ROOT / "pyproject.toml").read_text()
    listed = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M)
    assert listed, "pyproject.toml: no [tool.setuptools] packages list"
    packages = set(re.findall(r'"([\w.]+)"', listed[1]))
    folders = {".".join(path.parent.relative_to(ROOT).parts)
               for path in PACKAGE.rglob("__init__.py")}
    assert packages == folders | {"gperceiver.converters"}
    assert re.search(r'package-dir = \{ "gperceiver.converters" = "converters" \}', text)


def test_the_rule_sees_a_lazy_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from gperceiver.train.params import Params\n")
    assert "gperceiver.train.params" in imports(source)


def test_the_command_line_and_the_converters_load_no_torch():
    """`gperceiver --help`, `convert` and `info` answer at once: parsing the command line,
    the params and the converters must not import torch, Lightning or numba (a second
    and 170 MB per command)."""
    import subprocess
    import sys

    code = ("import sys, gperceiver.cli.main, gperceiver.converters.tsv, "
            "gperceiver.train.params, gperceiver.store.qc, gperceiver.store.info; "
            "print(sorted(m for m in ('torch', 'lightning', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_training_command_refuses_bad_flags_before_loading_torch():
    """`fit`, `pretrain` and the original's scripts check their flags and params before
    torch and Lightning load (6 s): a typo is answered at once."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gperceiver.cli.main import main, run_command\n"
        "from gperceiver.cli.legacy import finetune_parser, pretrain_parser\n"
        "codes = [main(['fit', 'S.zarr', 'P.tsv', '-o', 'out', '--epochs', '0']),\n"
        "         main(['pretrain', 'S.zarr', '-o', 'out', '--epochs', '0']),\n"
        "         run_command(pretrain_parser().parse_args(['C', 'M', '--nepochs', '0']),\n"
        "                     prog='gperceiver_pretrain'),\n"
        "         run_command(finetune_parser().parse_args(['P', 'C', 'M', '--nepochs', '0']),\n"
        "                     prog='gperceiver_finetune')]\n"
        "print(codes, sorted(m for m in ('torch', 'lightning') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.strip() == "[2, 2, 2, 2] []", out.stdout + out.stderr
    assert out.stderr.splitlines() == [  # each names the flag the user typed
        "gperceiver: error: --epochs: must be >= 1, got 0",
        "gperceiver: error: --epochs: must be >= 1, got 0",
        "gperceiver_pretrain: error: --nepochs: must be >= 1, got 0",
        "gperceiver_finetune: error: --nepochs: must be >= 1, got 0"], out.stderr
