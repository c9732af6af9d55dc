"""Simulated breeding panels with linked markers and several correlated traits.

Lines are diploid mosaics of a few founder haplotypes (recombination as a
Poisson process along each chromosome, `generations` crossovers per Morgan), so
neighbouring markers are in linkage disequilibrium as in a real panel. Traits
(one per block) share causal loci with correlated effects; `epistasis` is the
share of the genetic variance carried by pairwise interactions between causal
loci. A `missing` share of (line, block) phenotypes is dropped; each line gets a
cv fold. Written in the original tool's TSV formats (decoder codes 3/4/5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class Panel:
    dosage: np.ndarray  # (lines, markers) copies of allele 2: 0, 1, 2
    chrom: np.ndarray  # (markers,) chromosome number from 1
    position: np.ndarray  # (markers,) cM
    genetic: np.ndarray  # (lines, blocks) true genetic values
    phenos: pd.DataFrame  # name, response, block, cv


def _haplotypes(rng, founders: np.ndarray, chrom: np.ndarray, position: np.ndarray,
                n: int, generations: float) -> np.ndarray:
    """n mosaic haplotypes (n, markers) of the founder haplotypes."""
    n_founders, m = founders.shape
    out = np.empty((n, m), np.int8)
    for c in np.unique(chrom):
        cols = np.flatnonzero(chrom == c)
        length = (position[cols[-1]] - position[cols[0]]) / 100.0  # Morgans
        for i in range(n):
            breaks = np.sort(rng.uniform(0, length, rng.poisson(generations * length)))
            segment = np.searchsorted(breaks * 100.0 + position[cols[0]], position[cols])
            which = rng.integers(0, n_founders, size=len(breaks) + 1)
            out[i, cols] = founders[which[segment], cols]
    return out


def _correlated(rng, corr: np.ndarray, n: int) -> np.ndarray:
    """n draws (n, blocks) of N(0, corr), through corr's Cholesky factor: the same numbers
    on every numpy and LAPACK (multivariate_normal's SVD is not, so the panels moved)."""
    return rng.standard_normal((n, len(corr))) @ np.linalg.cholesky(corr).T


def simulate(n_lines: int = 600, n_markers: int = 900, *, n_chrom: int = 3,
             n_founders: int = 8, generations: float = 6.0, n_blocks: int = 3,
             n_causal: int = 60, h2: float = 0.7, genetic_corr: float = 0.6,
             epistasis: float = 0.0, missing: float = 0.1, folds: int = 5,
             seed: int = 0) -> Panel:
    """A panel as described in the module docstring."""
    rng = np.random.default_rng(seed)
    chrom = np.sort(rng.integers(1, n_chrom + 1, n_markers))
    position = np.concatenate([np.sort(rng.uniform(0, 100, (chrom == c).sum()))
                               for c in range(1, n_chrom + 1)])
    freq = rng.uniform(0.1, 0.9, n_markers)
    founders = (rng.random((n_founders, n_markers)) < freq).astype(np.int8)
    dosage = (_haplotypes(rng, founders, chrom, position, n_lines, generations)
              + _haplotypes(rng, founders, chrom, position, n_lines, generations))

    corr = np.full((n_blocks, n_blocks), genetic_corr) + (1 - genetic_corr) * np.eye(n_blocks)
    causal = rng.choice(np.flatnonzero(dosage.std(0) > 0), n_causal, replace=False)
    z = dosage[:, causal] - dosage[:, causal].mean(0)
    additive = z @ _correlated(rng, corr, n_causal)
    genetic = additive / additive.std(0)
    if epistasis > 0:
        pairs = rng.choice(n_causal, (n_causal, 2))
        inter = (z[:, pairs[:, 0]] * z[:, pairs[:, 1]]) @ _correlated(rng, corr, n_causal)
        inter = (inter - inter.mean(0)) / inter.std(0)
        genetic = np.sqrt(1 - epistasis) * genetic + np.sqrt(epistasis) * inter
    genetic = (genetic - genetic.mean(0)) / genetic.std(0)
    response = np.sqrt(h2) * genetic + np.sqrt(1 - h2) * rng.normal(size=genetic.shape)

    fold = rng.permutation(n_lines) % folds
    keep = rng.random(response.shape) >= missing
    rows = [(f"L{i:05d}", round(float(response[i, b]), 5), b, int(fold[i]))
            for b in range(n_blocks) for i in range(n_lines) if keep[i, b]]
    phenos = pd.DataFrame(rows, columns=["name", "response", "block", "cv"])
    return Panel(dosage, chrom, position, genetic, phenos)


def write_panel(panel: Panel, folder: Path) -> tuple[Path, Path, Path]:
    """markers.tsv, chroms.tsv, phenos.tsv of `panel` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"L{i:05d}" for i in range(len(panel.dosage))]
    markers = [f"m{j:05d}" for j in range(panel.dosage.shape[1])]
    table = pd.DataFrame(panel.dosage + 3, columns=markers)  # decoder codes 3 / 4 / 5
    table.insert(0, "name", names)
    paths = folder / "markers.tsv", folder / "chroms.tsv", folder / "phenos.tsv"
    table.to_csv(paths[0], sep="\t", index=False)
    pd.DataFrame({"chr": [f"chr{c}" for c in panel.chrom], "marker": markers,
                  "pos": np.round(panel.position, 4)}).to_csv(paths[1], sep="\t", index=False)
    panel.phenos.to_csv(paths[2], sep="\t", index=False)
    return paths
