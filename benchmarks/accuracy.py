"""Leak-free accuracy of `gperceiver fit` with default settings, against GBLUP and RKHS.

For each data set, runs `gperceiver cv STORE PHENOS --methods gblup,gperceiver`
as a user would (every fold of the cv column; each fold's phenotypes never seen
by its model) and adds RKHS (Gaussian kernel, bandwidth = median distance, REML)
on the same folds. Prints one JSON line per data set: per method the mean r
per block over folds, their mean, every fold's mean, CPU seconds per fold, and
the issue's targets with whether they are met.

Data sets:
- `mice`: ../shared/data/mice (1,814 x 10,346, 3 traits; target mean r >= 0.50).
- `additive`: a simulated panel (benchmarks/panels.py: 600 founder-mosaic lines x
  900 linked markers, 3 correlated traits, h2 0.7, 10% missing phenotypes);
  target r >= GBLUP's.
- `epistatic`: the same with half the genetic variance in pairwise interactions;
  target r >= GBLUP's + 0.05.

Ablation: `linear` is the linear marker-effect path alone (from the same fits);
`--ablation` adds `perceiver_alone` (params `"linear": false`), and `--seeds`
repeats the gperceiver runs with other seeds; `--panel-seeds` draws other simulated
panels (a line each: one panel is noisy; then a line with every panel's gperceiver -
GBLUP, their mean and standard error, and the target judged on the mean r over
panels). `--pretrain-epochs N` pretrains
once on every genotype (default masked pretraining; phenotypes never seen) and
adds the same runs started from it (`*_pretrained`), at the same finetuning
budget, with the pretraining's wall seconds and what it learned: 2% of the
calls are hidden from it, and `pretrain_imputation` gives `gperceiver impute`'s
concordance on them beside the per-locus most frequent genotype's.

    python benchmarks/accuracy.py                      # every data set, defaults
    python benchmarks/accuracy.py --data additive epistatic --ablation --seeds 0 1
    python benchmarks/accuracy.py --data epistatic --panel-seeds 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.panels import simulate, write_panel  # noqa: E402

MICE = ROOT.parent / "shared" / "data" / "mice"
TARGETS = {"mice": ("mean_r >= 0.50", lambda m: m["gperceiver"]["mean_r"] >= 0.50),
           "additive": ("r >= GBLUP's", lambda m: m["gperceiver"]["mean_r"]
                        >= m["gblup"]["mean_r"]),
           "epistatic": ("r >= GBLUP's + 0.05", lambda m: m["gperceiver"]["mean_r"]
                         >= m["gblup"]["mean_r"] + 0.05)}


def gperceiver(*args: str | Path) -> float:
    """Run `gperceiver ARGS` in a subprocess; its wall seconds (fail loudly)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gperceiver", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"gperceiver {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return time.perf_counter() - start


def inputs(name: str, folder: Path, panel_seed: int | None) -> tuple[Path, Path, Path]:
    """(markers, chroms, phenos) of a data set; a simulated one is drawn with `panel_seed`
    and written in `folder`."""
    if name == "mice":
        return MICE / "markers.tsv.gz", MICE / "chroms.tsv", MICE / "phenos.tsv"
    panel = simulate(epistasis=0.5 if name == "epistatic" else 0.0, seed=panel_seed)
    return write_panel(panel, folder)


def kernel_r(kernel: np.ndarray, y: np.ndarray, cv: np.ndarray, folds: list[int]) -> np.ndarray:
    """Pearson r (folds, blocks) of GBLUP with `kernel`, each fold predicted from the others."""
    from gperceiver.baseline import gblup
    from gperceiver.metrics import pearson_r

    r = np.full((len(folds), y.shape[1]), np.nan)
    for i, k in enumerate(folds):
        for b in range(y.shape[1]):
            obs = ~np.isnan(y[:, b])
            train, test = obs & (cv[:, b] != k), obs & (cv[:, b] == k)
            if train.sum() > 2 and test.sum() > 1:
                pred, _ = gblup(kernel, np.nan_to_num(y[:, b]), train)
                r[i, b] = pearson_r(pred[test], y[test, b])
    return r


def rkhs(store: Path, phenos: Path, folds: list[int]) -> dict:
    """Gaussian-kernel RKHS (bandwidth = median squared distance per marker) per fold."""
    from gperceiver.data.phenotypes import read_phenotypes
    from gperceiver.dosages import Dosages
    from gperceiver.store import open_store

    start = time.process_time()
    ds = open_store(store)
    freq = np.asarray(ds["variant_allele_frequency"].values, np.float64)
    z = Dosages.read(ds, np.arange(ds.sizes["samples"]), freq).to_array().astype(np.float64)
    sq = (z * z).sum(1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0) / z.shape[1]
    kernel = np.exp(-dist / np.median(dist[np.triu_indices_from(dist, 1)]))
    ph = read_phenotypes(phenos, ds["sample_id"].values.tolist())
    y, cv = ph["response"].values.astype(np.float64), ph["cv"].values
    r = kernel_r(kernel, y, cv, folds)
    cpu = (time.process_time() - start) / len(folds)
    block_r = np.nanmean(r, axis=0)
    return {"block_r": [round(float(v), 4) for v in block_r],
            "mean_r": round(float(block_r.mean()), 4),
            "fold_mean_r": {str(k): round(float(np.nanmean(r[i])), 4)
                            for i, k in enumerate(folds)},
            "cpu_seconds_per_fold": round(cpu, 1)}


def pretrain(store: Path, folder: Path, epochs: int, hide: float = 0.02) -> tuple[float, dict]:
    """Masked pretraining (defaults) on every genotype but a hidden `hide` of the calls.

    Returns its wall seconds and what it learned, measured as the genotype
    concordance of `gperceiver impute` on the hidden calls, beside the per-locus
    most frequent genotype's. The checkpoint is `folder/pretrain/best.ckpt`.
    """
    from benchmarks.impute import most_frequent, write_store
    from gperceiver.store import open_store

    ds = open_store(store)
    truth = ds["call_genotype"].values
    hidden = (np.random.default_rng(0).random(truth.shape[:2]) < hide) & (truth >= 0).all(-1)
    masked = truth.copy()
    masked[hidden] = -1
    write_store(folder / "hidden.zarr", masked, ds["sample_id"].values, ds)
    seconds = gperceiver("pretrain", folder / "hidden.zarr", "-o", folder / "pretrain",
                         "--epochs", str(epochs), "--force", "-q")
    gperceiver("impute", folder / "pretrain" / "best.ckpt", folder / "hidden.zarr", "-o",
               folder / "imputed.zarr", "--force", "-q")
    dosage = truth.sum(-1)
    filled = open_store(folder / "imputed.zarr")["call_genotype"].values.sum(-1)
    seen = np.where(hidden, -1, dosage)
    mode = most_frequent(seen)
    return seconds, {
        "hidden_calls": int(hidden.sum()),
        "concordance": round(float((filled == dosage)[hidden].mean()), 4),
        "most_frequent_concordance": round(float((mode[:, None] == dosage)[hidden].mean()), 4)}


def cv(store: Path, phenos: Path, out: Path, methods: str, extra: list[str]) -> dict:
    gperceiver("cv", store, phenos, "-o", out, "--methods", methods, "--force", *extra)
    return json.loads((out / "cv_summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="*", default=["mice", "additive", "epistatic"],
                        choices=["mice", "additive", "epistatic"])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep stores and runs here (default: a temporary folder)")
    parser.add_argument("--folds", default=None, help="comma-separated folds [all]")
    parser.add_argument("--epochs", type=int, default=None,
                        help="cap fit's epochs (a budget; default: fit's own default)")
    parser.add_argument("--jobs", type=int, default=1, help="folds run at once")
    parser.add_argument("--ablation", action="store_true",
                        help="also run the Perceiver alone (params linear: false)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0],
                        help="gperceiver seeds; each is a full cv run")
    parser.add_argument("--panel-seeds", type=int, nargs="*", default=[1],
                        help="simulated panels: one JSON line per panel drawn with each seed")
    parser.add_argument("--pretrain-epochs", type=int, default=0,
                        help="pretrain on every genotype first and compare (0: skip)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="accuracy_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        runs = [(name, seed) for name in args.data
                for seed in ([None] if name == "mice" else args.panel_seeds)]
        panels: dict[str, dict[int, dict]] = {}  # data set -> panel seed -> methods
        for name, panel_seed in runs:
            label = name if panel_seed is None else f"{name}_panel{panel_seed}"
            markers, chroms, phenos = inputs(name, workdir / label, panel_seed)
            store = workdir / f"{label}.zarr"
            gperceiver("convert", "tsv", "--markers", markers, "--chroms", chroms, "-o",
                       store, "--force", "--quiet")
            extra = ["--jobs", str(args.jobs)]
            extra += ["--folds", args.folds] if args.folds else []
            extra += ["--epochs", str(args.epochs)] if args.epochs else []
            start = time.perf_counter()
            pretrain_s, imputation, starts = None, None, {"": []}
            if args.pretrain_epochs:
                pretrain_s, imputation = pretrain(store, workdir / label, args.pretrain_epochs)
                starts["_pretrained"] = ["--pretrained",
                                         str(workdir / label / "pretrain" / "best.ckpt")]
            params = workdir / "perceiver_alone.json"
            params.write_text(json.dumps({"linear": False}))
            methods: dict = {}
            for seed in args.seeds:
                tag = "" if seed == args.seeds[0] else f"_seed{seed}"
                for start_tag, start_args in starts.items():
                    run = [*extra, "--seed", str(seed), *start_args]
                    found = cv(store, phenos, workdir / f"{label}_cv{start_tag}{tag}",
                               "gblup,gperceiver" if not methods else "gperceiver", run)
                    folds = found["folds"]
                    for method, figures in found["methods"].items():
                        key = method if method == "gblup" else f"{method}{start_tag}{tag}"
                        methods[key] = figures
                    if args.ablation:
                        alone = cv(store, phenos, workdir / f"{label}_alone{start_tag}{tag}",
                                   "gperceiver", [*run, "--params", str(params)])
                        methods[f"perceiver_alone{start_tag}{tag}"] = \
                            alone["methods"]["gperceiver"]
            methods["rkhs"] = rkhs(store, phenos, folds)
            target, met = TARGETS[name]
            print(json.dumps({
                "benchmark": "accuracy", "data": name, "panel_seed": panel_seed, "folds": folds,
                "cpus": os.cpu_count(), "epochs_cap": args.epochs, "seeds": args.seeds,
                "pretrain_epochs": args.pretrain_epochs,
                "pretrain_seconds": None if pretrain_s is None else round(pretrain_s, 1),
                "pretrain_imputation": imputation,
                "wall_seconds": round(time.perf_counter() - start, 1),
                "methods": methods, "target": target, "target_met": bool(met(methods)),
                "gperceiver_minus_gblup": round(
                    methods["gperceiver"]["mean_r"] - methods["gblup"]["mean_r"], 4),
            }), flush=True)
            if panel_seed is not None:
                panels.setdefault(name, {})[panel_seed] = methods
        for name, by_seed in panels.items():
            if len(by_seed) > 1:
                print(json.dumps(over_panels(name, by_seed)), flush=True)


def over_panels(name: str, by_seed: dict[int, dict]) -> dict:
    """A data set's summary over simulated panels: every panel's gperceiver - GBLUP, their
    mean and standard error, and the target judged on the methods' mean r over panels."""
    gain = np.array([m["gperceiver"]["mean_r"] - m["gblup"]["mean_r"]
                     for m in by_seed.values()])
    mean_r = {method: {"mean_r": round(float(np.mean(
        [m[method]["mean_r"] for m in by_seed.values()])), 4)}
        for method in next(iter(by_seed.values()))}
    target, met = TARGETS[name]
    return {"benchmark": "accuracy", "data": name, "panel_seeds": list(by_seed),
            "gperceiver_minus_gblup": [round(float(g), 4) for g in gain],
            "mean_gperceiver_minus_gblup": round(float(gain.mean()), 4),
            "standard_error": round(float(gain.std(ddof=1) / np.sqrt(len(gain))), 4),
            "methods_mean_r": mean_r, "target": f"{target}, over panels",
            "target_met": bool(met(mean_r))}


if __name__ == "__main__":
    main()
