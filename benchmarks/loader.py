"""Streaming-loader throughput and memory against zarr alone (the decompression floor).

Builds (or reuses, --store) a store of random diploid genotypes, then for the
full sample set and for a 4x smaller subset: reads the loader's read groups
with zarr alone (raw), runs one epoch of the plain and one of the masked task
with --workers DataLoader workers, and prints one JSON line per sample count:
{"samples","variants","store_uncompressed_mb","raw_samples_per_s",
"plain_samples_per_s","masked_samples_per_s","plain_ratio","masked_ratio",
"peak_rss_mb", ...}; peak_rss_mb is summed over the worker processes, as the
issue defines it (shared pages counted once per process: each forked worker
counts the ~200 MB of torch it shares with this process again);
peak_rss_all_mb adds this process (the training side: torch, numba, the
batches received), and peak_pss_mb is that total with shared pages split.
After one untimed read of the whole store (page cache warm for every round),
each of the three is measured --repeats times, interleaved (raw, plain, masked,
raw, ...), and the rates are the medians: on a 2-core machine one epoch's rate
moves by a third from run to run, and interleaving spreads slow spells over all
three. The ratios are of the medians; `*_ratio_runs` give each round's ratio.
Extra fields: CPU ms per sample of each path over all its processes (robust to
other load on the machine, unlike the rates; medians too) and the 1-minute load
average.
Targets: plain_ratio >= 0.7, masked_ratio >= 0.35, peak_rss_mb <= 1000 and not
growing with the number of samples.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gperceiver.data import sharding  # noqa: E402
from gperceiver.data.loader import GenotypeDataset, make_loader  # noqa: E402
from gperceiver.store.write import create_store, finish_store  # noqa: E402

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def build_store(path: Path, n_samples: int, n_variants: int, seed: int = 0,
                missing: float = 0.0) -> None:
    """Random HWE diploid genotypes, allele frequencies uniform in 0.02..0.5; a `missing`
    share of calls missing (both copies)."""
    rng = np.random.default_rng(seed)
    calls = create_store(
        path,
        sample_id=np.array([f"s{i}" for i in range(n_samples)]),
        variant_id=np.array([f"v{i}" for i in range(n_variants)]),
        contig_id=np.array(["1"]),
        variant_contig=np.zeros(n_variants, dtype=np.int32),
        variant_position=np.arange(n_variants, dtype=np.int64),
        ploidy=2,
        n_alleles=2,
    )
    freq = rng.uniform(0.02, 0.5, n_variants).astype(np.float32)
    v_step, s_step = calls.chunks[0], calls.chunks[1] * 4
    for v0 in range(0, n_variants, v_step):
        p = freq[v0 : v0 + v_step, None, None]
        for s0 in range(0, n_samples, s_step):
            s1 = min(n_samples, s0 + s_step)
            u = rng.random((len(p), s1 - s0, 2), dtype=np.float32)
            tile = (u < p).astype(np.int8)
            if missing:
                tile[rng.random(tile.shape[:2]) < missing] = -1
            calls[v0 : v0 + v_step, s0:s1] = tile
    finish_store(path)


def rss_mb(pids: list[int]) -> float:
    """Summed RSS in MB (cheap: /proc/PID/statm)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_MB
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def pss_mb(pids: list[int]) -> float:
    """Summed PSS in MB: shared pages (torch, batches in flight) split fairly."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1024


def children(pid: int) -> list[int]:
    try:
        import psutil

        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:  # it ended meanwhile: nothing left to count
            return []
    except ImportError:
        out = []
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                kids = task.read_text().split()
            except FileNotFoundError:  # the thread ended meanwhile
                continue
            for kid in map(int, kids):
                out += [kid, *children(kid)]
        return out


class PeakRSS:
    """Samples the summed RSS (every 50 ms) and PSS (every 0.5 s) of this process
    and its children, and the RSS of the children (the workers) alone."""

    def __enter__(self):
        self.peak = self.peak_pss = self.peak_workers = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        me, tick = os.getpid(), 0
        while not self._stop.is_set():
            workers = children(me)
            pids = [me, *workers]
            self.peak = max(self.peak, rss_mb(pids))
            self.peak_workers = max(self.peak_workers, rss_mb(workers))
            if tick % 10 == 0:  # PSS walks the page tables: sample it less often
                self.peak_pss = max(self.peak_pss, pss_mb(pids))
            tick += 1
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def cpu_seconds() -> float:
    """CPU time of this process and of its finished (joined) children."""
    me, kids = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                    resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def raw_epoch(store: Path, samples: np.ndarray) -> tuple[float, float]:
    """(samples/s, CPU ms/sample) reading the loader's read groups with zarr alone."""
    dataset = GenotypeDataset(store, "plain", samples=samples, shuffle=False)
    calls = zarr.open_group(store, mode="r")["call_genotype"]
    chunk = dataset.samples_chunk
    start, cpu = time.perf_counter(), cpu_seconds()
    positions = sharding.shard_samples(dataset.selected, dataset.group_samples, rank=0,
                                       world_size=1, worker=0, num_workers=1)
    for group in sharding.read_groups(dataset.selected, positions, dataset.group_samples):
        index = dataset.selected[group]
        lo, hi = index.min() // chunk * chunk, (index.max() // chunk + 1) * chunk
        calls[:, lo:hi, :]
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return len(samples) / elapsed, 1000 * cpu / len(samples)


def loader_epoch(store: Path, task: str, samples: np.ndarray, args):
    """(samples/s, CPU ms/sample over all processes, peak memory) for one epoch."""
    loader = make_loader(
        store, task, batch_size=args.batch_size, num_workers=args.workers, samples=samples,
        prop_y=args.prop_y, shuffle_buffer=args.shuffle_buffer, prefetch_factor=args.prefetch,
    )
    seen = 0
    with PeakRSS() as rss:
        start, cpu = time.perf_counter(), cpu_seconds()
        for batch in loader:
            seen += len(batch["sample_index"])
        elapsed = time.perf_counter() - start
        del batch
        cpu = cpu_seconds() - cpu  # the workers have been joined: their CPU is counted
    assert seen == len(samples), (seen, len(samples))
    return seen / elapsed, 1000 * cpu / seen, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--variants", type=int, default=50_000)
    parser.add_argument("--store", type=Path, help="reuse this store instead of building one")
    parser.add_argument("--keep", type=Path, help="build the store here and keep it")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--prop-y", type=float, default=0.1)
    parser.add_argument("--shuffle-buffer", type=int, default=1024)
    parser.add_argument("--prefetch", type=int, default=None,
                        help="batches ready ahead per worker [make_loader's default]")
    parser.add_argument("--repeats", type=int, default=3,
                        help="epochs of each path, interleaved; the rates are their medians")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        store = args.store or args.keep or Path(tmp) / "bench.zarr"
        if args.store is None:
            build_store(store, args.samples, args.variants)
        calls = zarr.open_group(store, mode="r")["call_genotype"]
        n_variants, n_samples, ploidy = calls.shape
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=spawn) as one:
            # untimed: the store's files into the page cache, so that the first round's
            # raw read is not the only one to wait for the disk
            one.submit(raw_epoch, store, np.arange(n_samples)).result()
        for n in (n_samples, n_samples // 4):
            samples = np.arange(n)
            runs: dict[str, list] = {"raw": [], "plain": [], "masked": []}
            for _ in range(args.repeats):
                with ProcessPoolExecutor(1, mp_context=spawn) as one:
                    # in a child: what zarr leaves in the heap must not count for the loader
                    runs["raw"].append(one.submit(raw_epoch, store, samples).result())
                for task in ("plain", "masked"):
                    runs[task].append(loader_epoch(store, task, samples, args))
            rate = {k: float(np.median([r[0] for r in v])) for k, v in runs.items()}
            cpu = {k: float(np.median([r[1] for r in v])) for k, v in runs.items()}
            peak = {field: max(getattr(r[2], field) for task in ("plain", "masked")
                               for r in runs[task])
                    for field in ("peak_workers", "peak", "peak_pss")}
            print(json.dumps({
                "samples": n,
                "variants": n_variants,
                "store_uncompressed_mb": round(n_variants * n_samples * ploidy / 2**20, 1),
                "raw_samples_per_s": round(rate["raw"], 1),
                "plain_samples_per_s": round(rate["plain"], 1),
                "masked_samples_per_s": round(rate["masked"], 1),
                "plain_ratio": round(rate["plain"] / rate["raw"], 3),
                "masked_ratio": round(rate["masked"] / rate["raw"], 3),
                "peak_rss_mb": round(peak["peak_workers"], 1),
                "peak_rss_all_mb": round(peak["peak"], 1),
                "peak_pss_mb": round(peak["peak_pss"], 1),
                "raw_cpu_ms_per_sample": round(cpu["raw"], 3),
                "plain_cpu_ms_per_sample": round(cpu["plain"], 3),
                "masked_cpu_ms_per_sample": round(cpu["masked"], 3),
                "repeats": args.repeats,
                "plain_ratio_runs": [round(p[0] / r[0], 3)
                                     for p, r in zip(runs["plain"], runs["raw"], strict=True)],
                "masked_ratio_runs": [round(m[0] / r[0], 3)
                                      for m, r in zip(runs["masked"], runs["raw"], strict=True)],
                "load_average": round(os.getloadavg()[0], 1),
            }), flush=True)

if __name__ == "__main__":
    main()
