"""Imputation accuracy on the mice: gperceiver vs per-locus most frequent vs Beagle 5.4.

Held-out mice (`--holdout`) get `--hide` of their genotype calls set missing. A
GPerceiver is pretrained (masked task) on the other mice within `--minutes`, then
fills the hidden calls; per-locus most-frequent imputation uses the other mice's
genotypes; Beagle (Debian package `beagle`) phases and imputes a VCF of all mice
with the same calls hidden, running alongside the pretraining (one core each).
Prints one JSON line: genotype concordance on the hidden calls for each method.

    python benchmarks/impute.py --contigs chr1,chr2 --minutes 20

(chr1-2: 1,677 markers; Beagle takes about 7 single-thread minutes there.) On
all 10,346 markers, pretraining on windows of loci keeps a step as cheap as on
chr1-2 (`input_window`, see the params file `benchmarks/impute_window.json`):

    python benchmarks/impute.py --params benchmarks/impute_window.json --minutes 75

`--accelerator gpu` pretrains on a GPU (imputation itself runs on the CPU);
`--beagle-output` reuses Beagle's output of an earlier run (`--keep`), which is
how a GPU machine without Beagle compares against it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MICE = ROOT.parent / "shared" / "data" / "mice"


def write_store(path: Path, calls: np.ndarray, sample_id: np.ndarray, ds) -> None:
    from gperceiver.store.write import create_store, finish_store

    out = create_store(
        path, sample_id=sample_id, variant_id=ds["variant_id"].values,
        contig_id=ds["contig_id"].values, variant_contig=ds["variant_contig"].values,
        variant_position=ds["variant_position"].values, ploidy=2, n_alleles=2,
        samples_chunk=256,
    )
    out[:] = calls
    finish_store(path)


def write_vcf(path: Path, calls: np.ndarray, sample_id, ds) -> None:
    """Unphased diploid VCF; positions (Mb) become strictly increasing bp per contig."""
    contigs = [str(c) for c in ds["contig_id"].values.tolist()]
    contig = ds["variant_contig"].values
    bp = np.round(ds["variant_position"].values.astype(float) * 1e6).astype(np.int64) + 1
    for c in np.unique(contig):
        idx = np.flatnonzero(contig == c)
        bp[idx] = np.maximum.accumulate(np.maximum(bp[idx], 1) + np.arange(len(idx))) - 0
    text = np.array(["./.", "0/0", "0/1", "1/1"])
    code = np.where((calls < 0).any(-1), 0, calls.sum(-1) + 1)  # (V, S)
    with open(path, "w") as f:
        f.write("##fileformat=VCFv4.2\n")
        for name in contigs:
            f.write(f"##contig=<ID={name}>\n")
        f.write('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
        f.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t"
                + "\t".join(map(str, sample_id)) + "\n")
        ids = ds["variant_id"].values.tolist()
        for v in range(calls.shape[0]):
            f.write(f"{contigs[contig[v]]}\t{bp[v]}\t{ids[v]}\tA\tC\t.\tPASS\t.\tGT\t"
                    + "\t".join(text[code[v]]) + "\n")


def most_frequent(dosage: np.ndarray) -> np.ndarray:
    """Each variant's most frequent diploid dosage (0, 1, 2) over its samples (V, S);
    other values (missing) are not counted."""
    return np.stack([(dosage == d).sum(1) for d in range(3)], 1).argmax(1)


def read_beagle(path: Path, n_variants: int, n_samples: int) -> np.ndarray:
    """Alt-allele dosage (V, S) of Beagle's phased output."""
    out = np.empty((n_variants, n_samples), dtype=np.int8)
    v = 0
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.startswith("#"):
                continue
            fields = line.rstrip("\n").split("\t")
            gts = fields[9:]
            out[v] = [int(g[0]) + int(g[2]) for g in gts]
            v += 1
    if v != n_variants:
        raise RuntimeError(f"Beagle wrote {v} variants, expected {n_variants}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mice", type=Path, default=MICE)
    ap.add_argument("--holdout", type=float, default=0.1, help="fraction of mice held out")
    ap.add_argument("--hide", type=float, default=0.05, help="fraction of their calls hidden")
    ap.add_argument("--minutes", type=float, default=20.0, help="pretraining time budget")
    ap.add_argument("--params", default=None, help="params JSON [defaults, see below]")
    ap.add_argument("--contigs", default=None,
                    help="comma-separated contigs to keep (all methods see the same loci); "
                    "Beagle on all 10,346 loci takes far over 10 minutes on 2 shared cores")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-beagle", action="store_true")
    ap.add_argument("--beagle-output", type=Path, default=None,
                    help="reuse Beagle's beagle.vcf.gz from an earlier run with the same "
                    "--seed/--holdout/--hide (kept with --keep) instead of running it")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--accelerator", default="cpu",
                    help="where to pretrain: cpu (the figures in the issue), gpu, auto")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads [1 while Beagle runs alongside, else all cores]")
    args = ap.parse_args()

    import torch

    from gperceiver.converters.tsv import convert_tsv
    from gperceiver.impute import impute
    from gperceiver.store import open_store
    from gperceiver.train.params import load_params
    from gperceiver.train.pretrain import pretrain

    tmp = Path(tempfile.mkdtemp(prefix="bench-impute-"))
    result: dict = {"benchmark": "impute", "data": "mice"}
    t0 = time.perf_counter()
    convert_tsv(args.mice / "markers.tsv.gz", args.mice / "chroms.tsv", tmp / "mice.zarr",
                progress=False)
    ds = open_store(tmp / "mice.zarr")
    if args.contigs:
        names = np.array([str(c) for c in ds["contig_id"].values.tolist()])
        keep = np.isin(names[ds["variant_contig"].values], args.contigs.split(","))
        ds = ds.isel(variants=np.flatnonzero(keep))
        result["contigs"] = args.contigs
    truth = ds["call_genotype"].values  # (V, S, 2), 37 MB
    sample_id = ds["sample_id"].values
    n_variants, n_samples = truth.shape[:2]
    rng = np.random.default_rng(args.seed)
    held = np.zeros(n_samples, dtype=bool)
    held[rng.choice(n_samples, round(args.holdout * n_samples), replace=False)] = True
    hidden = (rng.random((n_variants, n_samples)) < args.hide) & held[None, :]
    masked = truth.copy()
    masked[hidden] = -1
    write_store(tmp / "train.zarr", truth[:, ~held], sample_id[~held], ds)
    write_store(tmp / "target.zarr", masked[:, held], sample_id[held], ds)
    result.update(variants=int(n_variants), train_mice=int((~held).sum()),
                  heldout_mice=int(held.sum()), hidden_calls=int(hidden.sum()),
                  prepare_s=round(time.perf_counter() - t0, 1))
    true_dosage = truth.sum(-1)

    beagle = None
    if args.beagle_output is not None:
        result["beagle_reused"] = str(args.beagle_output)
    elif not args.skip_beagle and shutil.which("beagle"):
        write_vcf(tmp / "all.vcf", masked, sample_id, ds)
        beagle_start = time.perf_counter()
        beagle = subprocess.Popen(
            ["beagle", f"gt={tmp / 'all.vcf'}", f"out={tmp / 'beagle'}", "nthreads=1",
             f"seed={args.seed}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    # one core for training and one for Beagle when it runs alongside, else all of them
    torch.set_num_threads(args.threads or (1 if beagle is not None else os.cpu_count() or 1))
    result["torch_threads"] = torch.get_num_threads()
    result["accelerator"] = args.accelerator
    if args.accelerator != "cpu" and torch.cuda.is_available():
        result["device"] = torch.cuda.get_device_name(0)

    # Per-locus most frequent genotype among the training mice.
    train_dosage = true_dosage[:, ~held]
    mode = most_frequent(train_dosage)
    result["most_frequent_concordance"] = round(float(
        (mode[:, None] == true_dosage[:, held])[hidden[:, held]].mean()), 4)

    params = load_params(args.params) if args.params else load_params(
        None, frequency_scaler=0.0, prop_y=0.25, val_fraction=0.05, epochs=1000, lr_patience=2,
        patience=1000, lr=2e-3, warmup_steps=50)
    minutes = int(args.minutes)
    seconds = int(round((args.minutes - minutes) * 60))
    t1 = time.perf_counter()
    run = pretrain(tmp / "train.zarr", tmp / "run", "masked", params, progress=False,
                   max_time=f"00:00:{minutes:02d}:{seconds:02d}", accelerator=args.accelerator,
                   devices=1)
    result.update(pretrain_s=round(time.perf_counter() - t1, 1), pretrain_epochs=run.epochs,
                  best_val_loss=run.best_score)
    t2 = time.perf_counter()
    out = impute(run.best, tmp / "target.zarr", tmp / "imputed.zarr", progress=False)
    filled = out["call_genotype"].values.sum(-1)
    result.update(impute_s=round(time.perf_counter() - t2, 1), gperceiver_concordance=round(
        float((filled == true_dosage[:, held])[hidden[:, held]].mean()), 4))

    beagle_vcf = args.beagle_output
    if beagle is not None:
        _, err = beagle.communicate()
        if beagle.returncode != 0:
            result["beagle_error"] = err.strip().splitlines()[-1] if err.strip() else "failed"
        else:
            result["beagle_s"] = round(time.perf_counter() - beagle_start, 1)
            beagle_vcf = tmp / "beagle.vcf.gz"
    if beagle_vcf is not None:
        dosage = read_beagle(beagle_vcf, n_variants, n_samples)
        result["beagle_concordance"] = round(float((dosage == true_dosage)[hidden].mean()), 4)
        result["gap_to_beagle"] = round(
            result["beagle_concordance"] - result["gperceiver_concordance"], 4)
    result["gain_over_most_frequent"] = round(
        result["gperceiver_concordance"] - result["most_frequent_concordance"], 4)
    result["load_average"] = os.getloadavg()[0]
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        result["folder"] = str(tmp)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
