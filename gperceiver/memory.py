"""A memory budget (`--memory 2GB`) and what it sizes: the loader, inference batches.

The budget defaults to a share of the memory this machine (or its cgroup) has free.
A training loader keeps a shuffle buffer of whole samples per process and a few
batches ready ahead; both grow with the number of markers (a million diploid
markers are 2 MB a sample), so they are sized from the budget rather than fixed.
The rest of the budget is left to the model, its optimiser and the batches in use.
An inference pass (predict, embed, impute) holds one batch's activations, which
grow with the loci read: its batch size is cut to fit INFERENCE_SHARE of the budget.
A model's per-locus tables (positions, per-locus alleles, decoder read-outs) grow
with the markers, TABLE_COPIES times over while training: a new model keeps its
per-locus allele rows only when the whole run fits the budget with them (what the
process holds already, the loader's share, a batch's activations and the tables).
The marker path holds its training lines' genotypes within DOSAGE_SHARE of the
budget (packed in 2 or 4 bits a count when int8 would pass it; `gperceiver.dosages`).
"""

from __future__ import annotations

import os
import re
import resource
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from gperceiver.errors import Note, UsageError

DEFAULT_SHARE = 0.5  # of the free memory, when no budget is given
LOADER_SHARE = 0.25  # of the budget, for the loaders' shuffle buffers and prefetched batches
MAX_SHUFFLE_BUFFER = 1024  # samples: more shuffles no better
INFERENCE_SHARE = 0.25  # of the budget, for an inference batch's activations
LOCUS_BYTES = 128  # activations per sample and input locus of an encoder pass (107 measured
#                   with a latent head over 100,000 loci, no gradients)
TABLE_COPIES = 6  # float32 copies of a table while training: weights, gradients, AdamW's two
#                  moments and the step's temporaries (measured: 22.4M more weights, 517 MiB)
TRAIN_LOCUS_BYTES = 256  # activations and gradients per sample and input locus of a training
#                         step (about 240 measured: masked pretraining, batch 16, 100,000 loci)
DOSAGE_SHARE = 0.25  # of the budget, for the marker path's training genotypes (int8, or packed)
UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
         "t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int, flag: str = "--memory") -> int:
    """Bytes from '2GB', '1.5G', '512MiB', '800M' or a plain number of bytes."""
    if isinstance(text, int):
        size = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in UNITS:
            raise UsageError(f"{flag}: '{text}' is not a size (e.g. 2GB, 1.5G, 512MiB)")
        size = int(float(match.group(1)) * UNITS[unit])
    if size <= 0:
        raise UsageError(f"{flag}: the budget must be above 0, got '{text}'")
    return size


def available_bytes() -> int:
    """Memory free for this process: the kernel's MemAvailable, lowered to what the
    cgroup (a container's or a batch job's limit) has left."""
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        pass
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text())
            free = min(free, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return free


def resident_bytes() -> int:
    """What this process holds now (Python, torch, an opened store): the floor under
    everything a command adds."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # no /proc: the peak so far
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def budget_bytes(memory: str | int | None) -> int:
    """The budget: `memory` parsed, or DEFAULT_SHARE of what is free now."""
    if memory is None:
        return int(DEFAULT_SHARE * available_bytes())
    return parse_size(memory)


@dataclass(frozen=True)
class LoaderPlan:
    """What a budget allows a training loader: per process, a shuffle buffer of
    `shuffle_buffer` samples and prefetched batches up to `prefetch_bytes`."""

    budget: int
    shuffle_buffer: int
    prefetch_bytes: int
    sample_bytes: int
    processes: int
    fits: bool  # False: even the smallest buffer (a read group and a batch) is over

    @property
    def reduced(self) -> bool:
        """The budget held the buffer below its usual size."""
        return not self.fits or self.shuffle_buffer < MAX_SHUFFLE_BUFFER

    def describe(self) -> str:
        held = self.shuffle_buffer * self.sample_bytes
        text = (f"memory budget {_human(self.budget)}: a shuffle buffer of "
                f"{self.shuffle_buffer:,} samples ({_human(held)}) in each of "
                f"{self.processes} loader process{'es' if self.processes > 1 else ''}")
        if not self.fits:
            text += (" (the smallest that works: one read group and one batch; the "
                     "budget is below it)")
        return text


def plan_loader(budget: int, *, n_variants: int, ploidy: int, group_samples: int,
                batch_size: int, workers: int) -> LoaderPlan:
    """Split LOADER_SHARE of `budget` over the loader processes: each holds its
    shuffle buffer (int8 genotypes) plus one read group being added to it."""
    processes = max(1, workers)
    sample = n_variants * ploidy
    share = LOADER_SHARE * budget / processes
    smallest = group_samples + batch_size
    buffer = int(share // sample) - group_samples
    fits = buffer >= smallest
    buffer = min(MAX_SHUFFLE_BUFFER, max(smallest, buffer))
    prefetch = int(max(share - (buffer + group_samples) * sample, 0) // 2)
    return LoaderPlan(budget, buffer, prefetch, sample, processes, fits)


@dataclass(frozen=True)
class TablePlan:
    """Whether a new model keeps its per-locus allele rows (`locus_alleles`) under the
    budget: its per-locus tables take `bytes_with` while training with them and
    `bytes_without` without, beside `others` (the rest of the run: `run_bytes`);
    `given` when the params chose, which the plan keeps."""

    budget: int
    n_variants: int
    bytes_with: int
    bytes_without: int
    others: int
    locus_alleles: bool
    given: bool

    @property
    def reduced(self) -> bool:
        return self.others + self.bytes_with > self.budget

    def describe(self) -> str:
        size = f"about {_human(self.bytes_with)} while training at {self.n_variants:,} loci"
        over = (f"over the memory budget {_human(self.budget)} with the rest of the run "
                f"(about {_human(self.others)})")
        if self.locus_alleles:
            return (f"the per-locus tables take {size}, {over}, as the params ask "
                    "(locus_allele_embed: false would take about "
                    f"{_human(self.bytes_without)})")
        if self.given:
            return f"per-locus allele rows are off, as the params ask ({size} with them)"
        return (f"per-locus allele rows are off: with them the per-locus tables would take "
                f"{size}, {over} (without: about {_human(self.bytes_without)}; "
                "locus_allele_embed: true keeps them)")


def run_bytes(budget: int, *, batch_size: int, n_loci: int) -> int:
    """What a training run holds besides its per-locus tables: this process now, the
    loader's share of `budget`, and a batch's activations over `n_loci` input loci."""
    return (resident_bytes() + int(LOADER_SHARE * budget)
            + batch_size * n_loci * TRAIN_LOCUS_BYTES)


def plan_tables(budget: int, *, n_variants: int, floats_with: int, floats_without: int,
                asked: bool | None, others: int) -> TablePlan:
    """Keep per-locus allele rows when the params ask (`asked` True or False), else
    when the tables with them and `others` (the rest of the run) fit `budget`."""
    def size(floats: int) -> int:
        return TABLE_COPIES * 4 * floats * n_variants

    with_, without = size(floats_with), size(floats_without)
    keep = asked if asked is not None else others + with_ <= budget
    return TablePlan(budget, n_variants, with_, without, others, keep, asked is not None)


@dataclass(frozen=True)
class BatchPlan:
    """What a budget allows an inference pass (predict, embed, impute): `batch_size`
    samples at a time, of the `asked` size, each `sample_bytes` of activations."""

    budget: int
    batch_size: int
    asked: int
    sample_bytes: int

    @property
    def reduced(self) -> bool:
        return self.batch_size < self.asked

    def describe(self) -> str:
        text = (f"memory budget {_human(self.budget)}: batches of {self.batch_size:,} "
                f"sample{'s' if self.batch_size > 1 else ''} (about "
                f"{_human(self.batch_size * self.sample_bytes)} of activations)")
        if self.batch_size * self.sample_bytes > INFERENCE_SHARE * self.budget:
            text += " (one sample is over the share of the budget left for them)"
        return text


def plan_batch(budget: int, *, n_loci: int, batch_size: int) -> BatchPlan:
    """The largest batch, up to `batch_size`, whose encoder activations over `n_loci`
    input loci fit INFERENCE_SHARE of `budget` (at least one sample)."""
    sample = n_loci * LOCUS_BYTES
    fits = int(INFERENCE_SHARE * budget // sample)
    return BatchPlan(budget, max(1, min(batch_size, fits)), batch_size, sample)


def inference_batch(memory: str | int | None, *, n_loci: int, batch_size: int) -> int:
    """The batch size an inference pass over `n_loci` loci uses under the budget
    `memory` (None: the default share of free memory), said when given or cut."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    plan = plan_batch(budget_bytes(memory), n_loci=n_loci, batch_size=batch_size)
    announce(plan, memory is not None, stacklevel=4)
    return plan.batch_size


def announce(plan: LoaderPlan | BatchPlan | TablePlan | None, given: bool,
             stacklevel: int = 3) -> None:
    """Say what the budget chose (a note): always for a budget given, otherwise only
    when it held a buffer or a batch below its usual size."""
    if plan is not None and (given or plan.reduced):
        warnings.warn(plan.describe(), Note, stacklevel=stacklevel)


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.3g} {unit}"
        size /= 1000
    return f"{size:.3g} TB"
