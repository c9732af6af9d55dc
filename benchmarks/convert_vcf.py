"""Benchmark `gperceiver convert vcf` against `vcf2zarr convert` alone on the same VCF.

Simulates a panel with msprime (default 2,000 diploid samples, ~100,000 sites on
one chromosome), writes it as a bgzipped VCF with a CSI index, then times, each
in its own process (so peak RSS is per command; with worker processes it is the
largest single process):
- `gperceiver convert vcf` (bio2zarr explode + encode, then frequencies, unique
  IDs, attributes, consolidation and validation);
- `vcf2zarr convert` with the same chunks and worker processes (the baseline).
The ratio convert_s / vcf2zarr_s is the cost of finishing the VCZ into our
store; the target is <= 1.3. Prints one JSON line.
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


class BgzfText:
    """A text sink for `tskit.TreeSequence.write_vcf` that writes BGZF directly."""

    def __init__(self, path: Path):
        import pysam

        self.out = pysam.BGZFile(str(path), "wb")

    def write(self, text: str) -> int:
        self.out.write(text.encode())
        return len(text)

    def close(self) -> None:
        self.out.close()


def simulate_vcf(path: Path, samples: int, sites: int, seed: int) -> int:
    """Write a bgzipped, CSI-indexed VCF of about `sites` sites; return its site count."""
    import msprime
    import pysam

    ne, mu = 10_000, 1e-8
    haplotypes = 2 * samples
    harmonic = sum(1 / k for k in range(1, haplotypes))
    length = round(sites / (4 * ne * mu * harmonic))  # Watterson: E[S] = theta * H(n-1)
    ts = msprime.sim_ancestry(
        samples=samples, sequence_length=length, recombination_rate=1e-8,
        population_size=ne, random_seed=seed,
    )
    ts = msprime.sim_mutations(ts, rate=mu, random_seed=seed)
    sink = BgzfText(path)
    ts.write_vcf(sink, contig_id="1", position_transform=lambda x: np.asarray(x) + 1)
    sink.close()
    pysam.tabix_index(str(path), preset="vcf", csi=True, force=True)
    return ts.num_sites


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=2000, help="diploid samples")
    ap.add_argument("--sites", type=int, default=100_000, help="target number of sites")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--samples-chunk", type=int, default=256)
    ap.add_argument("--variants-chunk", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--repeats", type=int, default=2,
        help="runs of each command, interleaved; the fastest counts (the machine may be shared)",
    )
    ap.add_argument("--workdir", default=None, help="folder for the files (default: a temp one)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        vcf = folder / "sim.vcf.gz"
        t = time.perf_counter()
        n_sites = simulate_vcf(vcf, args.samples, args.sites, args.seed)
        simulate_s = time.perf_counter() - t
        vcf_mb = os.path.getsize(vcf) / 2**20
        chunks = ["--samples-chunk", str(args.samples_chunk),
                  "--variants-chunk", str(args.variants_chunk)]
        baseline = [
            str(Path(sys.executable).with_name("vcf2zarr")), "convert", "--no-progress", "-f",
            "-p", str(0 if args.workers == 1 else args.workers),
            "-l", str(args.variants_chunk), "-w", str(args.samples_chunk),
            str(vcf), str(folder / "baseline.vcz"),
        ]
        ours = [
            sys.executable, "-m", "gperceiver", "convert", "vcf", "-q", "--force", str(vcf),
            "-o", str(folder / "store.zarr"), "--workers", str(args.workers), *chunks,
        ]
        runs: dict[str, list[tuple[float, float]]] = {"baseline": [], "ours": []}
        for k in range(args.repeats):
            order = ["baseline", "ours"] if k % 2 == 0 else ["ours", "baseline"]
            for name in order:
                runs[name].append(timed(baseline if name == "baseline" else ours))
        baseline_s = min(s for s, _ in runs["baseline"])
        convert_s = min(s for s, _ in runs["ours"])
        baseline_rss = max(r for _, r in runs["baseline"])
        convert_rss = max(r for _, r in runs["ours"])
    print(json.dumps({
        "samples": args.samples,
        "variants": n_sites,
        "convert_s": round(convert_s, 2),
        "vcf2zarr_s": round(baseline_s, 2),
        "ratio": round(convert_s / baseline_s, 3),
        "peak_rss_mb": round(convert_rss, 1),
        "vcf2zarr_peak_rss_mb": round(baseline_rss, 1),
        "vcf_mb": round(vcf_mb, 1),
        "workers": args.workers,
        "simulate_s": round(simulate_s, 1),
        "runs_s": {k: [round(s, 1) for s, _ in v] for k, v in runs.items()},
    }))


if __name__ == "__main__":
    main()
