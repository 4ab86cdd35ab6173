"""Parking unfinished runs in results/parked/ and continuing them on another machine."""

import json
import os
import shutil
import signal
import sys

import pytest
import torch

from invtransfer import cli
from invtransfer.errors import InvTransferError
from invtransfer.train import classifier
from invtransfer.train.checkpoint import load_checkpoint
from invtransfer.train.generator import load_generator
from test_sweep import write_configs

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import parking  # noqa: E402
import protocols  # noqa: E402


def train_cli(job, out):
    assert cli.main(job.command(out, [])) == 0


def test_park_delete_restore_resume_gives_the_uninterrupted_weights(tmp_path, monkeypatch):
    cls, _ = write_configs(tmp_path)
    args = ["train", cls, "optim.epochs=4", "checkpoint_every=1", "keep_checkpoints=[2]"]
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    job = protocols.Job("classifier", "d__ce_drs__s0", args)
    train_cli(job, whole)
    ref = load_checkpoint(os.path.join(whole, job.name, "checkpoint.pt"))["model"]

    real_step, calls, resumed = classifier.ClassifierRun._train_step, {"n": 0}, []

    def step_then_sigterm(self, *a, **k):  # stop mid-epoch 3 (3 steps per epoch)
        out = real_step(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 8 and not resumed:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(classifier.ClassifierRun, "_train_step", step_then_sigterm)
    assert cli.main(job.command(cut, [])) == 128 + signal.SIGTERM  # stopped cleanly, checkpoint written
    monkeypatch.setattr(classifier.ClassifierRun, "_train_step", real_step)

    dest = str(tmp_path / "parked")
    assert parking.park(cut, dest, min_minutes=0) == [job.name]
    manifest = json.loads(open(os.path.join(dest, job.name, parking.MANIFEST)).read())
    assert not manifest["finished"] and set(manifest["files"]) == {
        "config.yaml", "metrics.jsonl", "checkpoint_e2.pt", "checkpoint.pt"}
    shutil.rmtree(cut)  # the machine (and its runs root) is gone; the checkout's parked copy is not
    assert protocols.restore_parked([job], cut, dest) == [job.name]
    assert protocols.restore_parked([job], cut, dest) == []  # its own checkpoint now: nothing to restore
    assert "resume=true" in job.command(cut, [])
    calls["n"] = 0
    resumed.append(True)
    monkeypatch.setattr(classifier.ClassifierRun, "_train_step", step_then_sigterm)  # counts; no signal now
    train_cli(job, cut)
    assert calls["n"] == 12 - 8  # only the steps after the signal: continued, not retrained
    got = load_checkpoint(os.path.join(cut, job.name, "checkpoint.pt"))["model"]
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    epochs = [json.loads(ln)["epoch"] for ln in open(os.path.join(cut, job.name, "metrics.jsonl"))]
    assert epochs == [1, 2, 3, 4]


def test_a_finished_generator_is_parked_in_a_dtype_its_decodes_allow(tmp_path):
    _, gen = write_configs(tmp_path)
    out, dest = str(tmp_path / "runs"), str(tmp_path / "parked")
    job = protocols.Job("generator", "gen", ["train-generator", gen])
    assert cli.main(job.command(out, [])) == 0
    assert parking.park(out, dest, min_minutes=0) == ["gen"]
    info = json.loads(open(os.path.join(dest, "gen", parking.MANIFEST)).read())["generator"]
    check = info["fp16_check"]
    assert check["images"] > 0 and check["style_noise_l1"] > 0
    assert info["dtype"] == ("float16" if check["ratio"] <= parking.FP16_TOLERANCE else "float32")
    ref, _ = load_generator(os.path.join(out, "gen"))
    parked, _ = load_generator(os.path.join(dest, "gen"))  # float16 weights load into the float32 model
    for (k, a), b in zip(ref.state_dict().items(), parked.state_dict().values()):
        assert b.dtype == a.dtype and torch.allclose(a, b, rtol=1e-3, atol=1e-4), k
    # float32 on request: the very weights
    parking.park(out, dest, min_minutes=0, generator_dtype="float32")
    same, _ = load_generator(os.path.join(dest, "gen"))
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), same.state_dict().values()))
    # restored into a lost folder it counts as trained: the driver does not train it again
    shutil.rmtree(out)
    assert protocols.restore_parked([job], out, dest) == ["gen"] and job.trained(out)


def _fake_run(out, name, files, wall=3600.0):
    os.makedirs(os.path.join(out, name), exist_ok=True)
    for f in files:
        path = os.path.join(out, name, f)
        if f.endswith(".pt"):
            torch.save({"wall_time_s": wall, "w": torch.zeros(3)}, path)
        else:
            with open(path, "w") as fh:
                json.dump({"wall_time_s": wall}, fh)


def test_park_skips_cheap_runs_and_unfinished_generators_and_keeps_the_size_limit(tmp_path, capsys, monkeypatch):
    out, dest = str(tmp_path / "runs"), str(tmp_path / "parked")
    _fake_run(out, "cheap", ["checkpoint.pt"], wall=60.0)
    _fake_run(out, "gen", ["state.pt"])
    _fake_run(out, "long", ["checkpoint.pt", "config.yaml"])
    _fake_run(out, "empty", [])
    assert parking.park(out, dest, min_minutes=30) == ["long"]
    log = capsys.readouterr().out
    assert "cheap: skipped, redo costs 1.0 min" in log and "gen: unfinished generator, not parked" in log
    assert sorted(os.listdir(dest)) == ["long"]
    with pytest.raises(InvTransferError, match="more than the 1e-06 MB"):
        parking.park(out, dest, min_minutes=30, limit_mb=1e-6)
    # from the command line, the full folder is one message, not a traceback
    real = parking.park
    monkeypatch.setattr(parking, "park", lambda *a, **k: real(*a, **dict(k, limit_mb=1e-6)))
    assert protocols.cli(["park", "--out", out, "--to", dest]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "more than the 1e-06 MB" in err and "Traceback" not in err


def test_parked_copies_go_once_the_run_and_everything_that_needs_it_have_finished(tmp_path):
    out, dest = str(tmp_path / "runs"), str(tmp_path / "parked")
    gen = protocols.Job("generator", "gen", ["train-generator", "g.yaml"])
    plain = protocols.Job("classifier", "d__ce_drs__s0", ["train", "c.yaml"])
    git = protocols.Job("classifier", "d__ce_drs_git__s0", ["train", "g.yaml"], needs="gen",
                        fork=("d__ce_drs__s0", 2))
    for name, files in (("gen", ["summary.json", "generator.pt"]),
                        ("d__ce_drs__s0", ["results.json", "model.pt", "checkpoint_e2.pt"])):
        _fake_run(out, name, files)
        _fake_run(dest, name, files + [parking.MANIFEST])
    jobs = [gen, plain, git]
    assert protocols.unpark_finished(jobs, out, dest) == []  # GIT has not finished: both are still needed
    assert protocols.unpark_finished([plain], out, dest) == []  # its fork point, and no GIT run in this call
    _fake_run(out, git.name, ["results.json"])
    assert sorted(protocols.unpark_finished(jobs, out, dest)) == ["d__ce_drs__s0", "gen"]
    assert os.listdir(dest) == []


def test_runs_root_comes_from_INVTRANSFER_RUNS(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INVTRANSFER_RUNS", str(tmp_path / "elsewhere"))
    assert protocols.main(["cifar", "--methods", "ce", "--dry-run"]) == 0
    assert f"out_dir={tmp_path / 'elsewhere' / 'protocols'}" in capsys.readouterr().out
    monkeypatch.delenv("INVTRANSFER_RUNS")
    assert protocols.main(["cifar", "--methods", "ce", "--dry-run"]) == 0
    assert f"out_dir={os.path.join('runs', 'protocols')} " in capsys.readouterr().out
