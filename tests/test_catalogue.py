"""A catalogue of bad inputs across every command, each ending in our clean error.

For each case: the documented exit code, stderr is one line naming the file (and
line/column where it applies; argparse's usage lines may precede a flag error),
no traceback, and the output path is exactly as it was (absent, or untouched).
Most cases run in-process (`main([...])`); a few run as real subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gperceiver.cli.legacy import finetune_parser, pretrain_parser
from gperceiver.cli.main import main, run_command
from gperceiver.errors import ExitCode
from gperceiver.fit import fit
from gperceiver.train.params import Params
from gperceiver.train.pretrain import pretrain
from tests.conftest import TEST_DATA, run_cli
from tests.test_fit import TINY as FIT_TINY
from tests.test_pretrain import TINY as PRETRAIN_TINY
from tests.tiny_stores import ONE_THREAD, founder_store, one_torch_thread

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

USAGE, FORMAT, NOT_FOUND, WRITE = (ExitCode.USAGE, ExitCode.INPUT_FORMAT,
                                   ExitCode.INPUT_NOT_FOUND, ExitCode.CANNOT_WRITE)


class Exploit:
    """A pickle that runs a command when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def edit(src: Path, dest: Path, line: int, change) -> Path:
    """Copy `src` to `dest` with 1-based `line` replaced by change(fields)."""
    rows = lines(src)
    fields = rows[line - 1].rstrip("\n").split("\t")
    rows[line - 1] = "\t".join(change(fields)) + "\n"
    dest.write_text("".join(rows))
    return dest


@pytest.fixture(scope="module")
def w(tmp_path_factory, example_store) -> SimpleNamespace:
    """Every good and bad input the cases use, made once."""
    d = tmp_path_factory.mktemp("catalogue")
    w = SimpleNamespace(d=d, store=example_store, phenos=TEST_DATA / "phenos.tsv",
                        markers=TEST_DATA / "markers.tsv", chroms=TEST_DATA / "chroms.tsv")
    # markers / chroms TSVs
    w.code_x = edit(w.markers, d / "code_x.tsv", 3, lambda f: f[:5] + ["x"] + f[6:])
    w.short_row = edit(w.markers, d / "short_row.tsv", 4, lambda f: f[:-3])
    w.dup_sample = edit(w.markers, d / "dup_sample.tsv", 3, lambda f: ["g0"] + f[1:])
    w.pos_abc = edit(w.chroms, d / "pos_abc.tsv", 5, lambda f: f[:2] + ["abc"])
    w.unknown_marker = edit(w.chroms, d / "unknown_marker.tsv", 2,
                            lambda f: [f[0], "zz9", f[2]])
    w.decoder = d / "decoder.json"
    w.decoder.write_text('{"0": [0, 0], "3": [0, 0],\n')
    # VCF, PLINK, VCZ
    w.vcf_garbage = d / "garbage.vcf"
    w.vcf_garbage.write_text("this is not a VCF\n")
    w.vcf_bad_gt = d / "bad_gt.vcf"
    w.vcf_bad_gt.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=1>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ta\tb\n"
        "1\t10\tr1\tA\tG\t.\tPASS\t.\tGT\t0/1\t1/1\n"
        "1\t5\tr2\tA\tG\t.\tPASS\t.\tGT\t0/1\t1/1\n")  # unsorted
    w.vcf_allele = d / "allele7.vcf"
    w.vcf_allele.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=1>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ta\tb\n"
        "1\t5\tr1\tA\tG\t.\tPASS\t.\tGT\t0/1\t1/1\n"
        "1\t10\tr2\tA\tG\t.\tPASS\t.\tGT\t0/7\t1/1\n")  # allele 7 of 2
    (d / "nobim.fam").write_text("f a 0 0 0 -9\n")
    (d / "nobim.bed").write_bytes(bytes([0x6C, 0x1B, 0x01]))
    w.plink_nobim = d / "nobim"
    w.not_zarr = d / "not.vcz"
    w.not_zarr.mkdir()
    (w.not_zarr / "readme.txt").write_text("hello\n")
    # stores
    w.store_file = d / "file.zarr"
    w.store_file.write_text("not a store\n")
    w.store_novar = d / "novar.zarr"
    shutil.copytree(example_store, w.store_novar)
    shutil.rmtree(w.store_novar / "variant_contig")
    (w.store_novar / ".zmetadata").unlink()  # the consolidated metadata would still list it
    w.other = d / "other.zarr"
    founder_store(w.other, n_samples=40, n_variants=60, n_alleles=2)
    # params
    w.p_ok = d / "tiny.json"
    w.p_ok.write_text(json.dumps({**PRETRAIN_TINY, "epochs": 1, "batch_size": 8}))
    w.p_json = d / "notjson.json"
    w.p_json.write_text('{\n  "epochs": 3,\n  "lr": ,\n}\n')
    w.p_unknown = d / "unknown.json"
    w.p_unknown.write_text(json.dumps({"epochs": 2, "latent_dims": 8}))
    w.p_type = d / "type.json"
    w.p_type.write_text(json.dumps({"latent_dim": "big"}))
    w.p_range = d / "range.json"
    w.p_range.write_text(json.dumps({"dropout": 1.5}))
    w.p_list = d / "list.json"
    w.p_list.write_text("[1, 2, 3]\n")
    # phenotypes
    w.ph_noblock = d / "noblock.tsv"
    w.ph_noblock.write_text("name\tresponse\ncv\ng0\t1.0\n")
    w.ph_noblock.write_text("name\tresponse\tcv\ng0\t1.0\t0\ng1\t2.0\t1\n")
    w.ph_text = edit(w.phenos, d / "ph_text.tsv", 4, lambda f: [f[0], "tall"] + f[2:])
    w.ph_names = d / "ph_names.tsv"
    w.ph_names.write_text("name\tresponse\tblock\tcv\nzz1\t1.0\t0\t0\nzz2\t2.0\t0\t1\n")
    w.ph_cv = edit(w.phenos, d / "ph_cv.tsv", 3, lambda f: f[:3] + ["one"])
    w.ph_binary = d / "ph_binary.tsv"
    w.ph_binary.write_text(
        "name\tresponse\tblock\n" + "".join(f"g{i}\t{i % 3}.5\t0\n" for i in range(20)))
    w.ph_block = d / "ph_block.tsv"  # gaps are fine (even huge ones); negatives are not
    w.ph_block.write_text("name\tresponse\tblock\ng0\t1.0\t1000000000000\ng1\t2.0\t-3\n")
    w.ph_founders = d / "ph_founders.tsv"
    w.ph_founders.write_text(
        "name\tresponse\tblock\n" + "".join(f"s{i}\t{i}.5\t0\n" for i in range(40)))
    w.labels_bad = d / "labels.tsv"
    w.labels_bad.write_text("just one column\nx\n")
    # trained runs and checkpoints
    w.pre = d / "pre"
    pretrain(example_store, w.pre, "masked",
             Params.build(**{**PRETRAIN_TINY, "batch_size": 8}, epochs=1), progress=False)
    w.fit = d / "fit"
    fit(example_store, w.phenos, w.fit, Params.build(**{**FIT_TINY, "batch_size": 8}, epochs=1),
        progress=False)
    w.truncated = d / "truncated.ckpt"
    w.truncated.write_bytes((w.pre / "best.ckpt").read_bytes()[:300])
    w.marker = d / "pwned"
    w.evil = d / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "x": Exploit(w.marker)}, w.evil)
    w.noise = d / "noise.ckpt"
    w.noise.write_bytes(np.random.default_rng(0).bytes(2000))
    w.plain = d / "plain.ckpt"  # loads safely, but is no gperceiver checkpoint
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 0}, w.plain)
    good = torch.load(w.pre / "best.ckpt", weights_only=True)
    weights = dict(good["state_dict"])
    w.shape = d / "shape.ckpt"  # a tensor of the wrong shape
    torch.save({**good, "state_dict": {**weights, "model.latents": torch.zeros(3, 3)}}, w.shape)
    w.nokeys = d / "nokeys.ckpt"  # half the weights gone
    torch.save({**good, "state_dict": dict(list(weights.items())[::2])}, w.nokeys)
    # an earlier output that must stay untouched
    w.exists = d / "exists"
    w.exists.mkdir()
    (w.exists / "keep.txt").write_text("mine\n")
    w.exists_file = d / "exists.tsv"
    w.exists_file.write_text("mine\n")
    return w


@dataclass
class Case:
    argv: list
    code: int
    names: list  # substrings the error line holds: the file, line/column, the problem
    out: Path | list | None  # must be as before the run (absent, or untouched)
    entry: str = "gperceiver"
    flag_error: bool = False  # argparse's usage lines come first
    extra: dict = field(default_factory=dict)


def cases(w) -> dict[str, Case]:
    s, o = str(w.store), w.d / "out"
    T = ["convert", "tsv", "--chroms"]
    lp = ["--model", str(o), "-q"]
    return {
        # convert tsv
        "tsv: markers missing": Case(
            [*T, w.chroms, "--markers", w.d / "nope.tsv", "-o", o], NOT_FOUND,
            ["nope.tsv"], o),
        "tsv: a code that is not a number": Case(
            [*T, w.chroms, "--markers", w.code_x, "-o", o], FORMAT,
            ["code_x.tsv", "line 3", "m4"], o),
        "tsv: a short row": Case(
            [*T, w.chroms, "--markers", w.short_row, "-o", o], FORMAT,
            ["short_row.tsv", "line 4"], o),
        "tsv: a sample twice": Case(
            [*T, w.chroms, "--markers", w.dup_sample, "-o", o], FORMAT,
            ["dup_sample.tsv", "g0"], o),
        "tsv: a position that is not a number": Case(
            [*T, w.pos_abc, "--markers", w.markers, "-o", o], FORMAT,
            ["pos_abc.tsv", "line 5"], o),
        "tsv: chroms names a marker the markers lack": Case(
            [*T, w.unknown_marker, "--markers", w.markers, "-o", o], FORMAT,
            ["unknown_marker.tsv", "zz9"], o),
        "tsv: decoder not JSON": Case(
            [*T, w.chroms, "--markers", w.markers, "--decoder", w.decoder, "-o", o], FORMAT,
            ["decoder.json"], o),
        "tsv: output exists": Case(
            [*T, w.chroms, "--markers", w.markers, "-o", w.exists], WRITE,
            [str(w.exists), "--force"], w.exists),
        "tsv: --samples-chunk 0": Case(
            [*T, w.chroms, "--markers", w.markers, "-o", o, "--samples-chunk", "0"], USAGE,
            ["--samples-chunk"], o),
        "tsv: --ploidy not a number": Case(
            [*T, w.chroms, "--markers", w.markers, "-o", o, "--ploidy", "two"], USAGE,
            ["--ploidy"], o, flag_error=True),
        # convert vcf / plink / vcz
        "vcf: not a VCF": Case(["convert", "vcf", w.vcf_garbage, "-o", o], FORMAT,
                                ["garbage.vcf"], o),
        "vcf: records out of order": Case(["convert", "vcf", w.vcf_bad_gt, "-o", o], FORMAT,
                                          ["bad_gt.vcf", "sorted"], o),
        "vcf: an allele index beyond REF and ALT": Case(
            ["convert", "vcf", w.vcf_allele, "-o", o], FORMAT,
            ["allele7.vcf", "variant 2 ('r2') has allele index 7"], o),
        "vcf: missing": Case(["convert", "vcf", w.d / "nope.vcf.gz", "-o", o], NOT_FOUND,
                             ["nope.vcf.gz"], o),
        "plink: no .bim": Case(["convert", "plink", w.plink_nobim, "-o", o], NOT_FOUND,
                               ["nobim.bim"], o),
        "vcz: not a Zarr": Case(["convert", "vcz", w.not_zarr, "-o", o], FORMAT,
                                ["not.vcz"], o),
        # info
        "info: no store": Case(["info", w.d / "none.zarr"], NOT_FOUND, ["none.zarr"], None),
        "info: a file, not a store": Case(["info", w.store_file], FORMAT, ["file.zarr"], None),
        "info: a variable missing": Case(["info", w.store_novar], FORMAT,
                                         ["novar.zarr", "variant_contig"], None),
        # pretrain
        "pretrain: params not JSON": Case(
            ["pretrain", s, "-o", o, "--params", w.p_json], FORMAT,
            ["notjson.json", "line 3", "column"], o),
        "pretrain: unknown parameter": Case(
            ["pretrain", s, "-o", o, "--params", w.p_unknown], FORMAT,
            ["unknown.json", "latent_dims"], o),
        "pretrain: parameter of the wrong type": Case(
            ["pretrain", s, "-o", o, "--params", w.p_type], FORMAT,
            ["type.json", "latent_dim"], o),
        "pretrain: parameter out of range": Case(
            ["pretrain", s, "-o", o, "--params", w.p_range], FORMAT,
            ["range.json", "dropout"], o),
        "pretrain: params not an object": Case(
            ["pretrain", s, "-o", o, "--params", w.p_list], FORMAT, ["list.json"], o),
        "pretrain: --epochs 0": Case(["pretrain", s, "-o", o, "--epochs", "0"], USAGE,
                                     ["epochs"], o),
        "pretrain: store missing": Case(
            ["pretrain", w.d / "none.zarr", "-o", o, "--params", w.p_ok], NOT_FOUND,
            ["none.zarr"], o),
        "pretrain: store missing a variable": Case(
            ["pretrain", w.store_novar, "-o", o, "--params", w.p_ok], FORMAT,
            ["novar.zarr", "variant_contig"], o),
        "pretrain: --resume a truncated last.ckpt": Case(
            ["pretrain", s, "-o", w.d / "trunc_run", "--resume"], FORMAT,
            ["trunc_run/last.ckpt"], w.d / "trunc_run",
            extra={"last": "truncated"}),
        "pretrain: --resume a fit run": Case(
            ["pretrain", s, "-o", w.d / "fitcopy", "--resume", "-q"], USAGE,
            ["fitcopy/last.ckpt"], w.d / "fitcopy", extra={"copy": "fit"}),
        "pretrain: unknown --accelerator": Case(
            ["pretrain", s, "-o", o, "--params", w.p_ok, "--accelerator", "foo"], USAGE,
            ["--accelerator foo", "invalid accelerator"], o),
        # fit
        "fit: phenotypes without a block column": Case(
            ["fit", s, w.ph_noblock, "-o", o, "--params", w.p_ok], FORMAT,
            ["noblock.tsv", "block"], o),
        "fit: a response that is not a number": Case(
            ["fit", s, w.ph_text, "-o", o, "--params", w.p_ok], FORMAT,
            ["ph_text.tsv", "line 4", "response"], o),
        "fit: no phenotype names the store's samples": Case(
            ["fit", s, w.ph_names, "-o", o, "--params", w.p_ok], FORMAT,
            ["ph_names.tsv", "name"], o),
        "fit: a cv that is not an integer": Case(
            ["fit", s, w.ph_cv, "-o", o, "--params", w.p_ok, "--cv", "0"], FORMAT,
            ["ph_cv.tsv", "line 3", "cv"], o),
        "fit: binary responses that are not 0/1": Case(
            ["fit", s, w.ph_binary, "-o", o, "--params", w.p_ok, "--objective", "binary"],
            FORMAT, ["ph_binary.tsv"], o),
        "fit: phenotypes missing": Case(
            ["fit", s, w.d / "nope.tsv", "-o", o, "--params", w.p_ok], NOT_FOUND,
            ["nope.tsv"], o),
        "fit: --pretrained truncated": Case(
            ["fit", s, w.phenos, "-o", o, "--params", w.p_ok, "--pretrained", w.truncated],
            FORMAT, ["truncated.ckpt"], o),
        "fit: --pretrained pickle with code": Case(
            ["fit", s, w.phenos, "-o", o, "--params", w.p_ok, "--pretrained", w.evil],
            FORMAT, ["evil.ckpt", "refused"], o),
        "fit: --pretrained on other variants": Case(
            ["fit", w.other, w.ph_founders, "-o", o, "--params", w.p_ok, "--pretrained",
             w.pre / "best.ckpt"], FORMAT, ["other.zarr", "not the model's variants"], o),
        "fit: --pretrained with weights missing": Case(
            ["fit", s, w.phenos, "-o", o, "--params", w.p_ok, "--pretrained", w.nokeys],
            FORMAT, ["nokeys.ckpt", "Missing key(s) in state_dict"], o),
        "fit: unknown --objective": Case(
            ["fit", s, w.phenos, "-o", o, "--objective", "poisson"], USAGE,
            ["--objective"], o, flag_error=True),
        "fit: an accelerator this machine lacks": Case(
            ["fit", s, w.phenos, "-o", o, "--params", w.p_ok, "--accelerator", "tpu"], USAGE,
            ["--accelerator tpu"], o),
        # predict
        "predict: a pretraining checkpoint": Case(
            ["predict", w.pre / "best.ckpt", s, "-o", o], FORMAT,
            ["best.ckpt", "pretrain"], o),
        "predict: a store with other variants": Case(
            ["predict", w.fit, w.other, "-o", o], FORMAT,
            ["variants"], o),
        "predict: run folder missing": Case(
            ["predict", w.d / "norun", s, "-o", o], NOT_FOUND, ["norun"], o),
        "predict: random bytes for a checkpoint": Case(
            ["predict", w.noise, s, "-o", o], FORMAT, ["noise.ckpt"], o),
        "predict: --batch-size 0": Case(
            ["predict", w.fit, s, "-o", o, "--batch-size", "0"], USAGE, ["--batch-size must be >= 1"], o),
        "predict: output exists": Case(
            ["predict", w.fit, s, "-o", w.exists_file], WRITE, ["exists.tsv"], w.exists_file),
        # embed
        "embed: truncated checkpoint": Case(
            ["embed", w.truncated, s, "-o", o], FORMAT, ["truncated.ckpt"], o),
        "embed: not a gperceiver checkpoint": Case(
            ["embed", w.plain, s, "-o", o], FORMAT, ["plain.ckpt"], o),
        "embed: a weight of the wrong shape": Case(
            ["embed", w.shape, s, "-o", o], FORMAT,
            ["shape.ckpt", "weights do not fit the model: size mismatch for latents"], o),
        "embed: output exists": Case(
            ["embed", w.pre / "best.ckpt", s, "-o", w.exists], WRITE, ["exists"], w.exists),
        # impute
        "impute: a fit checkpoint": Case(
            ["impute", w.fit / "best.ckpt", s, "-o", o], FORMAT,
            ["best.ckpt", "a fit checkpoint", "masked pretraining"], o),
        "impute: a store with other variants": Case(
            ["impute", w.pre / "best.ckpt", w.other, "-o", o], FORMAT,
            ["variants"], o),
        "impute: pickle with code": Case(
            ["impute", w.evil, s, "-o", o], FORMAT, ["evil.ckpt", "refused"], o),
        # baseline
        "baseline: a response that is not a number": Case(
            ["baseline", s, w.ph_text, "-o", o], FORMAT, ["ph_text.tsv", "line 4"], o),
        "baseline: a negative block number": Case(
            ["baseline", s, w.ph_block, "-o", o], FORMAT,
            ["ph_block.tsv", "line 3, column block", "block '-3' is negative"], o),
        "baseline: store is a file": Case(
            ["baseline", w.store_file, w.phenos, "-o", o], FORMAT, ["file.zarr"], o),
        "baseline: --cv without such fold": Case(
            ["baseline", s, w.phenos, "-o", o, "--cv", "7"], USAGE, ["--cv 7"], o),
        # plot
        "plot: path missing": Case(["plot", w.d / "nothing", "-o", o], NOT_FOUND,
                                   ["nothing"], o),
        "plot: a folder that is neither run nor store": Case(
            ["plot", w.not_zarr, "-o", o], FORMAT, ["not.vcz"], o),
        "plot: --block without --phenos": Case(
            ["plot", w.fit, "-o", o, "--block", "1"], USAGE, ["--block"], o),
        # the original scripts
        "gperceiver_pretrain: chroms missing": Case(
            [w.d / "nochroms.tsv", w.markers, *lp], NOT_FOUND, ["nochroms.tsv"], o,
            entry="gperceiver_pretrain"),
        "gperceiver_pretrain: unknown parameter": Case(
            [w.chroms, w.markers, *lp, "--params", w.p_unknown], FORMAT,
            ["unknown.json", "latent_dims"], o, entry="gperceiver_pretrain"),
        "gperceiver_pretrain: a code that is not a number": Case(
            [w.chroms, w.code_x, *lp, "--params", w.p_ok], FORMAT,
            ["code_x.tsv", "line 3"], [o, w.d / ".gperceiver-cache"],
            entry="gperceiver_pretrain"),
        "gperceiver_finetune: a response that is not a number": Case(
            [w.ph_text, w.chroms, w.markers, *lp, "--params", w.p_ok], FORMAT,
            ["ph_text.tsv", "line 4"], o, entry="gperceiver_finetune"),
        "gperceiver_finetune: --checkpoint pickle with code": Case(
            [w.phenos, w.chroms, w.markers, *lp, "--params", w.p_ok, "--checkpoint", w.evil],
            FORMAT, ["evil.ckpt", "refused"], o, entry="gperceiver_finetune"),
        "gperceiver_finetune: bad --block-strategy": Case(
            [w.phenos, w.chroms, w.markers, *lp, "--block-strategy", "mean"], USAGE,
            ["--block-strategy"], o, entry="gperceiver_finetune", flag_error=True),
    }


class _AnyPath:
    """Stands in for the fixture when only the case names are needed (collection)."""

    def __getattr__(self, name: str) -> Path:
        return Path(name)


def _case_names() -> list[str]:
    return list(cases(_AnyPath()))


def snapshot(path: Path | None) -> dict | None:
    """Every file under `path` with its content hash (None: nothing there)."""
    if path is None or not (path.exists() or path.is_symlink()):
        return None
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(path.rglob("*"))}


def snapshots(out) -> list:
    return [snapshot(p) for p in (out if isinstance(out, list) else [out])]


def invoke(entry: str, argv: list[str]) -> int:
    """One command in this process, as its console script would run it."""
    try:
        if entry == "gperceiver":
            return main(argv)
        parser = pretrain_parser() if entry == "gperceiver_pretrain" else finetune_parser()
        return run_command(parser.parse_args(argv))
    except SystemExit as e:  # argparse's own usage errors
        return e.code


def prepare(w, case: Case) -> None:
    """Set up a run folder a case resumes (fresh each time)."""
    run = case.out
    if "last" in case.extra:
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir()
        shutil.copyfile(w.truncated, run / "last.ckpt")
    if "copy" in case.extra:
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(getattr(w, case.extra["copy"]), run)


def check(case: Case, code: int, err: str, before) -> None:
    text = err.strip()
    assert "Traceback" not in err, err
    assert code == case.code, err
    out_lines = text.splitlines()
    if case.flag_error:
        assert out_lines[0].startswith("usage:"), err
        out_lines = out_lines[-1:]
    assert len(out_lines) == 1, err
    line = out_lines[0]
    assert line.startswith("gperceiver") and ": error: " in line, err
    assert "unexpected" not in line, err
    for part in case.names:
        assert str(part) in line, f"{part!r} not in {line!r}"
    assert snapshots(case.out) == before, "the output path changed"


@pytest.mark.parametrize("name", _case_names())
def test_bad_input(name, w, capsys):
    case = cases(w)[name]
    prepare(w, case)
    shutil.rmtree(w.d / "out", ignore_errors=True)
    before = snapshots(case.out)
    code = invoke(case.entry, [str(a) for a in case.argv])
    check(case, code, capsys.readouterr().err, before)
    assert not w.marker.exists()  # no pickle ever ran code


def test_catalogue_covers_every_command():
    names = _case_names()
    assert len(names) >= 25
    commands = {"tsv", "vcf", "plink", "vcz", "info", "pretrain", "fit", "predict", "embed",
                "impute", "baseline", "plot", "gperceiver_pretrain", "gperceiver_finetune"}
    assert commands <= {n.split(":")[0] for n in names}


@pytest.mark.parametrize("name", [
    "tsv: a code that is not a number", "pretrain: params not JSON",
    "predict: a pretraining checkpoint", "gperceiver_finetune: a response that is not a number",
])
def test_bad_input_in_a_real_process(name, w):
    """The same cases through the installed entry points, as a user runs them."""
    case = cases(w)[name]
    shutil.rmtree(w.d / "out", ignore_errors=True)
    before = snapshots(case.out)
    argv = [str(a) for a in case.argv]
    if case.entry == "gperceiver":
        proc = run_cli(*argv, env=ONE_THREAD)
    else:
        import subprocess
        import sys

        script = f"from gperceiver.cli.legacy import finetune_main; import sys; " \
                 f"sys.argv = ['gperceiver_finetune', *{argv!r}]; finetune_main()"
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env={**os.environ, **ONE_THREAD}, timeout=600)
    check(case, proc.returncode, proc.stderr, before)
    assert proc.stdout == ""
