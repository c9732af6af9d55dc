#!/usr/bin/env bash
# GPU check: pretraining throughput on one CUDA GPU, fp32 and bf16; one JSON line.
#
# Run from anywhere on a machine with an NVIDIA GPU (no network needed):
#   benchmarks/gpu_check.sh                    # 2,000 samples x 100,000 loci
#   benchmarks/gpu_check.sh --samples 500 --variants 20000
# Wheels: every *.whl in $GPU_CHECK_WHEELS (default: .whl/ at the repository root)
# is installed with `pip install --no-index --no-deps --target` into a scratch
# folder put first on PYTHONPATH; carry there what the machine's Python lacks
# (e.g. zarr, numcodecs, xarray, dask, lightning; torch with CUDA if it has none).
# gperceiver itself runs from this source tree. $PYTHON picks the interpreter.
#
# It builds a random diploid store (chunked writes, frequencies by the real
# writer), then pretrains the default model (masked task, batch 16, no
# validation) once in fp32 ("32-true") and once in bf16 ("bf16-mixed"): a few
# warm-up steps, then samples/s over up to --steps steps or --seconds seconds,
# peak GPU memory of each run, and the scaled-dot-product-attention kernels the
# profiler saw in one training step (flash, mem_efficient, cudnn or math).
# Exit 2, with one line on stderr, where no CUDA GPU (or no CUDA torch) is found.
# --allow-cpu runs the same path on the CPU (tiny sizes): a check of this script.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/.whl}
ALLOW_CPU=0
for arg in "$@"; do [[ $arg == --allow-cpu ]] && ALLOW_CPU=1; done

fail() { echo "gpu_check: $*" >&2; exit 2; }

if [[ $ALLOW_CPU == 0 ]]; then
  command -v nvidia-smi >/dev/null 2>&1 || fail "no CUDA GPU here (nvidia-smi not found)"
  nvidia-smi -L 2>/dev/null | grep -q '^GPU' || fail "no CUDA GPU here (nvidia-smi lists none)"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SITE=$WORK/site
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if ((${#wheels[@]})); then
  "$PY" -m pip install --quiet --no-index --no-deps --disable-pip-version-check \
    --target "$SITE" "${wheels[@]}" || fail "could not install the wheels in $WHEELS"
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

cat >"$WORK/check.py" <<'PYTHON'
"""The measuring half of gpu_check.sh (see there)."""

import argparse
import importlib
import json
import os
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--samples", type=int, default=2000)
ap.add_argument("--variants", type=int, default=100_000)
ap.add_argument("--batch-size", type=int, default=16)
ap.add_argument("--steps", type=int, default=40, help="timed steps per precision (at most)")
ap.add_argument("--seconds", type=float, default=60.0, help="timed seconds per precision (at most)")
ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
ap.add_argument("--workers", type=int, default=min(8, (os.cpu_count() or 2) - 1))
ap.add_argument("--allow-cpu", action="store_true")
args = ap.parse_args()

missing = []
for name in ("numpy", "torch", "zarr", "numcodecs", "xarray", "dask", "lightning"):
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
if missing:
    sys.exit(f"gpu_check: missing Python packages: {', '.join(missing)} "
             "(carry their wheels in .whl/)")

import numpy as np  # noqa: E402
import torch  # noqa: E402

cuda = torch.cuda.is_available()
if not cuda and not args.allow_cpu:
    print(f"gpu_check: torch {torch.__version__} sees no CUDA device "
          f"(built for CUDA {torch.version.cuda}); carry a CUDA torch wheel", file=sys.stderr)
    sys.exit(2)

import lightning as L  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from gperceiver.store.write import create_store, finish_store  # noqa: E402
from gperceiver.train.params import Params  # noqa: E402
from gperceiver.train.pretrain import pretrain  # noqa: E402

SDPA_KERNELS = {"flash": "flash_attention", "mem_efficient": "efficient_attention",
                "cudnn": "cudnn_attention", "math": "attention_math"}


def build_store(path: str, n_samples: int, n_variants: int) -> None:
    """Random diploid genotypes (allele frequencies 0.02..0.5), written chunk by chunk."""
    rng = np.random.default_rng(0)
    calls = create_store(
        path, sample_id=np.array([f"s{i}" for i in range(n_samples)]),
        variant_id=np.array([f"v{i}" for i in range(n_variants)]),
        contig_id=np.array(["1", "2"]),
        variant_contig=np.repeat([0, 1], [n_variants // 2, n_variants - n_variants // 2]),
        variant_position=np.r_[np.arange(n_variants // 2), np.arange(n_variants - n_variants // 2)],
        ploidy=2, n_alleles=2,
    )
    freq = rng.uniform(0.02, 0.5, n_variants).astype(np.float32)
    step = calls.chunks[0]
    for v0 in range(0, n_variants, step):
        p = freq[v0 : v0 + step, None, None]
        calls[v0 : v0 + step] = (rng.random((len(p), n_samples, 2), dtype=np.float32) < p
                                 ).astype(np.int8)
    finish_store(path)


class Probe(L.Callback):
    """Times steps after the warm-up, profiles one step's SDPA kernels, then stops."""

    def __init__(self, warmup: int, steps: int, seconds: float):
        self.warmup, self.steps, self.seconds = warmup, steps, seconds
        self.samples, self.timed, self.kernels, self.prof = 0, 0, set(), None

    def _sync(self):
        if cuda:
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup - 1:  # the last warm-up step: kernels, not timed
            self.prof = profile(activities=[ProfilerActivity.CPU])
            self.prof.__enter__()
        if batch_idx == self.warmup:
            self._sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.prof is not None:
            self.prof.__exit__(None, None, None)
            names = {e.key for e in self.prof.key_averages()}
            self.kernels = {k for k, op in SDPA_KERNELS.items() if any(op in n for n in names)}
            self.prof = None
        if batch_idx < self.warmup:
            return
        self.samples += len(batch["sample_index"])
        self.timed += 1
        self._sync()
        self.elapsed = time.perf_counter() - self.start
        if self.timed >= self.steps or self.elapsed >= self.seconds:
            trainer.should_stop = True


def run(store: str, out: str, precision: str) -> dict:
    params = Params(batch_size=args.batch_size, epochs=1, val_fraction=0.0,
                    num_workers=args.workers, precision=precision)
    probe = Probe(args.warmup, args.steps, args.seconds)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    pretrain(store, out, "masked", params, progress=False, force=True,
             accelerator="gpu" if cuda else "cpu", devices=1, callbacks=[probe])
    if probe.timed == 0:
        sys.exit(f"gpu_check: {precision}: fewer than {args.warmup + 1} batches to time "
                 "(more --samples or fewer --warmup)")
    return {"samples_per_s": round(probe.samples / probe.elapsed, 2), "timed_steps": probe.timed,
            "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3)
            if cuda else None,
            "sdpa_kernels": sorted(probe.kernels)}


work = os.environ["GPU_CHECK_WORK"]
store = os.path.join(work, "panel.zarr")
t0 = time.perf_counter()
build_store(store, args.samples, args.variants)
build_s = time.perf_counter() - t0
fp32 = run(store, os.path.join(work, "fp32"), "32-true")
bf16 = run(store, os.path.join(work, "bf16"), "bf16-mixed") if not cuda or \
    torch.cuda.is_bf16_supported() else None
back = torch.backends.cuda
print(json.dumps({
    "benchmark": "gpu_check",
    "device": torch.cuda.get_device_name(0) if cuda else "cpu",
    "torch": torch.__version__, "cuda": torch.version.cuda,
    "samples": args.samples, "variants": args.variants, "batch_size": args.batch_size,
    "store_build_s": round(build_s, 1),
    "fp32_samples_per_s": fp32["samples_per_s"],
    "bf16_samples_per_s": bf16 and bf16["samples_per_s"],
    "bf16_speedup": bf16 and round(bf16["samples_per_s"] / fp32["samples_per_s"], 2),
    "fp32_peak_gpu_mem_gb": fp32["peak_gpu_mem_gb"],
    "bf16_peak_gpu_mem_gb": bf16 and bf16["peak_gpu_mem_gb"],
    "fp32_attention": fp32["sdpa_kernels"], "bf16_attention": bf16 and bf16["sdpa_kernels"],
    "sdpa_enabled": {"flash": back.flash_sdp_enabled(),
                     "mem_efficient": back.mem_efficient_sdp_enabled(),
                     "cudnn": back.cudnn_sdp_enabled(), "math": back.math_sdp_enabled()},
    "flash_available": bool(cuda and back.is_flash_attention_available()),
    "timed_steps": [fp32["timed_steps"], bf16 and bf16["timed_steps"]],
}))
PYTHON

GPU_CHECK_WORK=$WORK timeout "${GPU_CHECK_TIMEOUT:-460}" "$PY" "$WORK/check.py" "$@"
