"""open_store: lazy, validated, and clear about broken stores."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr

from gperceiver import open_store
from gperceiver.errors import ExitCode, InputFormatError, InputNotFoundError
from gperceiver.store import schema
from tests.conftest import run_cli


def test_lazy_and_labelled(example_store):
    ds = open_store(example_store)
    assert ds.call_genotype.chunks is not None  # Dask-backed, nothing loaded
    assert ds.sizes["samples"] == 40 and ds.sizes["variants"] == 60
    assert ds.call_genotype.dtype == np.int8
    chr2 = ds.sel(variants=(ds.variant_contig == 1).values)
    assert set(chr2.variant_id.values) == {f"m{i}" for i in range(20, 40)}


def test_missing_store(tmp_path):
    with pytest.raises(InputNotFoundError, match="no such genotype store"):
        open_store(tmp_path / "nope.zarr")


def test_not_a_store(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(InputFormatError, match="not a readable Zarr genotype store"):
        open_store(tmp_path / "x.zarr")


def test_missing_variable_named(example_store, tmp_path):
    broken = tmp_path / "b.zarr"
    shutil.copytree(example_store, broken)
    shutil.rmtree(broken / "variant_contig")
    (broken / ".zmetadata").unlink()
    with pytest.raises(InputFormatError, match="variable 'variant_contig' is missing"):
        open_store(broken)


def test_wrong_dtype_named(example_store, tmp_path):
    broken = tmp_path / "b.zarr"
    shutil.copytree(example_store, broken)
    (broken / ".zmetadata").unlink()
    g = zarr.open_group(str(broken), mode="a")
    arr = g.create_array("variant_allele_frequency", shape=(60, 2), dtype="<U3", overwrite=True)
    arr.attrs["_ARRAY_DIMENSIONS"] = ["variants", "alleles"]
    with pytest.raises(InputFormatError, match="'variant_allele_frequency' has dtype"):
        open_store(broken)


def test_corrupt_chunk_names_variable(example_store, tmp_path):
    broken = tmp_path / "b.zarr"
    shutil.copytree(example_store, broken)
    (broken / "call_genotype" / "1.1.0").write_bytes(b"\x00garbage" * 9)
    ds = open_store(broken)  # metadata is fine: opening works
    with pytest.raises(InputFormatError, match=r"variable 'call_genotype' cannot be read at \[32:"):
        ds.call_genotype.load()
    proc = run_cli("info", broken)
    assert proc.returncode == ExitCode.INPUT_FORMAT
    assert "variable 'call_genotype'" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_corrupt_chunk_while_streaming_names_variable(example_store, tmp_path):
    from gperceiver.data.loader import make_loader

    broken = tmp_path / "b.zarr"
    shutil.copytree(example_store, broken)
    (broken / "call_genotype" / "0.1.0").write_bytes(b"\x00garbage" * 9)
    loader = make_loader(broken, "plain", batch_size=8, shuffle=False)
    with pytest.raises(InputFormatError, match=r"variable 'call_genotype' cannot be read"):
        list(loader)


def test_local_chunks_decode_like_zarr(example_store, tmp_path):
    """The loader's direct chunk decoder returns what zarr returns, edge chunks cut,
    an absent chunk as the fill value, and a corrupt one as a named error."""
    from gperceiver.store import LocalChunks

    copy = tmp_path / "c.zarr"
    shutil.copytree(example_store, copy)
    array = zarr.open_group(copy, mode="r")["call_genotype"]
    chunks = LocalChunks.open(array, str(copy), "call_genotype")
    assert chunks is not None
    grid = [-(-n // c) for n, c in zip(array.shape, array.chunks, strict=True)]
    assert grid[1] > 1
    for i in range(grid[0]):
        for j in range(grid[1]):
            region = tuple(slice(k * c, (k + 1) * c) for k, c in zip((i, j, 0), array.chunks,
                                                                     strict=True))
            np.testing.assert_array_equal(chunks[i, j, 0], array[region])
    (copy / "call_genotype" / "0.1.0").unlink()
    # our stores write every chunk, so an absent one is lost, and said so...
    with pytest.raises(InputFormatError, match=r"chunk 0\.1\.0 is missing"):
        chunks[0, 1, 0]
    with pytest.raises(InputFormatError, match=r"chunk 0\.1\.0 is missing"):
        open_store(copy).call_genotype.load()
    # ...while a store written by others (bio2zarr skips all-0 chunks) reads it as zarr does
    attrs = json.loads((copy / "call_genotype" / ".zattrs").read_text())
    del attrs["every_chunk_written"]
    (copy / "call_genotype" / ".zattrs").write_text(json.dumps(attrs))
    zarr.consolidate_metadata(copy)
    array = zarr.open_group(copy, mode="r")["call_genotype"]
    chunks = LocalChunks.open(array, str(copy), "call_genotype")
    absent = tuple(slice(k * c, (k + 1) * c) for k, c in zip((0, 1, 0), array.chunks, strict=True))
    np.testing.assert_array_equal(chunks[0, 1, 0], array[absent])
    assert (chunks[0, 1, 0] == 0).all()
    (copy / "call_genotype" / "0.0.0").write_bytes(b"\x00garbage")
    with pytest.raises(InputFormatError, match=r"'call_genotype' cannot be read at \[0:"):
        chunks[0, 0, 0]


def test_fresh_store_dtypes_are_the_declared_ones(example_store):
    """Every writer takes a variable's dtype from schema.VARIABLES: a converted store's
    arrays, variant_length and region_index included, have exactly those dtypes."""
    group = zarr.open_group(example_store, mode="r")
    declared = {name: var.dtype for name, var in schema.VARIABLES.items()
                if var.dtype and name in group}
    assert {"call_genotype", "variant_contig", "variant_position", "variant_length",
            "region_index", "variant_allele_frequency"} <= set(declared)
    assert {name: str(group[name].dtype) for name in declared} == declared
