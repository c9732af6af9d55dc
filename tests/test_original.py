"""What the original tool's users bring: its scripts' flags, its params files, its
contrastive weight, and a pretrained architecture taken whole."""

from __future__ import annotations

import json
import warnings
from dataclasses import fields

import numpy as np
import pytest
import torch

from gperceiver.data.loader import make_loader
from gperceiver.errors import ExitCode, InputFormatError, Note, UsageError
from gperceiver.fit import fit
from gperceiver.model.config import ARCHITECTURE, ModelConfig
from gperceiver.train.checkpoint import load_model
from gperceiver.train.original_params import MAPPING
from gperceiver.train.params import Params, load_params
from gperceiver.train.pretrain import pretrain
from tests.conftest import ROOT, TEST_DATA
from tests.test_legacy import script
from tests.test_pretrain import TINY as PRE_TINY

ORIGINAL_PARAMS = ROOT / "tests" / "data" / "original_params.json"  # its test_data, verbatim
# Every flag of the original's latest scripts (src/gperceiver/scripts/*_gp.py).
ORIGINAL_PRETRAIN_FLAGS = (
    "--model", "--checkpoint", "--best-checkpoint", "--last-checkpoint", "--logs", "--params",
    "--nalleles", "--ploidy", "--lr", "--warmup-lr", "--warmup-steps", "--batch-size",
    "--nepochs", "--early-stopping-patience", "--reduce-lr-patience", "--prop-x", "--prop-y",
    "--contrastive", "--contrastive-allele-weight", "--ploidy-scaler", "--seed", "--loss",
)
ORIGINAL_FINETUNE_FLAGS = (
    "--predictions", "--nalleles", "--ploidy", "--model", "--pretrained", "--checkpoint",
    "--best-checkpoint", "--last-checkpoint", "--latent-nontrainable", "--encoder-nontrainable",
    "--position-embed-trainable", "--block-strategy", "--lr", "--warmup-lr", "--warmup-steps",
    "--batch-size", "--nepochs", "--early-stopping-patience", "--reduce-lr-patience", "--loss",
    "--logs", "--params", "--seed", "--cv",
)
# The original Params class's keys (scripts/utils.py), beside its test_data file's.
ORIGINAL_KEYS = (
    "nmarkers", "chrom_pos", "marker_pos", "nalleles", "ploidy", "allele_embed_kind",
    "allele_embed_dim", "allele_combiner", "position_embed_kind", "position_embed_dim",
    "position_embed_trainable", "share_weights", "projection_dim", "feedforward_dim",
    "latent_dim", "output_dim", "num_self_attention_heads", "num_self_attention",
    "num_encode_iters", "num_decode_iters", "contrastive", "contrastive_weight", "nblocks",
    "block_strategy", "allele_decoder",
)
SMALL_ORIGINAL = {"allele_embed_kind": "2", "allele_embed_dim": 8, "allele_combiner": "concat",
                  "position_embed_kind": "random", "position_embed_dim": 8,
                  "share_weights": "after_first", "projection_dim": 16,
                  "feedforward_dim": 32, "latent_dim": 6, "output_dim": 16,
                  "num_self_attention_heads": 2, "num_self_attention": 1,
                  "num_encode_iters": 1, "num_decode_iters": 1, "contrastive": False,
                  "contrastive_weight": 0.0, "block_strategy": "latent"}


def test_the_originals_params_file_loads_verbatim_with_notes():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = load_params(ORIGINAL_PARAMS)
    m = p.model
    assert (m.num_latents, m.latent_dim) == (256, 512)  # its latent_dim counts latents
    assert (m.position_embed_kind, m.position_embed_combine) == ("learned", "add")
    assert m.locus_allele_embed is False and m.share_weights is True
    assert p.contrastive is True and p.contrastive_weight == 0.0
    assert (m.nalleles, m.ploidy, m.projection_dim, m.num_encode_iters) == (3, 2, 256, 4)
    notes = [str(w.message) for w in caught if issubclass(w.category, Note)]
    assert any("allele_embed_kind" in n for n in notes), notes
    assert set(json.loads(ORIGINAL_PARAMS.read_text())) <= set(MAPPING)


def test_every_original_key_is_mapped(tmp_path):
    assert set(ORIGINAL_KEYS) == set(MAPPING)
    path = tmp_path / "saved.json"  # as the original's pretraining saved it
    path.write_text(json.dumps({**SMALL_ORIGINAL, "nmarkers": 3, "chrom_pos": [0, 0, 1],
                                "marker_pos": [1.0, 2.0, 3.0], "nalleles": 3, "ploidy": 2,
                                "nblocks": 2, "position_embed_trainable": False,
                                "allele_decoder": [[0, 0], [1, 1], [1, 2], [2, 2]]}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = load_params(path)
    assert p.model.locus_allele_embed and p.model.position_embed_combine == "concat"
    assert p.model.share_weights and p.head == "latent" and not p.position_embed_trainable
    notes = " ".join(str(w.message) for w in caught)
    for key in ("nblocks", "nmarkers", "allele_decoder", "share_weights 'after_first'"):
        assert key in notes


@pytest.mark.parametrize("content, fragment", [
    ({"allele_embed_kind": "4"}, "key 'allele_embed_kind': must be '1', '2' or '3'"),
    ({"allele_combiner": "mul"}, "key 'allele_combiner': must be one of add, concat"),
    ({"position_embed_kind": "random", "num_latents": 8}, "key 'num_latents': a gperceiver key"),
    ({"allele_embed_kind": "1", "latent_dimm": 8}, "key 'latent_dimm': unknown parameter"),
    ({"contrastive_weight": -1.0, "allele_combiner": "add"}, "must be >= 0.0"),
])
def test_bad_original_params_are_refused_naming_the_key(tmp_path, content, fragment):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputFormatError, match=fragment):
        load_params(path)


def test_shared_keys_read_in_the_originals_dialect_only_by_its_scripts(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"latent_dim": 32, "output_dim": 16}))
    ours = load_params(path).model
    assert (ours.latent_dim, ours.output_dim) == (32, 16)
    original = load_params(path, original=True).model
    assert (original.num_latents, original.latent_dim) == (32, 16)


def test_contrastive_weight_adds_each_twins_allele_reconstruction(tmp_path):
    """The original's meaning: 0 trains the contrast alone (the masked read-out never
    learns); > 0 adds the twins' allele losses, so the masked read-out learns too."""
    from tests.tiny_stores import founder_store

    store = tmp_path / "f.zarr"
    founder_store(store, n_samples=256)
    for batch in make_loader(store, "contrastive", batch_size=8, prop_y=0.2):
        counts, mask = batch["y_counts"].numpy(), batch["y_mask"].numpy()
        assert counts.shape[:3] == (*batch["y_shared"].shape[:1], 2, mask.shape[1])
        assert (counts[~np.broadcast_to(mask[:, None], counts.shape[:3])] == 0).all()
        assert (counts.sum(-1)[np.broadcast_to(mask[:, None], counts.shape[:3])] == 2).all()
        shared = np.minimum(counts[:, 0], counts[:, 1]).sum(-1)
        np.testing.assert_array_equal(shared[mask], batch["y_shared"].numpy()[mask])
        break
    accuracy = {}
    for weight in (0.0, 1.0):
        run = tmp_path / f"w{weight}"
        params = Params.build(**{**PRE_TINY, "epochs": 4, "contrastive": True,
                           "contrastive_weight": weight})
        pretrain(store, run, None, params, progress=False)
        model, _, _ = load_model(run / "last.ckpt")
        hits = total = 0
        with torch.no_grad():
            for batch in make_loader(store, "masked", batch_size=64, prop_y=0.2, seed=5):
                logits = model.masked_logits(batch["x_alleles"], batch["x_index"],
                                             batch["y_index"])
                target = model.class_of(batch["y_counts"])
                keep = batch["y_mask"] & (target >= 0)
                hits += int((logits.argmax(-1)[keep] == target[keep]).sum())
                total += int(keep.sum())
        accuracy[weight] = hits / total
    assert accuracy[1.0] > accuracy[0.0] + 0.2, accuracy


def test_help_lists_every_original_flag():
    for name, flags in (("pretrain", ORIGINAL_PRETRAIN_FLAGS),
                        ("finetune", ORIGINAL_FINETUNE_FLAGS)):
        helped = script(name, "--help")
        assert helped.returncode == 0
        missing = [f for f in flags if f not in helped.stdout]
        assert not missing, (name, missing)
    assert "[original: 50]" in script("finetune", "--help").stdout


def test_original_flags_and_params_file_on_test_data(tmp_path):
    chroms, markers = TEST_DATA / "chroms.tsv", TEST_DATA / "markers.tsv"
    params = tmp_path / "original.json"
    params.write_text(json.dumps(SMALL_ORIGINAL))
    pre = script("pretrain", chroms, markers, "--model", tmp_path / "pre", "--params", params,
                 "--nepochs", 1, "--batch-size", 8, "--lr", 1e-3, "--seed", 2, "--prop-x", 1.0,
                 "--prop-y", 0.2, "--warmup-steps", 5, "--warmup-lr", 1e-9,
                 "--early-stopping-patience", 3, "--reduce-lr-patience", 2,
                 "--contrastive", "--contrastive-allele-weight", 0.5, "--ploidy-scaler", 2.0,
                 "--loss", "binary", "--logs", tmp_path / "pre.tsv", "-q", cwd=tmp_path)
    assert pre.returncode == 0, pre.stderr
    assert "gperceiver_pretrain: note: --ploidy-scaler has no effect" in pre.stderr
    assert "gperceiver_pretrain: note: --warmup-lr has no effect" in pre.stderr
    assert "gperceiver:" not in pre.stderr
    saved = json.loads((tmp_path / "pre" / "params.json").read_text())
    assert (saved["contrastive"], saved["contrastive_weight"], saved["prop_y"]) == (
        True, 0.5, 0.2)
    assert (saved["epochs"], saved["batch_size"], saved["seed"], saved["warmup_steps"],
            saved["patience"], saved["lr_patience"]) == (1, 8, 2, 5, 3, 2)
    assert (saved["num_latents"], saved["latent_dim"]) == (6, 16)
    assert "epoch" in (tmp_path / "pre.tsv").read_text().splitlines()[0].split("\t")

    fine = script("finetune", TEST_DATA / "phenos.tsv", chroms, markers, "--model",
                  tmp_path / "fine", "--pretrained", tmp_path / "pre", "--nepochs", 2,
                  "--batch-size", 8, "--lr", 1e-3, "--seed", 1, "--loss", "mae",
                  "--warmup-steps", 0, "--early-stopping-patience", 5,
                  "--reduce-lr-patience", 0, "--cv", 1, "--logs", tmp_path / "fine.tsv",
                  "--predictions", tmp_path / "preds.tsv", "-q", cwd=tmp_path)
    assert fine.returncode == 0, fine.stderr
    assert "gperceiver_finetune: note: --loss mae: trains a regression" in fine.stderr
    assert "validation fold 1 rows, per block:" in fine.stdout
    assert "{" not in fine.stdout  # a readable summary, not a raw dict
    saved = json.loads((tmp_path / "fine" / "params.json").read_text())
    assert (saved["head"], saved["epochs"], saved["patience"], saved["lr_patience"]) == (
        "pool", 2, 5, 0)  # --block-strategy: the original's default, pool
    assert saved["position_embed_trainable"] is False  # frozen with --pretrained, as there
    assert (saved["num_latents"], saved["latent_dim"], saved["locus_allele_embed"]) == (
        6, 16, True)  # the pretrained architecture, whole
    assert (tmp_path / "fine.tsv").is_file() and (tmp_path / "preds.tsv").is_file()

    # without flags, a value comes from the params file, else the original's default
    defaults = script("finetune", TEST_DATA / "phenos.tsv", chroms, markers, "--model",
                      tmp_path / "fine2", "--params", params, "--nepochs", 1, "-q",
                      cwd=tmp_path)
    assert defaults.returncode == 0, defaults.stderr
    saved = json.loads((tmp_path / "fine2" / "params.json").read_text())
    assert (saved["batch_size"], saved["patience"], saved["lr_patience"], saved["warmup_steps"],
            saved["head"]) == (16, 50, 10, 100, "latent")  # head from block_strategy


def test_legacy_checkpoint_starts_from_its_weights_and_refusals_leave_nothing(tmp_path):
    chroms, markers = TEST_DATA / "chroms.tsv", TEST_DATA / "markers.tsv"
    bad = script("finetune", TEST_DATA / "phenos.tsv", chroms, markers, "--model",
                 tmp_path / "m", "--checkpoint", TEST_DATA / "params.json")
    assert bad.returncode == ExitCode.INPUT_FORMAT
    assert bad.stderr.startswith("gperceiver_finetune: error: ")
    assert not (tmp_path / "m").exists()
    tiny = ORIGINAL_PARAMS.parent / "tiny_original.json"
    pre = script("pretrain", chroms, markers, "--model", tmp_path / "pre", "--params", tiny,
                 "--nepochs", 1, "-q", cwd=tmp_path)
    assert pre.returncode == 0, pre.stderr
    # the original's meaning: start from the weights, train --nepochs epochs afresh
    more = script("pretrain", chroms, markers, "--model", tmp_path / "pre2", "--params", tiny,
                  "--nepochs", 2, "--checkpoint", tmp_path / "pre", "-q", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert "pretrained for 2 epoch(s)" in more.stdout
    start, _, _ = load_model(tmp_path / "pre" / "last.ckpt")
    assert (tmp_path / "pre2" / "best.ckpt").is_file()
    fresh = script("pretrain", chroms, markers, "--model", tmp_path / "pre2", "--params", tiny,
                   "--nepochs", 1, "--seed", 1, "-q", cwd=tmp_path)
    assert "note: replacing the earlier run" in fresh.stderr
    # a checkpoint whose architecture the params contradict: refused, nothing left
    refused = script("finetune", TEST_DATA / "phenos.tsv", chroms, markers, "--model",
                     tmp_path / "m", "--checkpoint", tmp_path / "pre" / "last.ckpt", "--params",
                     ORIGINAL_PARAMS, "-q", cwd=tmp_path)
    assert refused.returncode == ExitCode.USAGE, refused.stderr
    assert refused.stderr.splitlines()[-1].startswith(
        f"gperceiver_finetune: error: allele_embed_dim: the params give 256, but the "
        f"pretrained model {tmp_path / 'pre' / 'last.ckpt'}")
    assert not (tmp_path / "m").exists()
    finetuned = script("finetune", TEST_DATA / "phenos.tsv", chroms, markers, "--model",
                       tmp_path / "m", "--checkpoint", tmp_path / "pre", "--nepochs", 1,
                       "--cv", 1, "-q", cwd=tmp_path)
    assert finetuned.returncode == 0, finetuned.stderr
    assert "--checkpoint: the encoder started from its weights" in finetuned.stderr
    _, info, _ = load_model(tmp_path / "m" / "best.ckpt")
    assert info.params.model.num_latents == start.config.num_latents == 6
    flag = script("pretrain", chroms, markers, "--model", tmp_path / "x", "--nepochs", 0)
    assert flag.returncode == ExitCode.USAGE
    assert "gperceiver_pretrain: error: --nepochs: must be >= 1" in flag.stderr


def test_pretrained_architecture_is_taken_whole(tmp_path, example_store):
    """Pretrain with every architecture field off its default; a fit with default params
    builds exactly that network; params that contradict one field are refused before
    RUN_DIR exists, naming it."""
    odd = dict(allele_embed_dim=6, locus_allele_embed=False, position_embed_kind="fourier",
               position_embed_dim=6, position_embed_combine="add", num_latents=5,
               local_latents=False, latent_dim=12, projection_dim=9,
               num_cross_attention_heads=3, num_self_attention_heads=3, num_self_attention=2,
               num_encode_iters=2, share_weights=True, feedforward_dim=20, output_dim=10,
               num_decode_iters=2, input_window=True)
    defaults = Params()
    store_fields = {"nalleles", "ploidy"}  # from the store
    assert set(odd) == set(ARCHITECTURE) - store_fields
    assert all(getattr(defaults.model, k) != v for k, v in odd.items())
    pre = tmp_path / "pre"
    pretrain(example_store, pre, "masked",
             Params.build(**odd, epochs=1, batch_size=8, prop_x=0.5), progress=False)
    run = tmp_path / "fit"
    result = fit(example_store, TEST_DATA / "phenos.tsv", run, Params(epochs=1, batch_size=8),
                 pretrained=pre / "last.ckpt", cv=1, progress=False)
    _, info, _ = load_model(result.best)
    assert info.params.model == load_model(pre / "last.ckpt")[1].params.model
    names = {f.name for f in fields(ModelConfig)}
    contradicting = dict(  # each alone valid (even a default value: it was given)
        nalleles=5, ploidy=3, allele_embed_dim=8, locus_allele_embed=True,
        position_embed_kind="learned", position_embed_dim=8, position_embed_combine="concat",
        num_latents=7, local_latents=True, latent_dim=16, projection_dim=8,
        num_cross_attention_heads=2, num_self_attention_heads=2, num_self_attention=1,
        num_encode_iters=3, share_weights=False, feedforward_dim=24, output_dim=12,
        num_decode_iters=1, input_window=False)
    assert set(contradicting) == set(ARCHITECTURE)
    for key in ARCHITECTURE:
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({key: contradicting[key]}))
        target = tmp_path / f"refused_{key}"
        with pytest.raises(UsageError, match=f"^{key}: the params give"):
            fit(example_store, TEST_DATA / "phenos.tsv", target, load_params(path),
                pretrained=pre / "last.ckpt", cv=1, progress=False)
        assert not target.exists() and key in names


def test_readme_maps_every_original_key():
    table = (ROOT / "README.md").read_text().split("| original key |")[1].split("\n\n")[0]
    missing = [key for key in MAPPING if f"`{key}`" not in table]
    assert not missing, missing
