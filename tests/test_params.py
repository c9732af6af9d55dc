"""Params: every key in test_data/params.json with its default; bad files refused clearly."""

from __future__ import annotations

import json

import pytest

from gperceiver.cli.main import main
from gperceiver.errors import ExitCode, InputFormatError, InputNotFoundError, UsageError
from gperceiver.train.params import Params, load_params, params_from_dict, params_help
from tests.conftest import TEST_DATA, run_cli

ORIGINAL_KEYS = (
    "nalleles", "ploidy", "allele_embed_dim", "position_embed_kind", "position_embed_dim",
    "position_embed_trainable", "share_weights", "projection_dim", "feedforward_dim",
    "latent_dim", "output_dim", "num_self_attention_heads", "num_self_attention",
    "num_encode_iters", "num_decode_iters", "contrastive", "contrastive_weight",
    "num_latents", "prop_x", "prop_y", "frequency_scaler", "lr", "weight_decay",
    "batch_size", "epochs", "patience", "grad_clip", "precision", "seed", "val_fraction",
    "num_workers",
)


def test_params_json_carries_every_key_with_its_default():
    shipped = json.loads((TEST_DATA / "params.json").read_text())
    assert shipped == Params().to_dict()
    assert list(shipped) == list(Params().to_dict())  # architecture first, as ModelConfig
    assert set(ORIGINAL_KEYS) <= set(shipped)
    assert load_params(TEST_DATA / "params.json") == Params()
    assert set(params_help()) == set(shipped)


def write(tmp_path, obj, name="p.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_file_values_and_overrides(tmp_path):
    path = write(tmp_path, {"latent_dim": 64, "lr": 1, "ploidy": 4})
    p = load_params(path, epochs=7, lr=None)
    assert (p.model.latent_dim, p.lr, p.model.ploidy, p.epochs) == (64, 1.0, 4, 7)
    assert isinstance(p.lr, float)
    assert p.batch_size == Params().batch_size


@pytest.mark.parametrize(
    "content, fragment",
    [
        ({"latent_dimm": 8}, "key 'latent_dimm': unknown parameter"),
        ({"epochs": "10"}, "key 'epochs': expected int"),
        ({"epochs": 2.5}, "key 'epochs': expected int"),
        ({"epochs": True}, "key 'epochs': expected int"),
        ({"share_weights": 1}, "key 'share_weights': expected bool"),
        ({"lr": None}, "key 'lr': expected float"),
        ({"ploidy": "two"}, "key 'ploidy': expected int or null"),
        ({"epochs": 0}, "key 'epochs': must be >= 1"),
        ({"prop_y": 1.0}, "key 'prop_y': must be < 1.0"),
        ({"lr": 0}, "key 'lr': must be > 0.0"),
        ({"position_embed_kind": "sinus"}, "key 'position_embed_kind': must be one of"),
        ({"latent_dim": 30, "num_self_attention_heads": 4}, "num_self_attention_heads"),
        ({"position_embed_combine": "add", "position_embed_dim": 16}, "position_embed_dim"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_params_name_file_and_key(tmp_path, content, fragment):
    path = write(tmp_path, content)
    with pytest.raises(InputFormatError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: ")
    assert fragment in str(err.value)


def test_bad_json_names_line_and_column(tmp_path):
    path = write(tmp_path, '{\n  "lr": 0.1,\n  oops\n}')
    with pytest.raises(InputFormatError, match=r"p.json, line 3, column 3: not valid JSON"):
        load_params(path)
    with pytest.raises(InputNotFoundError):
        load_params(tmp_path / "absent.json")


def test_key_given_twice_is_refused(tmp_path):
    path = write(tmp_path, '{"lr": 0.1, "epochs": 3, "lr": 0.2}')
    with pytest.raises(InputFormatError, match=r"p.json: key 'lr' is given twice"):
        load_params(path)


def test_override_validated_as_usage_error():
    with pytest.raises(UsageError, match="batch_size: must be >= 1"):
        Params().replace(batch_size=0)
    with pytest.raises(UsageError, match="unknown parameter"):
        params_from_dict({"nope": 1}, where="command line")


def test_cli_refuses_bad_params_before_writing(tmp_path, example_store, capsys):
    path = write(tmp_path, {"epochs": 3, "latent_dimm": 8})
    run = tmp_path / "run"
    proc = run_cli("pretrain", example_store, "-o", run, "--params", path)
    assert proc.returncode == ExitCode.INPUT_FORMAT
    assert proc.stderr.strip() == (
        f"gperceiver: error: {path}: key 'latent_dimm': unknown parameter (known: "
        + ", ".join(Params().to_dict()) + ")")
    assert not run.exists()
    assert main(["pretrain", str(example_store), "-o", str(run), "--epochs", "0"]) == (
        ExitCode.USAGE)
    err = capsys.readouterr().err
    assert "epochs: must be >= 1" in err and "Traceback" not in err
    assert not run.exists()
