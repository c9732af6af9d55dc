"""The memory budget: sizes read as plink and Slurm users write them, the loader's share
split over its processes, and what a training command says it chose."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gperceiver.data.loader import make_loader
from gperceiver.errors import ExitCode, UsageError
from gperceiver.memory import (
    INFERENCE_SHARE,
    LOADER_SHARE,
    LOCUS_BYTES,
    MAX_SHUFFLE_BUFFER,
    TABLE_COPIES,
    TRAIN_LOCUS_BYTES,
    available_bytes,
    budget_bytes,
    parse_size,
    plan_batch,
    plan_loader,
    plan_tables,
    resident_bytes,
    run_bytes,
)
from gperceiver.train.checkpoint import load_model
from tests.conftest import run_cli
from tests.tiny_stores import ONE_THREAD, founder_store


@pytest.mark.parametrize("text, size", [
    ("2GB", 2_000_000_000), ("1.5G", 1_500_000_000), ("512MiB", 512 * 2**20),
    ("800m", 800_000_000), ("1000", 1000), (" 3 gb ", 3_000_000_000), (4096, 4096),
])
def test_sizes_are_read_with_their_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "2 GBs", "-1G", "0", "0.0001b", "", "1e9"])
def test_a_size_that_is_not_one_is_refused_naming_the_flag(text):
    with pytest.raises(UsageError, match="^--memory: "):
        parse_size(text)


def test_the_default_budget_is_half_of_what_is_free():
    free = available_bytes()
    assert free > 0
    assert abs(budget_bytes(None) - free / 2) < 0.05 * free  # free memory moves a little
    assert budget_bytes("1GB") == 10**9


def test_the_loader_share_is_split_over_its_processes():
    wide = dict(n_variants=100_000, ploidy=2, group_samples=256, batch_size=16)
    plan = plan_loader(2 * 10**9, workers=2, **wide)
    assert plan.shuffle_buffer == int(LOADER_SHARE * 10**9 // 200_000) - 256
    assert plan.fits and plan.processes == 2
    assert (plan.shuffle_buffer + 256) * 200_000 + 2 * plan.prefetch_bytes <= LOADER_SHARE * 10**9
    one = plan_loader(2 * 10**9, workers=0, **wide)  # the main process reads: one share
    assert one.shuffle_buffer == MAX_SHUFFLE_BUFFER  # more than that shuffles no better
    tight = plan_loader(10**8, workers=2, **wide)
    assert tight.shuffle_buffer == 256 + 16 and not tight.fits  # the least that works
    assert "below it" in tight.describe()


def test_inference_batches_fit_their_share_of_the_budget():
    per_sample = 10_000 * LOCUS_BYTES
    budget = int(5.5 * per_sample / INFERENCE_SHARE)
    assert plan_batch(budget, n_loci=10_000, batch_size=64).batch_size == 5
    assert not plan_batch(budget, n_loci=10_000, batch_size=3).reduced
    tiny = plan_batch(1000, n_loci=10_000, batch_size=16)
    assert tiny.batch_size == 1 and tiny.reduced and "over the share" in tiny.describe()


def test_a_budget_shrinks_the_shuffle_buffer_and_every_sample_still_comes_once(tmp_path):
    store = tmp_path / "wide.zarr"
    founder_store(store, n_samples=120, n_variants=4000)
    sample_bytes = 4000 * 2
    group = make_loader(store, "plain", batch_size=8).dataset.group_samples
    # room for the read group being added and a buffer of one group, a batch and 60 more
    budget = int((group + group + 8 + 60) * sample_bytes / LOADER_SHARE) + 1
    loader = make_loader(store, "plain", batch_size=8, memory=budget, shuffle=True)
    assert loader.plan.shuffle_buffer == group + 8 + 60 < MAX_SHUFFLE_BUFFER
    assert loader.dataset.shuffle_buffer == loader.plan.shuffle_buffer and loader.plan.fits
    seen = np.concatenate([b["sample_index"].numpy() for b in loader])
    assert sorted(seen.tolist()) == list(range(120))
    assert make_loader(store, "plain", batch_size=8).plan is None  # no budget, no plan


TINY_RUN = ("--epochs", "1", "--batch-size", "8", "-q")


@pytest.fixture
def small_store(tmp_path) -> Path:
    store = tmp_path / "s.zarr"
    founder_store(store, n_samples=64, n_variants=48)
    return store


def pretrain_under(store: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    """One tiny epoch of `gperceiver pretrain` with flags `extra` (e.g. --memory)."""
    return run_cli("pretrain", store, "-o", out, *TINY_RUN, *extra, env=ONE_THREAD)


def test_pretrain_says_what_its_budget_chose_and_refuses_a_bad_one(small_store, tmp_path):
    store = small_store
    proc = pretrain_under(store, tmp_path / "run", "--memory", "900KB")
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines()
             if line.startswith("gperceiver: note: memory budget")]
    assert len(notes) == 1
    assert notes[0].startswith("gperceiver: note: memory budget 900 KB: a shuffle buffer of ")
    bad = run_cli("pretrain", store, "-o", tmp_path / "bad", "--memory", "lots", *TINY_RUN)
    assert bad.returncode == ExitCode.USAGE
    assert bad.stderr.strip() == ("gperceiver: error: --memory: 'lots' is not a size "
                                  "(e.g. 2GB, 1.5G, 512MiB)")
    assert not (tmp_path / "bad").exists()
    quiet = pretrain_under(store, tmp_path / "default")
    assert quiet.returncode == 0 and "memory budget" not in quiet.stderr  # nothing bound
    # the default budget (half the free memory) keeps a small panel's per-locus allele rows
    assert "per-locus allele rows" not in quiet.stderr
    assert load_model(tmp_path / "default" / "best.ckpt")[1].params.model.locus_allele_embed
    # embed and impute cut their batches to the budget, and say so
    for command, out in (("embed", "e.zarr"), ("impute", "i.zarr")):
        proc = run_cli(command, tmp_path / "run" / "best.ckpt", store, "-o", tmp_path / out,
                       "--memory", "50KB", "-q", env=ONE_THREAD)
        assert proc.returncode == 0, proc.stderr
        assert "note: memory budget 50 KB: batches of 2 samples" in proc.stderr, command
        assert (tmp_path / out).exists()


def test_per_locus_allele_rows_are_kept_while_the_run_fits_the_budget_or_as_asked():
    # 48 floats a locus with the rows, 8 without; TABLE_COPIES float32 copies while training
    def plan(budget, others, asked=None):
        return plan_tables(budget, n_variants=1000, floats_with=48, floats_without=8,
                           asked=asked, others=others)

    with_ = TABLE_COPIES * 4 * 48 * 1000
    assert plan(10_000_000, 0).bytes_with == with_
    assert plan(10_000_000, 0).bytes_without == TABLE_COPIES * 4 * 8 * 1000
    assert plan(with_, 0).locus_alleles and not plan(with_, 0).reduced
    # the same tables, beside the rest of the run, no longer fit
    full = plan(with_, 1)
    assert not full.locus_alleles and full.reduced
    assert "per-locus allele rows are off" in full.describe()
    assert plan(with_, 1, asked=True).locus_alleles
    assert not plan(10_000_000, 0, asked=False).locus_alleles


def test_the_rest_of_a_run_is_this_process_the_loader_and_a_batch():
    budget, batch, loci = 10**9, 16, 1000
    before = resident_bytes()
    others = run_bytes(budget, batch_size=batch, n_loci=loci)
    after = resident_bytes()
    added = int(LOADER_SHARE * budget) + batch * loci * TRAIN_LOCUS_BYTES
    assert before + added - 2**20 <= others <= after + added + 2**20
    assert 10 * 2**20 < before < 64 * 2**30  # a Python with torch, in bytes


def test_a_small_budget_builds_a_model_without_per_locus_allele_rows(small_store, tmp_path):
    """A new model's per-locus tables grow with the markers: when the run would overrun
    its budget with them, pretrain leaves out the per-locus allele rows and says so;
    params that ask for them keep them."""
    # with them: (32 + 3 x 32 + 2 x 64) floats x 48 loci x 4 bytes x 6 copies = 295 KB
    proc = pretrain_under(small_store, tmp_path / "run", "--memory", "400KB")
    assert proc.returncode == 0, proc.stderr
    assert ("gperceiver: note: per-locus allele rows are off: with them the per-locus tables "
            "would take about 295 KB while training at 48 loci, over the memory budget 400 KB "
            "with the rest of the run (about ") in proc.stderr
    assert "(without: about 36.9 KB; locus_allele_embed: true keeps them)" in proc.stderr
    _, info, _ = load_model(tmp_path / "run" / "best.ckpt")
    assert info.params.model.locus_allele_embed is False
    params = tmp_path / "p.json"
    params.write_text('{"locus_allele_embed": true}')
    proc = pretrain_under(small_store, tmp_path / "asked", "--memory", "400KB", "--params",
                          params)
    assert proc.returncode == 0, proc.stderr
    assert "over the memory budget 400 KB with the rest of the run" in proc.stderr
    assert "as the params ask" in proc.stderr
    _, info, _ = load_model(tmp_path / "asked" / "best.ckpt")
    assert info.params.model.locus_allele_embed is True


def test_under_a_small_budget_fit_packs_the_marker_paths_genotypes(small_store, tmp_path):
    """The marker path's training genotypes take at most a quarter of the budget: over
    it, fit packs them in 2 bits a count, says so, and its marker path is the same."""
    rng = np.random.default_rng(0)
    phenos = tmp_path / "phenos.tsv"
    phenos.write_text("name\tresponse\tblock\tcv\n" + "".join(
        f"s{i}\t{rng.normal():.3f}\t0\t{i % 4}\n" for i in range(64)))
    params = tmp_path / "p.json"
    params.write_text('{"locus_allele_embed": false}')  # the same model under both budgets
    runs = {}
    for budget in ("8KB", "1GB"):  # ~43 training lines x 48 columns: 2 KB in int8
        out = tmp_path / budget
        proc = run_cli("fit", small_store, phenos, "-o", out, "--test-fold", "0", "--params",
                       params, "--memory", budget, *TINY_RUN, env=ONE_THREAD)
        assert proc.returncode == 0, proc.stderr
        runs[budget] = json.loads((out / "metrics.json").read_text())
        packed = "the marker path holds the training lines' genotypes packed in 2 bits"
        assert (packed in proc.stderr) == (budget == "8KB"), proc.stderr
    assert runs["8KB"]["components"]["linear_only"] == runs["1GB"]["components"]["linear_only"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
def test_memory_a_phase_freed_goes_back_to_the_system():
    """glibc keeps freed blocks for reuse (`reuse_freed_memory`); between the phases of
    a command `release_freed_memory` hands them back, so the next phase starts from
    what is live."""
    code = """if True:
        import torch
        from gperceiver.runtime import release_freed_memory, reuse_freed_memory
        def rss():
            return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
        reuse_freed_memory()
        blocks = [torch.ones(2**20) for _ in range(100)]  # 400 MB in blocks of 4 MB
        del blocks
        kept = rss()
        release_freed_memory()
        print(kept, rss())
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    kept, after = map(int, done.stdout.split())
    assert kept - after > 300, (kept, after)
