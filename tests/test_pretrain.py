"""Pretraining: it learns, it is reproducible, a resumed run ends like an uninterrupted one."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

from gperceiver.cli.main import main
from gperceiver.errors import ExitCode, InputFormatError, UsageError
from gperceiver.train.checkpoint import load_checkpoint, load_model
from gperceiver.train.params import Params
from gperceiver.train.pretrain import pretrain
from tests.conftest import run_cli
from tests.tiny_stores import ONE_THREAD, founder_store, one_torch_thread

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

TINY = dict(allele_embed_dim=8, position_embed_dim=8, num_latents=6, latent_dim=16,
            projection_dim=16, num_self_attention_heads=2, num_self_attention=1,
            num_encode_iters=1, feedforward_dim=32, output_dim=16, batch_size=16,
            prop_y=0.2, lr=0.01, val_fraction=0.25)


@pytest.fixture(scope="module")
def founders(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("founders") / "founders.zarr"
    founder_store(path, n_samples=256)
    return path


def metrics(run: Path, key: str) -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_masked_pretraining_drives_the_loss_far_down(founders, tmp_path):
    run = tmp_path / "run"
    result = pretrain(founders, run, "masked", Params.build(**TINY, epochs=12), progress=False)
    losses = metrics(run, "val_loss")
    assert len(losses) == result.epochs == 12
    assert min(losses) < 0.3 * losses[0], losses
    assert max(metrics(run, "val_accuracy")) > 0.85
    assert result.best_score == pytest.approx(min(losses), rel=1e-6)
    model, info, ckpt = load_model(result.best)
    assert info.task == "masked" and info.variant_id[:2] == ["v0", "v1"]
    assert ckpt["epoch"] == losses.index(min(losses))


def test_a_checkpoint_keeps_its_config_apart_and_older_layouts_still_load(founders, tmp_path):
    result = pretrain(founders, tmp_path / "run", "masked", Params.build(**TINY, epochs=1),
                      progress=False)
    ckpt = load_checkpoint(result.best)
    meta = ckpt["gperceiver"]
    assert meta["model"]["latent_dim"] == 16 and "latent_dim" not in meta["params"]
    assert meta["format"] == 2
    # as written before the config had its own entry and the decoders' layers their name
    old = dict(ckpt, gperceiver={**{k: v for k, v in meta.items() if k != "model"},
                                 "params": {**meta["params"], **meta["model"]},
                                 "format": 1})
    old["state_dict"] = {k.replace(".layers.", ".blocks."): v
                         for k, v in ckpt["state_dict"].items()}
    assert any(".blocks." in k for k in old["state_dict"])
    torch.save(old, tmp_path / "old.ckpt")
    model, info, _ = load_model(result.best)
    old_model, old_info, _ = load_model(tmp_path / "old.ckpt")
    assert old_info.params == info.params
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 old_model.state_dict().values(), strict=True))


def test_contrastive_pretraining_learns_shared_alleles(founders, tmp_path):
    run = tmp_path / "run"
    params = Params.build(**TINY, epochs=6, contrastive=True, contrastive_weight=2.0)
    pretrain(founders, run, None, params, progress=False)  # task from params.contrastive
    losses = metrics(run, "val_loss")
    assert min(losses) < 0.9 * losses[0], losses
    _, info, _ = load_model(run / "last.ckpt")
    assert info.task == "contrastive" and info.params.contrastive_weight == 2.0


def test_same_seed_same_weights_and_exact_resume(founders, tmp_path):
    params = Params.build(**{**TINY, "dropout": 0.1, "batch_size": 64}, epochs=3, seed=3,
                    lr_patience=1)  # its scheduler state, too, must survive the resume
    pretrain(founders, tmp_path / "a", "masked", params, progress=False)
    pretrain(founders, tmp_path / "b", "masked", params, progress=False)
    assert same_weights(tmp_path / "a" / "last.ckpt", tmp_path / "b" / "last.ckpt")
    pretrain(founders, tmp_path / "c", "masked", params.replace(seed=4), progress=False)
    assert not same_weights(tmp_path / "a" / "last.ckpt", tmp_path / "c" / "last.ckpt")

    # Stopped after 1 epoch, resumed to 3: the same weights and metrics as 3 in one go.
    pretrain(founders, tmp_path / "r", "masked", params.replace(epochs=1), progress=False)
    assert metrics(tmp_path / "r", "val_loss") == metrics(tmp_path / "a", "val_loss")[:1]
    pretrain(founders, tmp_path / "r", "masked", params, resume=True, progress=False)
    assert same_weights(tmp_path / "a" / "last.ckpt", tmp_path / "r" / "last.ckpt")
    assert (tmp_path / "a" / "metrics.csv").read_text() == (
        tmp_path / "r" / "metrics.csv").read_text()

    with pytest.raises(UsageError, match="cannot resume with latent_dim=32"):
        pretrain(founders, tmp_path / "r", "masked", params.replace(latent_dim=32),
                 resume=True, progress=False)
    with pytest.raises(UsageError, match="trained on the masked task"):
        pretrain(founders, tmp_path / "r", "contrastive", params, resume=True,
                 progress=False)


def test_learning_rate_halves_after_lr_patience_epochs_without_improvement():
    from gperceiver.train.optimiser import configure_adamw

    model = torch.nn.Linear(2, 1)
    [optimiser], schedules = configure_adamw(model, Params(lr=0.1, lr_patience=2))
    assert [s["monitor"] for s in schedules] == ["val_loss"]
    plateau = schedules[0]["scheduler"]
    for loss, lr in ((1.0, 0.1), (1.0, 0.1), (1.0, 0.05), (0.5, 0.05), (0.6, 0.05),
                     (0.6, 0.025)):
        plateau.step(loss)
        assert optimiser.param_groups[0]["lr"] == pytest.approx(lr)
    assert configure_adamw(model, Params(lr=0.1))[1] == []  # off by default


def test_params_contradicting_the_store_refused(founders, tmp_path):
    with pytest.raises(UsageError, match="ploidy is 4 in the params but 2 in the store"):
        pretrain(founders, tmp_path / "run", "masked", Params.build(**TINY, ploidy=4))


def test_cli_pretrain_resume_and_refusals(example_store, tmp_path, capsys):
    params = tmp_path / "tiny.json"
    params.write_text(json.dumps({**TINY, "epochs": 5}))
    run = tmp_path / "run"
    env = {**ONE_THREAD, "GPERCEIVER_PROGRESS": "1"}
    proc = run_cli("pretrain", example_store, "-o", run, "--params", params, "--epochs", "1",
                   "--seed", "2", "--batch-size", "8", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Epoch 0" in proc.stderr and "pretrained 1 epochs" in proc.stdout
    assert sorted(os.listdir(run)) == ["best.ckpt", "last.ckpt", "metrics.csv", "params.json"]
    saved = json.loads((run / "params.json").read_text())
    assert (saved["epochs"], saved["seed"], saved["batch_size"]) == (1, 2, 8)
    assert (saved["ploidy"], saved["nalleles"]) == (2, 3)  # resolved from the store
    assert saved["latent_dim"] == TINY["latent_dim"]
    ckpt = torch.load(run / "best.ckpt", weights_only=True)
    assert ckpt["gperceiver"]["variant_id"][:3] == ["m0", "m1", "m2"]

    assert main(["pretrain", str(example_store), "-o", str(run)]) == ExitCode.CANNOT_WRITE
    assert "pass --resume to continue it or --force" in capsys.readouterr().err
    # Resume takes RUN_DIR/params.json; only --epochs changes.
    code = main(["pretrain", str(example_store), "-o", str(run), "--resume", "--epochs", "2",
                 "-q"])
    assert code == 0, capsys.readouterr().err
    assert [int(e) for e in metrics(run, "epoch")][-1] == 1
    assert len(metrics(run, "val_loss")) == 2


def test_crafted_pickle_checkpoint_refused(example_store, tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"state_dict": {}, "epoch": 0, "payload": Exploit()}, run / "last.ckpt")
    with pytest.raises(InputFormatError, match="refused: .*GLOBAL posix.system"):
        load_checkpoint(run / "last.ckpt")
    code = main(["pretrain", str(example_store), "-o", str(run), "--resume"])
    assert code == ExitCode.INPUT_FORMAT
    err = capsys.readouterr().err
    assert err.startswith(f"gperceiver: error: {run / 'last.ckpt'}: refused:")
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists()
    code = main(["pretrain", str(example_store), "-o", str(tmp_path / "none"), "--resume"])
    assert code == ExitCode.INPUT_NOT_FOUND
    assert "nothing to resume" in capsys.readouterr().err


def test_checkpoints_are_streamed_to_a_temporary_sibling_then_moved(tmp_path, monkeypatch):
    """Training writes checkpoints with torch.save straight into a file (Lightning's own
    writer first copies the whole checkpoint into memory), complete or not at all."""
    from gperceiver.train.engine import StreamedCheckpointIO, make_trainer

    save, targets = torch.save, []

    def recorded(obj, f, *args, **kwargs):
        targets.append(f)
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", recorded)
    state = {"state_dict": {"w": torch.arange(6.0)}, "epoch": 3}
    StreamedCheckpointIO().save_checkpoint(state, tmp_path / "last.ckpt")
    StreamedCheckpointIO().save_checkpoint({**state, "epoch": 4}, tmp_path / "last.ckpt")
    monkeypatch.undo()
    assert len(targets) == 2 and all(Path(t).parent == tmp_path for t in targets)
    back = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert back["epoch"] == 4 and torch.equal(back["state_dict"]["w"], torch.arange(6.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    trainer = make_trainer(tmp_path / "run", Params(), progress=False, accelerator="cpu")
    assert isinstance(trainer.strategy.checkpoint_io, StreamedCheckpointIO)  # what training uses


def test_release_hands_back_the_optimiser_and_gradients_after_training(tmp_path):
    """After training, `engine.release` lets the optimiser and its state go (the
    module's link to the trainer kept them through calibration and the marker path's
    refit in `fit`) and drops the gradients."""
    import gc
    import weakref

    import lightning as L

    from gperceiver.train.engine import make_trainer, release

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.loaders = {"train": None}

        def training_step(self, batch, _):
            loss = self.layer(batch[0]).square().mean()
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters())

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)),
                                       batch_size=4)
    module = Tiny()
    trainer = make_trainer(tmp_path / "run", Params(epochs=1), monitor="train_loss",
                           progress=False, accelerator="cpu")
    trainer.fit(module, data)
    optimiser = weakref.ref(trainer.optimizers[0])
    assert optimiser().state and module.layer.weight.grad is not None
    del trainer
    gc.collect()
    assert optimiser() is not None  # the module still leads to it
    release(module)
    assert optimiser() is None
    assert all(p.grad is None for p in module.parameters()) and module.loaders == {}
