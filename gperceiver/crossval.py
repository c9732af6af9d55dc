"""Leak-free cross-validation: every fold of the cv column, every method, same rows.

For test fold K each method trains without fold K's phenotypes and is measured
on them: `gblup` fits REML and BLUP on the other folds (it chooses nothing);
`gperceiver` is `fit(..., test_fold=K)`, whose early stopping and every choice
use lines of the other folds only. A gperceiver fit also reports its marker
path alone on the same rows (method `linear`), so each run shows what the
Perceiver adds to it. Folds run side by side (`jobs`) share the cores: each
caps its torch and BLAS threads at cores / jobs.

Writes OUT/cv_results.tsv (method, fold, block, n, pearson_r, rmse, cpu_seconds),
OUT/cv_summary.json (per method: mean r and RMSE per block over folds, their
mean, CPU seconds per fold) and OUT/cv_r.png (r per block and method, one dot
per fold); each fold's run folder stays under OUT/runs/.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gperceiver.atomic import atomic_output, check_writable
from gperceiver.data.phenotypes import absent_fold, folds_present, read_phenotypes
from gperceiver.errors import UsageError
from gperceiver.progress import progress_bar
from gperceiver.store import open_store
from gperceiver.train.params import Params

METHODS = ("gblup", "gperceiver")
RESULTS_FILE = "cv_results.tsv"
SUMMARY_FILE = "cv_summary.json"
PICTURE_FILE = "cv_r.png"
COLUMNS = ("method", "fold", "block", "n", "pearson_r", "rmse", "cpu_seconds")


def data_folds(store: str | os.PathLike, phenotypes: str | os.PathLike) -> list[int]:
    """The folds present in the cv column among the observed rows of the store's samples.

    The table's warnings (skipped names, empty responses) are raised here, once;
    each fold reads it again with them silenced.
    """
    ds = open_store(store)
    phenos = read_phenotypes(phenotypes, ds["sample_id"].values.tolist())
    if not phenos.attrs["has_cv"]:
        raise UsageError(f"{phenotypes} has no cv column: cross-validation needs one")
    return folds_present(phenos)


def _rows(method: str, fold: int, section: dict[str, Any] | None,
          cpu: float) -> list[dict[str, Any]]:
    if not section:
        return []
    return [{"method": method, "fold": fold, "block": int(b) if b.isdigit() else b, "n": m["n"],
             "pearson_r": m.get("pearson_r"), "rmse": m.get("rmse"), "cpu_seconds": cpu}
            for b, m in section["blocks"].items()]


@contextlib.contextmanager
def limit_threads(threads: int | None) -> Iterator[None]:
    """Torch's and the BLAS/OpenMP libraries' threads capped at `threads` (None: as they
    are), so that folds run side by side share the cores instead of oversubscribing them."""
    if not threads:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        torch.set_num_threads(before)


def run_fold(method: str, fold: int, store: str, phenotypes: str, run_dir: str,
             params: dict[str, Any] | None, pretrained: str | None,
             threads: int | None) -> list[dict[str, Any]]:
    """One method on one test fold; its rows of the results table."""
    start = time.process_time()
    with limit_threads(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "gblup":
            from gperceiver.baseline import baseline

            _, metrics = baseline(store, phenotypes, run_dir, test_fold=fold, force=True,
                                  progress=False)
            return _rows(method, fold, metrics["test"], time.process_time() - start)
        from gperceiver.fit import fit
        from gperceiver.train.params import params_from_dict

        p = params_from_dict(params) if params is not None else Params()
        metrics = fit(store, phenotypes, run_dir, p, test_fold=fold, pretrained=pretrained,
                      force=True, progress=False).metrics
    cpu = time.process_time() - start
    rows = _rows(method, fold, metrics["test"], cpu)
    components = metrics.get("components")
    if components:
        rows += _rows("linear", fold, components["linear_only"].get("test"), np.nan)
    return rows


def summarise(table: pd.DataFrame) -> dict[str, Any]:
    """Per method: mean r and RMSE per block over folds, the mean over blocks, CPU/fold."""
    out: dict[str, Any] = {}
    for method, rows in table.groupby("method", sort=False):
        by_block = rows.groupby("block")[["pearson_r", "rmse"]].mean()
        cpu = rows.groupby("fold")["cpu_seconds"].first()
        per_fold = rows.groupby("fold")["pearson_r"].mean()
        out[str(method)] = {
            "blocks": [b.item() if hasattr(b, "item") else b for b in by_block.index],
            "block_r": [round(float(v), 4) for v in by_block["pearson_r"]],
            "block_rmse": [round(float(v), 4) for v in by_block["rmse"]],
            "mean_r": round(float(by_block["pearson_r"].mean()), 4),
            "fold_mean_r": {str(k): round(float(v), 4) for k, v in per_fold.items()},
            "fold_block_r": {str(k): [None if pd.isna(v) else round(float(v), 4)
                                      for v in g.sort_values("block")["pearson_r"]]
                             for k, g in rows.groupby("fold")},
            "cpu_seconds_per_fold": (None if cpu.isna().all()
                                     else round(float(cpu.mean()), 1)),
        }
    return out


def cross_validate(
    store: str | os.PathLike, phenotypes: str | os.PathLike, out_dir: str | os.PathLike,
    *, methods: tuple[str, ...] = METHODS, folds: list[int] | None = None,
    params: Params | None = None, pretrained: str | os.PathLike | None = None,
    jobs: int = 1, force: bool = False, progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run every (method, fold) and write the results; (table, summary); `progress`:
    a bar over the runs, with the time left.

    `pretrained`: gperceiver starts every fold from this checkpoint (pretrained on
    genotypes alone, so it may have seen every line's genotypes, never a phenotype).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        also = (": its rows come with every gperceiver run (the marker path alone)"
                if unknown[0] == "linear" else "")
        raise UsageError(f"--methods: unknown method '{unknown[0]}' (one of "
                         f"{', '.join(METHODS)}){also}")
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    available = data_folds(store, phenotypes)
    folds = available if not folds else list(folds)
    missing = [k for k in folds if k not in available]
    if missing:
        raise absent_fold("--folds", missing[0], phenotypes, available)
    out = Path(out_dir)
    check_writable(out, force)
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(exist_ok=True)
    for name in (RESULTS_FILE, SUMMARY_FILE, PICTURE_FILE):
        (out / name).unlink(missing_ok=True)
    p = None if params is None else params.to_dict()
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    pre = None if pretrained is None else str(pretrained)
    tasks = [(m, k, str(store), str(phenotypes), str(out / "runs" / f"{m}_fold{k}"), p, pre,
              threads) for k in folds for m in methods]
    # spawned workers: torch and forked OpenMP threads do not mix
    pool = ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) if jobs > 1 else None
    results = []
    with progress_bar(len(tasks), "cv", "runs", progress) as bar, \
            pool or contextlib.nullcontext():
        for rows in (pool.map if pool else map)(run_fold, *zip(*tasks, strict=True)):
            results.append(rows)  # in task order
            bar.update()
    table = pd.DataFrame([r for rows in results for r in rows], columns=list(COLUMNS))
    table = table.sort_values(["method", "fold", "block"], kind="stable")
    summary = {"store": str(store), "phenotypes": str(phenotypes), "folds": folds,
               "pretrained": pre,
               "methods": summarise(table),
               "note": "test-fold figures: each fold's phenotypes were never seen by its "
                       "model (not for training, early stopping or any choice)"}
    with atomic_output(out / RESULTS_FILE, True) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g", na_rep="NA")
    with atomic_output(out / SUMMARY_FILE, True) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    from gperceiver.plots import plot_cv

    plot_cv(table, out / PICTURE_FILE, force=True)
    return table, summary
