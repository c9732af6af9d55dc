"""What a pretrained encoder learned about the phenotypes: GBLUP on its latents.

Embeds every line of STORE with the encoder of CKPT and with the same
architecture at random initialisation (the control), then runs GBLUP per block
and test fold (the phenotype table's cv column; trained on the other folds) with
three relationship matrices: the markers' (VanRaden), the latents' (every latent
vector of a line, flattened and standardised) and the mean-pooled embedding's
(what `embed` calls sample_embedding and the `pool` head reads). Prints one JSON
line: mean r per block and over blocks for each matrix and encoder.

    python benchmarks/latent_probe.py run/best.ckpt mice.zarr ../shared/data/mice/phenos.tsv
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def relationship(x: np.ndarray) -> np.ndarray:
    """X X' / features of the standardised, flattened rows of x (mean diagonal 1)."""
    from gperceiver.linear import standardised

    z = standardised(x)[0].astype(np.float64)
    k = z @ z.T
    return k / np.mean(np.diag(k))


def probe(kernel: np.ndarray, y: np.ndarray, cv: np.ndarray) -> dict:
    from benchmarks.accuracy import kernel_r

    folds = sorted(set(np.unique(cv[~np.isnan(y)]).tolist()) - {-1})
    block = np.nanmean(kernel_r(kernel, y, cv, folds), axis=0)
    return {"block_r": [round(float(v), 4) for v in block], "mean_r": round(float(block.mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", type=Path, help="pretraining (or fit) checkpoint")
    parser.add_argument("store", type=Path)
    parser.add_argument("phenotypes", type=Path, help="TSV with a cv column")
    parser.add_argument("--seed", type=int, default=0, help="the random control's seed")
    args = parser.parse_args()

    import torch

    from gperceiver.baseline import genomic_relationship
    from gperceiver.data.phenotypes import read_phenotypes
    from gperceiver.encode import encode_latents
    from gperceiver.store import open_store
    from gperceiver.train.checkpoint import build_model, load_model

    start = time.perf_counter()
    ds = open_store(args.store)
    ph = read_phenotypes(args.phenotypes, ds["sample_id"].values.tolist())
    y, cv = ph["response"].values.astype(np.float64), ph["cv"].values
    model, info, _ = load_model(args.ckpt)
    info.check_store(ds, str(args.store))
    torch.manual_seed(args.seed)
    encoders = {"pretrained": model, "random_init": build_model(info)}
    out: dict = {"benchmark": "latent_probe", "checkpoint": str(args.ckpt),
                 "markers": probe(genomic_relationship(ds).values, y, cv)}
    for name, encoder in encoders.items():
        latents = encode_latents(encoder, args.store)
        out[name] = {"latents": probe(relationship(latents), y, cv),
                     "pooled": probe(relationship(latents.mean(1)), y, cv)}
    out["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
