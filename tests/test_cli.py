"""The command line: exit status 2 and a one-paragraph error for bad input, 128 + signal after a
stop, and what each command prints and writes (train, evaluate, train-generator, sample,
generator-quality, invariance). Every case runs ``invtransfer.cli.main`` in-process on the tiny
generated data of conftest.py."""

import argparse
import json
import os
import re
import signal
import sys

import pytest
import torch
import yaml

from conftest import tiny_data_overrides
from invtransfer import cli
from invtransfer.train import classifier
from invtransfer.train.checkpoint import load_checkpoint
from test_classifier import tiny_cfg
from test_engine_options import STEPS_PER_EPOCH, train_argv
from test_generator import TINY_ARCH, data_dict, npz16  # noqa: F401 (npz16: a fixture)


# ----------------------------------------------------------------------------- train and evaluate

def test_cli_errors_are_one_paragraph(tiny_npz, tmp_path, capsys):
    assert cli.main(["train", "optim.epochs=5", "optim.decay1_epoch=9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and "decay1_epoch" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert cli.main(["evaluate", str(bad)]) == 2
    assert "truncated or not a PyTorch checkpoint" in capsys.readouterr().err
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    assert cli.main(["evaluate", str(foreign)]) == 2
    assert "not an invtransfer checkpoint" in capsys.readouterr().err


def test_print_config_shows_resolved_values(capsys):
    assert cli.main(["train", "configs/fmnist_lt/ce_drs.yaml", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "rule: drs" in out and "epochs: 50" in out and "decay1_epoch: 30" in out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_exit_status_after_a_signal(tiny_npz, tmp_path, capsys, monkeypatch, signum):
    real_step = classifier.ClassifierRun._train_step
    calls = {"n": 0}

    def step_then_signal(self, *a, **k):
        out = real_step(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == STEPS_PER_EPOCH + 2:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(classifier.ClassifierRun, "_train_step", step_then_signal)
    assert cli.main(train_argv(tiny_npz, tmp_path)) == 128 + signum  # 130 for SIGINT, 143 for SIGTERM
    err = capsys.readouterr().err
    assert f"stopped by signal {int(signum)} at epoch 1 step 2" in err and "resume=true" in err
    assert not err.startswith("error: ") and "Traceback" not in err
    ck = load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))
    assert (ck["epoch"], ck["step"]) == (1, 2)


def test_evaluate_val_json_matches_the_logged_last_epoch(tiny_npz, tmp_path, capsys):
    classifier.train(tiny_cfg(tiny_npz, tmp_path, select="last", optim={"epochs": 2}))
    run = tmp_path / "run"
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["epoch"] == 2
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--split", "val", "--json", "--device", "cpu"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["split"] == "val" and m["selected_weights"]["which"] == "last"
    assert m["error"] == pytest.approx(last["val_error"])
    assert m["balanced_accuracy"] == pytest.approx(last["val_balanced_accuracy"])
    assert "evaluating" not in capsys.readouterr().err  # not a terminal: no bar
    shown = classifier.evaluate_checkpoint(str(run), split="val", device="cpu", batch_size=7, progress=True)
    assert "evaluating" in capsys.readouterr().err and shown["error"] == pytest.approx(m["error"])


def test_progress_bars_follow_the_terminal_and_quiet(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert cli._bars(argparse.Namespace(quiet=False)) and not cli._bars(argparse.Namespace(quiet=True))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not cli._bars(argparse.Namespace(quiet=False))


def test_evaluate_text_says_empty_for_an_empty_shot_group(tiny_npz, tmp_path, capsys):
    data = tiny_data_overrides(tiny_npz, counts=[45, 40, 30, 20])  # no class > 100 or < 20 images
    classifier.train(tiny_cfg(tiny_npz, tmp_path, data=data,
                              optim={"epochs": 1, "warmup_epochs": 0, "decay1_epoch": 0, "decay2_epoch": 1}))
    capsys.readouterr()
    assert cli.main(["evaluate", str(tmp_path / "run"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"many-shot accuracy: empty \(0 classes\)", out), out
    assert re.search(r"few-shot accuracy: empty \(0 classes\)", out), out
    assert re.search(r"medium-shot accuracy: \d+\.\d\d% \(4 classes\)", out), out


# ----------------------------------------------------------------------------- the generator

def test_cli_train_sample_quality(npz16, tmp_path, capsys):
    kv = [f"data.{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in data_dict(npz16).items()]
    arch = [f"arch.{k}={v}" for k, v in TINY_ARCH.items()]
    common = kv + arch + ["iterations=2", "batch_size=4", "device=cpu", f"out_dir={tmp_path}", "name=g", "quiet=true"]
    assert cli.main(["train-generator", "configs/generator/fmnist_munit_small.yaml", *common]) == 0
    capsys.readouterr()
    ds_kv = [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in data_dict(npz16).items() if k != "name"]
    out = tmp_path / "grid.png"
    assert cli.main(["sample", str(tmp_path / "g"), "fmnist-bg-lt", *ds_kv, "--out", str(out), "--n", "3",
                     "--device", "cpu"]) == 0
    assert out.is_file() and capsys.readouterr().out.strip() == str(out)
    assert cli.main(["generator-quality", str(tmp_path / "g"), "fmnist-bg-lt", *ds_kv, "--n-per-class", "2",
                     "--styles", "3", "--device", "cpu", "--json"]) == 0
    q = json.loads(capsys.readouterr().out)
    assert q["n_images"] == 8 and q["class_preservation"] is None
    assert cli.main(["generator-quality", str(tmp_path / "g"), "fmnist-bg-lt", *ds_kv, "--n-per-class", "2",
                     "--styles", "3", "--device", "cpu"]) == 0
    assert "class preservation skipped" in capsys.readouterr().out
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert cli.main(["sample", str(bad), "fmnist-bg-lt", *ds_kv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert cli.main(["train-generator", "configs/generator/cifar10_munit.yaml", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["iterations"] * cfg["batch_size"] == 140000 and cfg["data"]["name"] == "cifar10-lt"


# ----------------------------------------------------------------------------- invariance

def test_invariance_cli_on_trained_run(tiny_npz, tmp_path, capsys):
    cfg = tiny_cfg(tiny_npz, tmp_path, data=tiny_data_overrides(tiny_npz, nuisance="bg"), optim={"epochs": 2})
    classifier.train(cfg)
    capsys.readouterr()
    run = str(tmp_path / "run")
    png = tmp_path / "e.png"
    assert cli.main(["invariance", run, run, "--transform", "bg", "--draws", "3", "--images-per-class", "4",
                     "--json", "--plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["results"]) == 2 and out["results"][0]["per_class"][0]["class_size"] == 40
    assert out["results"][0]["per_class"] == out["results"][1]["per_class"]  # seeded
    assert png.is_file()
    assert json.loads((tmp_path / "run" / "invariance.json").read_text())["transform"] == "bg"
    assert cli.main(["invariance", run, "--transform", "blur"]) == 2
    assert "unknown transform 'blur'" in capsys.readouterr().err


def test_invariance_needs_a_transform_when_the_dataset_has_none(tiny_npz, tmp_path, capsys):
    cfg = tiny_cfg(tiny_npz, tmp_path, data=tiny_data_overrides(tiny_npz, nuisance="none"), optim={"epochs": 2})
    classifier.train(cfg)
    capsys.readouterr()
    assert cli.main(["invariance", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "has no known synthetic transform" in err and "generator:PATH" in err
