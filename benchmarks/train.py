"""Pretraining throughput and peak memory at the default params; one JSON line.

Builds a random diploid biallelic store of the asked shape (in a child process,
so its memory does not count), then pretrains through the real path (loader,
Lightning, GPerceiver) for `--epochs` epochs without validation, timing the last
epoch. The original TensorFlow implementation, at its defaults on a 2-core
machine like this one, pretrained 4.0-4.2 genotypes/s at 1,279 loci with 5.2 GB
peak RSS and 1.3-1.8 genotypes/s at 10,346 loci with 11.1 GB; the ratios below
compare against the best of those figures (4.2 and 1.8 genotypes/s).

    python benchmarks/train.py --samples 400 --variants 1279
    python benchmarks/train.py --samples 400 --variants 10346 --device cuda
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TF_BASELINE = {1279: (4.2, 5.2e9), 10346: (1.8, 11.1e9)}  # genotypes/s, peak RSS bytes
TF_FIT_BASELINE = {1279: (4.4, None)}  # the original's finetuning: 4.2-4.4 genotypes/s


def make_store(path: str, samples: int, variants: int, seed: int) -> None:
    import numpy as np

    from gperceiver.store.write import create_store, finish_store

    rng = np.random.default_rng(seed)
    calls = create_store(
        path, sample_id=np.array([f"s{i}" for i in range(samples)]),
        variant_id=np.array([f"v{i}" for i in range(variants)]),
        contig_id=np.array(["chr1", "chr2"]),
        variant_contig=np.repeat([0, 1], [variants // 2, variants - variants // 2]),
        variant_position=np.r_[np.arange(variants // 2), np.arange(variants - variants // 2)],
        ploidy=2, n_alleles=2, samples_chunk=256,
    )
    freq = rng.uniform(0.05, 0.95, size=variants)
    calls[:] = (rng.random((variants, samples, 2)) < freq[:, None, None]).astype("int8")
    finish_store(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--variants", type=int, default=1279)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2, help="epochs run; the last is timed")
    ap.add_argument("--task", choices=["masked", "contrastive", "fit"], default="masked",
                    help="pretraining task, or fit (finetuning on 2 random phenotype blocks)")
    ap.add_argument("--params", default=None, help="params JSON (default: the defaults)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads [torch's]")
    args = ap.parse_args()

    import lightning as L
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from gperceiver.train.architecture import resolve_params
    from gperceiver.train.checkpoint import ModelInfo, build_model
    from gperceiver.train.params import load_params
    from gperceiver.train.pretrain import pretrain

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    store = str(tmp / "bench.zarr")
    child = multiprocessing.get_context("spawn").Process(
        target=make_store, args=(store, args.samples, args.variants, 0))
    child.start()
    child.join()

    class EpochTimer(L.Callback):
        def __init__(self):
            self.times: list[float] = []
            self.samples = 0

        def on_train_epoch_start(self, trainer, module):
            self.start, self.samples = time.perf_counter(), 0
            self.cpu_start = time.process_time()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.samples += len(batch["sample_index"])

        def on_train_epoch_end(self, trainer, module):
            self.times.append(time.perf_counter() - self.start)
            self.cpu = time.process_time() - self.cpu_start

    params = load_params(args.params, batch_size=args.batch_size, epochs=args.epochs,
                         val_fraction=0.0)
    timer = EpochTimer()
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    if args.task == "fit":
        from gperceiver.fit import fit
        from gperceiver.store import open_store

        names = [str(s) for s in open_store(store)["sample_id"].values.tolist()]
        rng = np.random.default_rng(0)
        phenos = tmp / "phenos.tsv"
        phenos.write_text("name\tresponse\tblock\n" + "".join(
            f"{n}\t{rng.normal():.4f}\t{b}\n" for b in range(2) for n in names))
        fit(store, phenos, tmp / "run", params, progress=False, accelerator=accelerator,
            devices=1, callbacks=[timer])
    else:
        pretrain(store, tmp / "run", args.task, params, progress=False,
                 accelerator=accelerator, devices=1, callbacks=[timer])
    from gperceiver.store import open_store

    resolved = resolve_params(params, open_store(store), store)
    n_params = sum(p.numel() for p in build_model(
        ModelInfo.from_store(open_store(store), resolved, args.task)).parameters())
    rate = timer.samples / timer.times[-1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {
        "benchmark": "train", "task": args.task, "device": args.device,
        "samples": args.samples, "variants": args.variants, "batch_size": args.batch_size,
        "parameters": n_params, "samples_per_s": round(rate, 2),
        "epoch_s": round(timer.times[-1], 2), "epoch_cpu_s": round(timer.cpu, 2),
        "samples_per_cpu_s": round(timer.samples / timer.cpu, 2),
        "peak_rss_gb": round(peak / 1e9, 3),
        "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()[0],
    }
    baseline = TF_FIT_BASELINE if args.task == "fit" else TF_BASELINE
    if args.variants in baseline and args.device == "cpu":
        tf_rate, tf_rss = baseline[args.variants]
        result.update(speedup_vs_tf=round(rate / tf_rate, 1))
        if tf_rss is not None:
            result.update(memory_fraction_of_tf=round(peak / tf_rss, 3))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
