"""Accuracy on the heterogeneous stock mice: per-block mean Pearson r over the 5 cv folds.

Converts `shared/data/mice` with `gperceiver convert tsv` (into --workdir, default a
temporary folder), then runs every method on cv folds K = 0..4 exactly as a user
would, one `gperceiver` process per fold, and reads each run's metrics.json: the
Pearson r per block on that fold's validation rows. Prints one JSON line: per
method the per-block r averaged over folds, their mean, and the run time; next to
the reference figures from the data set's README (same folds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MICE = ROOT.parent / "shared" / "data" / "mice"
FOLDS = (0, 1, 2, 3, 4)
# The data set's README: mean r over these folds, blocks 0, 1, 2.
REFERENCE = {
    "gblup": {"block_r": [0.382, 0.500, 0.521], "mean_r": 0.468},
    "rkhs": {"block_r": [0.406, 0.520, 0.531], "mean_r": 0.486},
}

# A method: (fold, run folder) -> the gperceiver arguments of that fold's run.
Method = Callable[[int, Path], list[str]]


def gperceiver(*args: str | Path) -> float:
    """Run `gperceiver ARGS` in a subprocess; return its wall seconds (fail loudly)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "gperceiver", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"gperceiver {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return time.perf_counter() - start


def methods(store: Path, phenos: Path, params: Path, epochs: int,
            pretrained: Path | None) -> dict[str, Method]:
    """Every method compared, by name."""
    found: dict[str, Method] = {
        "gblup": lambda k, out: ["baseline", store, phenos, "--cv", str(k), "-o", out, "--force"],
    }
    # gperceiver fit, from scratch and from an encoder pretrained on every genotype (the
    # test lines' genotypes included, as the original tool intends; never their phenotypes).
    budget = ["--params", params, "--epochs", str(epochs), "-q"]
    found["gperceiver_scratch"] = lambda k, out: [
        "fit", store, phenos, "--cv", str(k), "-o", out, "--force", *budget]
    if pretrained is not None:
        found["gperceiver_pretrained"] = lambda k, out: [
            "fit", store, phenos, "--cv", str(k), "-o", out, "--force",
            "--pretrained", pretrained, *budget]
    return found


def validation_r(run_dir: Path) -> list[float]:
    """Pearson r per block on the validation rows, from a run's metrics.json."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    blocks = metrics["validation"]["blocks"]
    return [np.nan if blocks[b]["pearson_r"] is None else blocks[b]["pearson_r"]
            for b in sorted(blocks, key=int)]


def evaluate(name: str, method: Method, workdir: Path, folds: tuple[int, ...],
             jobs: int = 1) -> dict:
    """Run one method on every fold (`jobs` folds at a time); per-block r over folds."""
    outs = [workdir / f"{name}_cv{k}" for k in folds]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        seconds = list(pool.map(lambda k, out: gperceiver(*method(k, out)), folds, outs))
    per_fold = [validation_r(out) for out in outs]
    r = np.array(per_fold)
    block_r = r.mean(axis=0)
    return {
        "block_r": [round(float(x), 4) for x in block_r],
        "mean_r": round(float(block_r.mean()), 4),
        "fold_r": [[round(float(x), 4) for x in row] for row in r],
        "seconds": round(sum(seconds), 1),
        "seconds_per_fold": round(sum(seconds) / len(folds), 1),
        "parallel_folds": jobs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=MICE, help="folder of the mice TSVs")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the store and runs here (default: a temporary folder)")
    parser.add_argument("--only", nargs="*", default=None, metavar="METHOD",
                        help="run only these methods (gblup, gperceiver_scratch, "
                        "gperceiver_pretrained)")
    parser.add_argument("--folds", type=int, nargs="*", default=list(FOLDS),
                        help="cv folds to run")
    parser.add_argument("--params", type=Path, default=ROOT / "benchmarks" / "mice_params.json",
                        help="gperceiver hyper-parameters for pretrain and fit")
    parser.add_argument("--epochs", type=int, default=10, help="fit epochs per fold (budget)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="folds run at once (each its own process; set OMP_NUM_THREADS)")
    parser.add_argument("--pretrain-epochs", type=int, default=3,
                        help="pretraining epochs, once for all folds (budget)")
    args = parser.parse_args()
    folds = tuple(args.folds)
    wanted = set(args.only or ["gblup", "gperceiver_scratch", "gperceiver_pretrained"])

    with tempfile.TemporaryDirectory(prefix="mice_accuracy_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        store = workdir / "mice.zarr"
        convert_s = gperceiver(
            "convert", "tsv", "--markers", args.data / "markers.tsv.gz",
            "--chroms", args.data / "chroms.tsv", "-o", store, "--force", "--quiet",
        )
        pretrained, pretrain_s = None, 0.0
        if "gperceiver_pretrained" in wanted:
            pretrain_s = gperceiver("pretrain", store, "-o", workdir / "pretrain", "--force",
                                    "--params", args.params, "--epochs",
                                    str(args.pretrain_epochs), "-q")
            pretrained = workdir / "pretrain" / "best.ckpt"
        found = methods(store, args.data / "phenos.tsv", args.params, args.epochs, pretrained)
        results = {name: evaluate(name, method, workdir, folds, args.jobs)
                   for name, method in found.items() if name in wanted}
    report = {
        "benchmark": "mice_accuracy",
        "data": str(args.data),
        "folds": list(folds),
        "cpus": os.cpu_count(),
        "convert_seconds": round(convert_s, 1),
        "budget": {"fit_epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs,
                   "pretrain_seconds": round(pretrain_s, 1),
                   "params": json.loads(args.params.read_text())},
        "methods": results,
        "reference": REFERENCE,
    }
    if "gblup" in results:
        report["gblup_mean_r_minus_reference"] = round(
            results["gblup"]["mean_r"] - REFERENCE["gblup"]["mean_r"], 4
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
