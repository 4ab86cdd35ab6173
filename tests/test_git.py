"""GIT inside the classifier engine: batch composition, weighting, end to end, bad input."""

import numpy as np
import pytest
import torch

from conftest import make_images, tiny_data_overrides
from git_reference_setup import write_generator
from invtransfer.config import from_dict
from invtransfer.errors import InvTransferError
from invtransfer.train import classifier


@pytest.fixture
def npz16(tmp_path):
    x, y = make_images(60, size=16, seed=1)
    xt, yt = make_images(15, size=16, seed=2)
    path = tmp_path / "tiny16.npz"
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


def save_generator(path, channels=1, size=16, data=None):
    """An untrained generator; with ``data`` (dataset options) it records that dataset, as a
    trained generator does (GIT refuses a generator of another dataset)."""
    return write_generator(path, data, channels=channels, size=size)


def cfg_for(npz, tmp_path, **git):
    d = {"data": tiny_data_overrides(npz), "model": "resnet20", "augment": "none", "rule": "drs",
         "optim": {"epochs": 3, "batch_size": 16, "warmup_epochs": 1, "decay1_epoch": 1, "decay2_epoch": 2},
         "out_dir": str(tmp_path / "runs"), "name": "git", "quiet": True,
         "git": dict({"generator": save_generator(tmp_path / "gen.pt", data=tiny_data_overrides(npz))}, **git)}
    return from_dict(classifier.TrainConfig, d)


def test_keep_probabilities():
    counts = [500, 100, 20, 10]
    assert classifier.git_keep_probability("none", counts, None).tolist() == [1, 1, 1, 1]
    assert classifier.git_keep_probability("threshold", counts, 100).tolist() == [0, 1, 1, 1]
    lin = classifier.git_keep_probability("linear", counts, 100).tolist()
    assert lin == pytest.approx([0.0, 0.0, 80 / 90, 1.0])
    with pytest.raises(InvTransferError, match="must exceed the smallest class size"):
        classifier.git_keep_probability("linear", counts, 10)


def test_git_starts_after_e1_and_batch_has_requested_composition(npz16, tmp_path):
    run = classifier.ClassifierRun(cfg_for(npz16, tmp_path))
    assert [run.git_active(e) for e in range(3)] == [False, False, True]  # E1 = 1, GIT from E1 + 1
    bidx = torch.arange(16)
    bidx2 = torch.arange(16, 32)
    x_plain, y_plain, n0 = run.compose_batch(bidx, 2, 0)
    x, y, n = run.compose_batch(bidx, 2, 0, bidx2)
    assert n0 == 0 and n == 8
    gen, real = slice(0, 16, 2), slice(1, 16, 2)  # gen_frac 0.5: every other slot, spread over the batch
    assert torch.equal(x[real], x_plain[real]) and torch.equal(y[real], y_plain[real])  # the others untouched
    assert torch.equal(y[gen], run.y_train[bidx2[gen]])  # generated slots carry the second stream's labels
    assert not torch.allclose(x[gen], run.normalizer(run.x_train[bidx2[gen]].float()))  # and are generated
    assert not torch.equal(x[gen], x_plain[gen])
    x_again, _, _ = run.compose_batch(bidx, 2, 0, bidx2)
    assert torch.equal(x, x_again)  # seeded per step


def test_threshold_weighting_replaces_only_small_classes(npz16, tmp_path):
    # counts [40, 20, 8, 4]: only classes 2 and 3 (n <= 8) may be replaced
    run = classifier.ClassifierRun(cfg_for(npz16, tmp_path, weighting="threshold", class_size_threshold=8,
                                           gen_frac=1.0))
    bidx = torch.arange(len(run.y_train))[:64]
    bidx2 = torch.arange(len(run.y_train))[8:72]
    x_plain, y_plain, _ = run.compose_batch(bidx, 2, 0)
    x, y, n = run.compose_batch(bidx, 2, 0, bidx2)
    small = run.y_train[bidx2] >= 2
    assert n == int(small.sum()) > 0
    assert torch.equal(y[small], run.y_train[bidx2][small])
    assert torch.equal(x[~small], x_plain[~small]) and torch.equal(y[~small], y_plain[~small])


def test_git_run_end_to_end(npz16, tmp_path):
    res = classifier.train(cfg_for(npz16, tmp_path))
    assert res["method"] == "CE+DRS+GIT"
    import json
    lines = [json.loads(x) for x in (tmp_path / "runs" / "git" / "metrics.jsonl").read_text().splitlines()]
    assert [r["git"] for r in lines] == [False, False, True]
    assert lines[2]["generated"] == sum(int(len(b) * 0.5) for b in torch.arange(72).split(16))


def test_git_bad_inputs(npz16, tiny_npz, tmp_path):
    with pytest.raises(InvTransferError, match="git.gen_frac"):
        cfg_for(npz16, tmp_path, gen_frac=1.5)
    with pytest.raises(InvTransferError, match="git.class_size_threshold"):
        cfg_for(npz16, tmp_path, weighting="linear")
    # a generator for 16x16 images with a 12x12 dataset
    cfg = cfg_for(npz16, tmp_path)
    cfg.data.npz_file = str(tiny_npz)
    with pytest.raises(InvTransferError, match=r"\(1, 12, 12\).*\(1, 16, 16\)"):
        classifier.train(cfg)
    with pytest.raises(InvTransferError, match="exclude each other"):
        from_dict(classifier.TrainConfig, {"oracle": True, "git": {"generator": "x.pt"}})


def test_git_run_started_from_a_plain_runs_checkpoint_equals_one_from_scratch(npz16, tmp_path):
    """init_from: CE+DRS+GIT forked from CE+DRS's checkpoint at GIT's first epoch is bit-identical
    to CE+DRS+GIT trained from scratch (every random draw derives from seed, epoch and step)."""
    import json

    scratch = cfg_for(npz16, tmp_path)
    scratch.optim.epochs, scratch.name = 4, "scratch"
    classifier.train(scratch)
    plain = cfg_for(npz16, tmp_path)
    plain.optim.epochs, plain.name, plain.git.generator = 4, "plain", None
    plain.keep_checkpoints = [2]  # GIT's first epoch is E1 + 1 = 2
    classifier.train(plain)
    runs = tmp_path / "runs"
    assert (runs / "plain" / "checkpoint_e2.pt").is_file()
    forked = cfg_for(npz16, tmp_path)
    forked.optim.epochs, forked.name, forked.init_from = 4, "forked", str(runs / "plain" / "checkpoint_e2.pt")
    res = classifier.train(forked)
    assert res["started_from"]["epoch"] == 2 and res["method"] == "CE+DRS+GIT"
    # the checkpoint keeps where the run started, so a resumed fork still reports it
    assert torch.load(runs / "forked" / "checkpoint.pt", weights_only=True)["forked"]["epoch"] == 2
    a = torch.load(runs / "scratch" / "checkpoint.pt", weights_only=True)["model"]  # final weights
    b = torch.load(runs / "forked" / "checkpoint.pt", weights_only=True)["model"]
    c = torch.load(runs / "plain" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # GIT did change the weights
    log = [json.loads(x) for x in (runs / "forked" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4] and [r["git"] for r in log] == [False, False, True, True]
    scratch_res = json.loads((runs / "scratch" / "results.json").read_text())
    assert scratch_res["test_error"] == res["test_error"]


def test_init_from_refuses_a_checkpoint_that_already_differs(npz16, tmp_path):
    plain = cfg_for(npz16, tmp_path)
    plain.optim.epochs, plain.name, plain.git.generator = 4, "plain", None
    plain.keep_checkpoints = [3]
    classifier.train(plain)
    ck = str(tmp_path / "runs" / "plain" / "checkpoint_e3.pt")
    late = cfg_for(npz16, tmp_path)
    late.optim.epochs, late.name, late.init_from = 4, "late", ck
    with pytest.raises(InvTransferError, match=r"epoch 3 step 0, after this run's first GIT epoch \(2\)"):
        classifier.train(late)
    other = cfg_for(npz16, tmp_path)
    other.optim.epochs, other.name, other.init_from, other.optim.lr = 4, "other", ck, 0.05
    with pytest.raises(InvTransferError, match=r"cannot start from .*differs from that run's in optim\.lr"):
        classifier.train(other)
    missing = cfg_for(npz16, tmp_path)
    missing.optim.epochs, missing.name, missing.init_from = 4, "missing", str(tmp_path / "nope.pt")
    with pytest.raises(InvTransferError, match="init_from.*no such checkpoint"):
        classifier.train(missing)
