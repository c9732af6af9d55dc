"""The phenotype reader: alignment to the store, skipped rows, cv folds, bad input."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gperceiver.data.phenotypes import (
    NO_CV,
    PhenotypeWarning,
    block_table,
    held_out_split,
    read_phenotypes,
    split_masks,
    with_validation_fold,
)
from gperceiver.errors import InputFormatError, InputNotFoundError, Note, UsageError
from gperceiver.store import open_store
from tests.conftest import TEST_DATA

SAMPLES = ["s0", "s1", "s2", "s3"]


def write(tmp_path: Path, text: str, name: str = "phenos.tsv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rows(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def test_test_data_aligns_to_the_store(example_store):
    ids = [str(s) for s in open_store(example_store)["sample_id"].values]
    ph = read_phenotypes(TEST_DATA / "phenos.tsv", ids)
    table = pd.read_csv(TEST_DATA / "phenos.tsv", sep="\t", dtype={"name": str})
    assert ph.sizes == {"samples": len(ids), "blocks": 2}
    assert list(ph["sample_id"].values) == ids
    assert ph["response"].dtype == np.float32 and ph["cv"].dtype.kind == "i"
    for row in table.itertuples():
        i = ids.index(row.name)
        assert ph["response"].values[i, row.block] == pytest.approx(row.response, rel=1e-6)
        assert ph["cv"].values[i, row.block] == row.cv
    observed = ph["response"].notnull().values
    assert observed.sum(axis=0).tolist() == table.groupby("block").size().tolist()
    assert (ph["cv"].values[~observed] == NO_CV).all()
    assert ph.attrs["rows"] == len(table) and ph.attrs["unmatched_rows"] == 0


def test_rows_follow_store_order_and_extra_columns_are_ignored(tmp_path):
    path = write(tmp_path, rows(
        "trait\tcv\tblock\tresponse\tname",
        "a\t1\t0\t3.5\ts2",
        "b\t0\t0\t-1\ts0",
        "c\t1\t1\t2e-3\ts0",
    ))
    ph = read_phenotypes(path, SAMPLES)
    r = ph["response"].values
    assert r[2, 0] == 3.5 and r[0, 0] == -1 and r[0, 1] == pytest.approx(2e-3)
    assert np.isnan(r[1]).all() and np.isnan(r[3]).all() and np.isnan(r[2, 1])
    assert ph["cv"].values.tolist() == [[0, 1], [NO_CV, NO_CV], [1, NO_CV], [NO_CV, NO_CV]]


def test_gzip_input(tmp_path):
    path = tmp_path / "phenos.tsv.gz"
    with gzip.open(path, "wt") as f:
        f.write(rows("name\tresponse\tblock", "s1\t1.5\t0"))
    assert read_phenotypes(path, SAMPLES)["response"].values[1, 0] == 1.5


def test_unknown_names_are_counted_and_reported(tmp_path):
    path = write(tmp_path, rows(
        "name\tresponse\tblock", "s0\t1\t0", "zz\t2\t0", "yy\t3\t0", "zz\t3\t1", "s1\t1\t1"
    ))
    with pytest.warns(PhenotypeWarning, match="3 row"):
        ph = read_phenotypes(path, SAMPLES)
    assert ph.attrs["unmatched_rows"] == 3
    assert ph.attrs["unmatched_examples"] == ["yy", "zz"]
    assert int(ph["response"].notnull().sum()) == 2


def test_no_matching_name_is_an_error(tmp_path):
    path = write(tmp_path, rows("name\tresponse\tblock", "x\t1\t0", "y\t2\t0"))
    with pytest.raises(InputFormatError, match=r"phenos.tsv, column name: none of the 2 rows"):
        read_phenotypes(path, SAMPLES)


@pytest.mark.parametrize("empty", ["", "NA", "nan", "."])
def test_empty_responses_are_dropped_with_a_warning(tmp_path, empty):
    path = write(tmp_path, rows(
        "name\tresponse\tblock\tcv", f"s0\t{empty}\t0\t1", "s1\t2\t0\t1", f"s2\t{empty}\t0\t0"
    ))
    with pytest.warns(PhenotypeWarning, match="2 row"):
        ph = read_phenotypes(path, SAMPLES)
    assert ph.attrs["empty_responses"] == 2
    assert ph["response"].notnull().values[:, 0].tolist() == [False, True, False, False]
    assert ph["cv"].values[0, 0] == NO_CV  # a dropped row carries no fold either


def test_clean_file_gives_no_warning(tmp_path):
    path = write(tmp_path, rows("name\tresponse\tblock", "s0\t1\t0"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_phenotypes(path, SAMPLES)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (rows("name\tresponse\tblock", "s0\t1\t0", "s1\t1\t-1"), r"line 3, column block"),
        (rows("name\tresponse\tblock", "s0\t1\t"), r"line 2, column block"),
        (rows("name\tresponse\tblock", "s0\tabc\t0"), r"line 2, column response: .*not a number"),
        (rows("name\tresponse\tblock", "s0\tinf\t0"), r"line 2, column response: .*infinite"),
        (rows("name\tresponse\tblock\tcv", "s0\t1\t0\tA"), r"line 2, column cv: cv 'A'"),
        (rows("name\tresponse\tblock", "s0\t1"), r"line 2: 2 tab-separated field"),
        (rows("name\tresponse\tblock", "\t1\t0"), r"line 2, column name: empty name"),
        (rows("name\tvalue\tblock", "s0\t1\t0"), r"line 1: header lacks column\(s\) response"),
        (rows("name response block", "s0 1 0"), r"line 1: .*tab-separated"),
        (rows("name\tresponse\tblock"), r"line 1: no data rows"),
        ("", r"empty file"),
        (
            rows("name\tresponse\tblock\tcv", "s0\t1\t0\t0", "s1\t1\t0\t1", "s0\t2\t0\t1"),
            r"line 4, column cv: 's0' has cv 1 here but cv 0 on line 2 in the same block",
        ),
    ],
)
def test_bad_input_names_file_line_and_column(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputFormatError, match=message) as info:
        read_phenotypes(path, SAMPLES)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "phenos.tsv"
    path.write_bytes(b"name\tresponse\tblock\ns0\t1\t0\n\xff\xfe\t1\t0\n")
    with pytest.raises(InputFormatError, match="not UTF-8"):
        read_phenotypes(path, SAMPLES)


def test_missing_file(tmp_path):
    with pytest.raises(InputNotFoundError, match="no such file"):
        read_phenotypes(tmp_path / "nope.tsv", SAMPLES)


def test_cv_split_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"s{i}" for i in range(30)]
    lines = ["name\tresponse\tblock\tcv"]
    expected_cv = np.full((30, 3), NO_CV)
    for i, name in enumerate(names):
        for b in range(3):
            if rng.random() < 0.7:
                fold = int(rng.integers(0, 5))
                lines.append(f"{name}\t{rng.normal():.4f}\t{b}\t{fold}")
                expected_cv[i, b] = fold
    ph = read_phenotypes(write(tmp_path, rows(*lines)), names, cv=3)
    assert ph.attrs["cv"] == 3
    train, valid = split_masks(ph)
    observed = expected_cv != NO_CV
    assert (valid.values == (expected_cv == 3)).all()
    assert (train.values == (observed & (expected_cv != 3))).all()
    assert not (train.values & valid.values).any()
    # An explicit fold overrides the one recorded at reading time.
    _, valid1 = split_masks(ph, cv=1)
    assert (valid1.values == (expected_cv == 1)).all()


def test_no_cv_column_means_no_validation(tmp_path):
    path = write(tmp_path, rows("name\tresponse\tblock", "s0\t1\t0", "s1\t2\t0"))
    ph = read_phenotypes(path, SAMPLES)
    train, valid = split_masks(ph)
    assert not ph.attrs["has_cv"] and ph.attrs["cv"] == NO_CV
    assert train.values[:, 0].tolist() == [True, True, False, False]
    assert not valid.values.any()
    with pytest.raises(UsageError, match="--cv 0: .*has no cv column"):
        read_phenotypes(path, SAMPLES, cv=0)


def test_a_fold_without_rows_is_refused(tmp_path):
    path = write(tmp_path, rows("name\tresponse\tblock\tcv", "s0\t1\t0\t0", "s1\t\t0\t2"))
    with pytest.warns(PhenotypeWarning):
        ph = read_phenotypes(path, SAMPLES)
    with pytest.raises(UsageError, match=r"no observed row .* has cv 2 \(folds present: \[0\]\)"):
        with_validation_fold(ph, 2)
    with pytest.raises(UsageError, match="integer >= 0"):
        with_validation_fold(ph, -1)
    # the refusal names the option the fold came from
    with pytest.raises(UsageError, match=r"^--test-fold 2: no observed row"):
        held_out_split(ph, 2, 0.1, seed=0)


# ---------------------------------------------------------------- as trials record them


def test_replicates_are_averaged_into_line_means_with_a_note(tmp_path):
    path = write(tmp_path, rows("name\tresponse\tblock\tcv", "s0\t1\t0\t2", "s1\t4\t0\t1",
                                "s0\t3\t0\t2", "s0\t8\t1\t2", "s0\tNA\t0\t2", "s0\t5\t0\t2"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ph = read_phenotypes(path, SAMPLES)
    i = SAMPLES.index("s0")
    assert ph["response"].values[i].tolist() == [3.0, 8.0]  # mean of 1, 3, 5
    assert ph["n_obs"].values[i].tolist() == [3, 1] and ph["cv"].values[i, 0] == 2
    assert ph.attrs["replicated_means"] == 1
    notes = [str(w.message) for w in caught if issubclass(w.category, Note)]
    assert any("3 replicate rows of 1 line(s)" in n and "line means" in n for n in notes)


def test_block_gaps_and_names_map_to_outputs_in_sorted_order(tmp_path):
    gaps = write(tmp_path, rows("name\tresponse\tblock", "s0\t1\t5", "s1\t2\t2", "s0\t3\t2"),
                 "gaps.tsv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ph = read_phenotypes(gaps, SAMPLES)
    assert ph["block"].values.tolist() == [2, 5]
    assert ph["response"].values[SAMPLES.index("s0")].tolist() == [3.0, 1.0]
    assert any("blocks 2, 5 are not numbered 0..1" in str(w.message) for w in caught)
    named = write(tmp_path, rows("name\tresponse\tblock", "s0\t1\tPerth_2021",
                                 "s1\t2\tDale_2020", "s0\t3\tDale_2020"), "named.tsv")
    ph = read_phenotypes(named, SAMPLES)
    assert ph["block"].values.tolist() == ["Dale_2020", "Perth_2021"]
    assert block_table(ph) == "output\tblock\n0\tDale_2020\n1\tPerth_2021\n"
    assert ph["response"].values[SAMPLES.index("s0")].tolist() == [3.0, 1.0]
