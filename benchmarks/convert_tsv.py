"""Benchmark `gperceiver convert tsv` against loading the same table into pandas.

Synthesises a diploid panel in the original integer-coded TSV format, then times,
each in its own process (so peak RSS is per step):
- `gperceiver convert tsv` (parse, validate, decode, compress, write, frequencies);
- `pandas.read_csv(path, sep="\\t")`, the whole-file load a user would otherwise do;
- reading the file's bytes once (the floor).
It also converts a panel with a quarter of the samples, to show that peak memory
does not grow with the number of samples. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from measure import timed


def write_panel(folder: Path, samples: int, markers: int, missing: float, seed: int) -> Path:
    """Write markers.tsv / chroms.tsv of random codes 3..5 with `missing` share of 0s."""
    rng = np.random.default_rng(seed)
    names = [f"rs{j}" for j in range(markers)]
    with open(folder / "chroms.tsv", "w") as f:
        f.write("chr\tmarker\tpos\n")
        per = -(-markers // 10)
        f.writelines(f"chr{j // per + 1}\t{n}\t{(j % per) * 100}\n" for j, n in enumerate(names))
    freq = rng.uniform(0.05, 0.5, markers)
    path = folder / "markers.tsv"
    with open(path, "wb") as f:
        f.write(("name\t" + "\t".join(names) + "\n").encode())
        for start in range(0, samples, 256):
            n = min(256, samples - start)
            dosage = (rng.random((n, markers, 2)) < freq[:, None]).sum(axis=2)
            codes = (dosage + 3).astype(np.uint8)
            codes[rng.random((n, markers)) < missing] = 0
            row = np.full((n, 2 * markers), ord("\t"), dtype=np.uint8)
            row[:, 0::2] = codes + ord("0")
            row[:, -1] = ord("\n")
            for i in range(n):
                f.write(f"s{start + i}\t".encode())
                f.write(row[i].tobytes())
    return path


def convert_cmd(folder: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "gperceiver", "convert", "tsv", "-q", "--force",
            "--markers", str(folder / "markers.tsv"), "--chroms", str(folder / "chroms.tsv"),
            "-o", str(out)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--markers", type=int, default=100_000)
    ap.add_argument("--missing", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="folder for the files (default: a temp one)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        big, small = tmp / "big", tmp / "small"
        big.mkdir()
        small.mkdir()
        path = write_panel(big, args.samples, args.markers, args.missing, args.seed)
        write_panel(small, max(1, args.samples // 4), args.markers, args.missing, args.seed)

        t0 = time.perf_counter()
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
        read_bytes_s = time.perf_counter() - t0

        convert_s, rss = timed(convert_cmd(big, tmp / "big.zarr"))
        _, rss_small = timed(convert_cmd(small, tmp / "small.zarr"))
        pandas_s, pandas_rss = timed(
            [sys.executable, "-c",
             f"import pandas; pandas.read_csv({str(path)!r}, sep='\\t')"]
        )
        tsv_mb = os.path.getsize(path) / 1e6
        print(json.dumps({
            "samples": args.samples,
            "variants": args.markers,
            "tsv_mb": round(tsv_mb, 1),
            "convert_s": round(convert_s, 2),
            "pandas_load_s": round(pandas_s, 2),
            "read_bytes_s": round(read_bytes_s, 2),
            "ratio": round(convert_s / pandas_s, 3),
            "convert_mb_per_s": round(tsv_mb / convert_s, 1),
            "peak_rss_mb": round(rss, 1),
            "peak_rss_mb_quarter_samples": round(rss_small, 1),
            "rss_growth_4x_samples": round(rss / rss_small - 1, 3),
            "pandas_peak_rss_mb": round(pandas_rss, 1),
        }))


if __name__ == "__main__":
    main()
