"""Data-parallel training: pretrain and fit over 2 CPU processes (DDP, gloo backend).

Two real distributed runs start together (they mostly wait on imports, so they
overlap well): `gperceiver pretrain --devices 2 --strategy ddp` where Lightning
launches the second process, and this module run under torchrun, which pretrains
then finetunes through the library with a callback recording, on every rank, the
samples of each training batch and a hash of the final weights. Checked: every
training sample once per epoch across the ranks, the same step count as one
process with the same global batch, identical final weights on both ranks (and
in rank 0's checkpoint), and losses close to that one-process run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from gperceiver.train import engine
from gperceiver.train.checkpoint import load_checkpoint
from gperceiver.train.params import Params
from gperceiver.train.pretrain import pretrain, split_samples
from tests.conftest import ROOT
from tests.tiny_stores import ONE_THREAD, founder_store, one_torch_thread

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

# 64 samples: 16 validation, 48 training = 24 per rank = 3 batches of 8 (nothing cut).
N_SAMPLES, VAL_FRACTION, EPOCHS, RANK_BATCH = 64, 0.25, 3, 8
TINY = dict(allele_embed_dim=8, position_embed_dim=8, num_latents=6, latent_dim=16,
            projection_dim=16, num_self_attention_heads=2, num_self_attention=1,
            num_encode_iters=1, feedforward_dim=32, output_dim=16, prop_y=0.2, lr=0.01,
            val_fraction=VAL_FRACTION, epochs=EPOCHS, patience=100)


def digest(state: dict[str, torch.Tensor]) -> str:
    """One hash of every tensor of a state dict, by name."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Recorder(Callback):
    """Writes OUT/NAME.rankR.json: the samples of each epoch's training batches on this
    rank, the optimizer steps and a hash of the final weights."""

    def __init__(self, out: Path, name: str):
        self.out, self.name, self.seen = out, name, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epoch = self.seen.setdefault(str(trainer.current_epoch), [])
        epoch.extend(batch["sample_index"].tolist())

    def on_train_end(self, trainer, pl_module) -> None:
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size,
                  "steps": trainer.global_step, "seen": self.seen,
                  "weights": digest(pl_module.state_dict())}
        path = self.out / f"{self.name}.rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record))


def main(store: str, out: str) -> None:
    """Run under torchrun (2 processes): pretrain, then fit, recording every rank."""
    torch.set_num_threads(1)
    out_dir = Path(out)
    params = Params.build(**TINY, batch_size=RANK_BATCH)
    ddp = dict(progress=False, accelerator="cpu", devices=2, strategy="ddp")
    pretrain(store, out_dir / "pretrain", "masked", params,
             callbacks=[Recorder(out_dir, "pretrain")], **ddp)
    from gperceiver.fit import fit

    fit(store, out_dir / "phenos.tsv", out_dir / "fit", params, cv=0,
        callbacks=[Recorder(out_dir, "fit")], **ddp)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The store, and the two distributed runs started in the background."""
    folder = tmp_path_factory.mktemp("ddp")
    store = folder / "founders.zarr"
    calls, _ = founder_store(store, n_samples=N_SAMPLES)
    response = calls[:4].sum(axis=(0, 2)).astype(float)  # allele count at 4 loci
    rows = [f"s{i}\t{response[i]:g}\t0\t{0 if i < 16 else 1}" for i in range(N_SAMPLES)]
    (folder / "phenos.tsv").write_text("name\tresponse\tblock\tcv\n" + "\n".join(rows) + "\n")
    (folder / "params.json").write_text(json.dumps(TINY))
    env = {**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1"}
    commands = {
        "lightning": [sys.executable, "-m", "gperceiver", "pretrain", store, "-o",
                      folder / "cli", "--params", folder / "params.json", "--batch-size",
                      str(RANK_BATCH), "--accelerator", "cpu", "--devices", "2",
                      "--strategy", "ddp", "-q"],
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                     "--nproc_per_node", "2", "-m", "tests.test_distributed", store, folder],
    }
    procs = {}
    for name, command in commands.items():
        log = open(folder / f"{name}.log", "w")
        procs[name] = subprocess.Popen(list(map(str, command)), cwd=ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
    yield folder, store, procs
    for proc in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this fixture started
            proc.wait()


def finished(runs, name: str) -> Path:
    folder, _, procs = runs
    rc = procs[name].wait(timeout=300)
    log = (folder / f"{name}.log").read_text()
    assert rc == 0, f"{name} run failed ({rc}):\n{log[-3000:]}"
    return folder


def val_losses(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(r["val_loss"]) for r in csv.DictReader(f) if r.get("val_loss")]


def records(folder: Path, name: str) -> list[dict]:
    found = [json.loads((folder / f"{name}.rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in found] == [2, 2]
    return found


def test_lightning_launched_ddp_matches_one_process_with_the_same_global_batch(runs):
    folder, store, _ = runs
    single = folder / "single"
    pretrain(store, single, "masked", Params.build(**TINY, batch_size=2 * RANK_BATCH),
             progress=False, accelerator="cpu", devices=1)
    folder = finished(runs, "lightning")
    ddp = folder / "cli"
    assert sorted(p.name for p in ddp.iterdir()) == sorted(
        ["best.ckpt", "last.ckpt", "metrics.csv", "params.json"])
    steps = EPOCHS * (N_SAMPLES - round(VAL_FRACTION * N_SAMPLES)) // (2 * RANK_BATCH)
    assert load_checkpoint(ddp / "last.ckpt")["global_step"] == steps
    assert load_checkpoint(single / "last.ckpt")["global_step"] == steps
    a, b = val_losses(ddp), val_losses(single)
    assert len(a) == len(b) == EPOCHS
    assert a[-1] < 0.95 * a[0] and b[-1] < 0.95 * b[0], (a, b)  # both learn
    assert np.allclose(a, b, rtol=0.1), (a, b)  # and alike


def test_torchrun_every_sample_once_per_epoch_and_the_same_weights_on_both_ranks(runs):
    folder = finished(runs, "torchrun")
    train, _ = split_samples(N_SAMPLES, VAL_FRACTION, seed=0)
    ranks = records(folder, "pretrain")
    for epoch in map(str, range(EPOCHS)):
        seen = [r["seen"][epoch] for r in ranks]
        assert len(seen[0]) == len(seen[1]) == len(train) // 2
        assert sorted(seen[0] + seen[1]) == train.tolist()  # each once, none left out
    assert ranks[0]["steps"] == ranks[1]["steps"] == EPOCHS * len(train) // (2 * RANK_BATCH)
    assert ranks[0]["weights"] == ranks[1]["weights"]
    last = load_checkpoint(folder / "pretrain" / "last.ckpt")["state_dict"]
    assert digest(last) == ranks[0]["weights"]


def test_torchrun_fit_trains_on_both_ranks_and_rank0_writes_the_outputs(runs):
    folder = finished(runs, "torchrun")
    ranks = records(folder, "fit")
    train = list(range(16, N_SAMPLES))  # cv 1; cv 0 validates
    for epoch in map(str, range(EPOCHS)):
        assert sorted(ranks[0]["seen"][epoch] + ranks[1]["seen"][epoch]) == train
    assert ranks[0]["weights"] == ranks[1]["weights"]
    fit_dir = folder / "fit"
    assert digest(load_checkpoint(fit_dir / "last.ckpt")["state_dict"]) == ranks[0]["weights"]
    metrics = json.loads((fit_dir / "metrics.json").read_text())
    assert metrics["epochs"] == EPOCHS and metrics["validation"]["blocks"]
    lines = (fit_dir / "predictions.tsv").read_text().splitlines()
    assert len(lines) == 1 + N_SAMPLES  # every sample once, by rank 0 alone


def test_only_the_main_process_prepares_the_run_folder(monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    assert engine.is_main_process()
    cases = [({"RANK": "0", "LOCAL_RANK": "0"}, True), ({"RANK": "3", "LOCAL_RANK": "1"}, False),
             ({"LOCAL_RANK": "1"}, False), ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),
             ({"SLURM_NTASKS": "4", "SLURM_PROCID": "2"}, False),
             ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, True)]
    for env, main in cases:
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            assert engine.is_main_process() is main, env


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine runs it all")
def test_gpu_check_says_there_is_no_gpu_and_does_nothing_else(tmp_path):
    """benchmarks/gpu_check.sh (the GPU figures) stops at once, in one line, without a GPU."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", ROOT / "benchmarks" / "gpu_check.sh"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "gpu_check: no CUDA GPU here (nvidia-smi not found)\n"
    assert list(tmp_path.iterdir()) == []  # no scratch folder left behind


if __name__ == "__main__":
    main(*sys.argv[1:])
