"""Large panels against a memory budget: every command, as a user runs it, on one store.

Builds (once; cached under --cache) a store of random diploid genotypes,
--samples x --variants with a --missing share of calls missing, and phenotypes
for --phenotyped of its lines, then runs `gperceiver pretrain`, `fit`, `predict`,
`embed` and `impute` one after the other as subprocesses with default params or
--params (one epoch for the training commands; every command with `--memory` set
to --budget) and prints one JSON line per command: {"command", "samples", "variants",
"lines", "wall_s", "lines_per_s", "train_lines_per_s", "peak_rss_mb", "budget_mb",
"budget_held", "limit"},
after a first line with what importing torch, Lightning and gperceiver costs alone
(and `gperceiver info`'s peak), the floor under every training command.

`peak_rss_mb` is the RSS summed over the command's process and its children,
sampled every 50 ms (shared pages counted once per process, as the issue counts
them). `limit` says how the budget was enforced: "measured" (this script compares
the peak with the budget; a sandbox here offers no cgroup to create) or "cgroup"
when --cgroup names a writable cgroup v2 folder whose memory.max is set to the
budget. `lines` is what the command works through (pretrain: every sample; fit:
its training lines; predict: the phenotyped lines, as fit predicts them, here every
sample of the store; embed, impute: every sample), and `lines_per_s` is lines over
the whole command's wall time, start-up included; `train_lines_per_s` (pretrain,
fit) is lines over the training epoch alone, from its progress bar appearing to
its end (the issue's finetuning throughput; progress bars are forced on and kept
in each command's log).

The issue's sizes: `--samples 40000 --variants 100000 --phenotyped 2000 --budget 2GB`
and `--samples 10000 --variants 1000000 --budget 3GB`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.loader import build_store, children, rss_mb  # noqa: E402
from gperceiver.memory import parse_size  # noqa: E402


def peak_of(proc: subprocess.Popen, cgroup: Path | None) -> float:
    """The peak summed RSS (MB) of `proc` and its children until it ends."""
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, rss_mb([proc.pid, *children(proc.pid)]))
        time.sleep(0.05)
    if cgroup is not None:
        peak = max(peak, int((cgroup / "memory.peak").read_text()) / 2**20)
    return peak


def epoch_seconds(stderr, log) -> float | None:
    """Copy a command's stderr (progress bars forced on) into `log` until it ends, and
    return the seconds from the first epoch's bar appearing to it reaching 100%: the
    training alone, without start-up, validation or what the command does after."""
    start = end = None
    pending = b""
    # as written: a bar's updates end in "\r", not in a new line
    for chunk in iter(lambda: os.read(stderr.fileno(), 1 << 16), b""):
        log.write(chunk)
        *parts, pending = re.split(rb"[\r\n]", pending + chunk)
        for part in parts:
            if part.startswith(b"Epoch 0:"):
                start = start or time.perf_counter()
                if part.startswith(b"Epoch 0: 100%"):
                    end = end or time.perf_counter()
    return None if start is None or end is None else end - start


def run(command: list[str], cgroup: Path | None, log: Path
        ) -> tuple[int, float, float, float | None]:
    """(exit status, wall seconds, peak RSS MB, seconds of the first training epoch or
    None) of `gperceiver COMMAND...`."""
    start = time.perf_counter()
    env = dict(os.environ, GPERCEIVER_PROGRESS="1")
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "gperceiver", *command],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(proc.pid))
        peak = [0.0]
        watcher = threading.Thread(target=lambda: peak.__setitem__(0, peak_of(proc, cgroup)))
        watcher.start()
        epoch = epoch_seconds(proc.stderr, err)
        proc.wait()
        watcher.join()
    return proc.returncode, time.perf_counter() - start, peak[0], epoch


def phenotypes(path: Path, n_samples: int, n_phenotyped: int, seed: int = 0) -> None:
    """A trait for the first `n_phenotyped` lines (noise only: speed and memory are
    measured here, accuracy in accuracy.py), five folds."""
    rng = np.random.default_rng(seed)
    rows = ["name\tresponse\tblock\tcv"]
    for i in range(min(n_phenotyped, n_samples)):
        rows.append(f"s{i}\t{rng.normal():.4f}\t0\t{i % 5}")
    path.write_text("\n".join(rows) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=40_000)
    p.add_argument("--variants", type=int, default=100_000)
    p.add_argument("--phenotyped", type=int, default=2000)
    p.add_argument("--budget", default="2GB", help="memory budget, e.g. 2GB")
    p.add_argument("--missing", type=float, default=0.01,
                   help="share of calls missing (impute fills them)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/gperceiver_scale"))
    p.add_argument("--commands", default="pretrain,fit,predict,embed,impute")
    p.add_argument("--params", type=Path, default=None,
                   help="a params file for pretrain and fit (e.g. input windows at 1M "
                        "markers); default: the default params")
    p.add_argument("--cgroup", type=Path, default=None,
                   help="a writable cgroup v2 folder to run the commands in")
    args = p.parse_args()
    budget = parse_size(args.budget)
    folder = args.cache / f"{args.samples}x{args.variants}_missing{args.missing:g}"
    folder.mkdir(parents=True, exist_ok=True)
    store, phenos = folder / "panel.zarr", folder / "phenos.tsv"
    if not store.exists():
        build_store(store, args.samples, args.variants, missing=args.missing)
    phenotypes(phenos, args.samples, args.phenotyped)
    if args.cgroup is not None:
        (args.cgroup / "memory.max").write_text(str(budget))
    runs = folder / "runs"
    held = ["--force", "--memory", str(budget)]  # every command under the budget
    epoch = ["--epochs", "1", *held]
    if args.params is not None:
        epoch += ["--params", args.params]
    n_fit = int(0.9 * min(args.phenotyped, args.samples))  # the inner validation split
    commands = {
        "pretrain": (["pretrain", store, "-o", runs / "pre", *epoch], args.samples),
        "fit": (["fit", store, phenos, "-o", runs / "fit", *epoch], n_fit),
        "predict": (["predict", runs / "fit", store, "-o", runs / "predictions.tsv", *held],
                    args.samples),
        "embed": (["embed", runs / "pre", store, "-o", runs / "emb.zarr", *held],
                  args.samples),
        "impute": (["impute", runs / "pre" / "best.ckpt", store, "-o", runs / "imputed.zarr",
                    *held], args.samples),
    }
    # what a command holds before it reads anything: Python, torch, Lightning, xarray
    status, wall, peak, _ = run(["info", str(store)], args.cgroup, folder / "info.log")
    start = subprocess.run([sys.executable, "-c", "import resource, torch, lightning, "
                            "gperceiver.fit; print(resource.getrusage(resource.RUSAGE_SELF)"
                            ".ru_maxrss)"], capture_output=True, text=True, check=True)
    print(json.dumps({"command": "imports", "peak_rss_mb": round(int(start.stdout) / 1024, 1),
                      "info_peak_rss_mb": round(peak, 1), "info_wall_s": round(wall, 1)}),
          flush=True)
    for name in args.commands.split(","):
        command, lines = commands[name]
        status, wall, peak, epoch = run([str(c) for c in command], args.cgroup,
                                        folder / f"{name}.log")
        print(json.dumps({
            "command": name, "samples": args.samples, "variants": args.variants,
            "lines": lines, "exit": status, "wall_s": round(wall, 1),
            "lines_per_s": round(lines / wall, 1),
            "train_lines_per_s": None if epoch is None else round(lines / epoch, 1),
            "peak_rss_mb": round(peak, 1),
            "budget_mb": round(budget / 2**20, 1), "budget_held": bool(0 < peak * 2**20 <= budget),
            "limit": "measured" if args.cgroup is None else "cgroup",
            "cpus": os.cpu_count(),
        }), flush=True)


if __name__ == "__main__":
    main()
