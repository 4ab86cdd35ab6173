"""The classifier training loop: outputs, schedule, rules, exact resume, bad input."""

import json
import os
import signal

import pytest
import torch

from conftest import tiny_data_overrides
from invtransfer.config import from_dict, load_config, to_dict
from invtransfer.errors import InvTransferError
from invtransfer.train import classifier, losses
from invtransfer.train.checkpoint import TrainingInterrupted, atomic_save, load_checkpoint


def tiny_cfg(npz, out_dir, **kw):
    d = {"data": tiny_data_overrides(npz), "model": "resnet20", "augment": "crop_flip", "crop_padding": 2,
         "optim": {"epochs": 3, "batch_size": 16, "warmup_epochs": 1, "decay1_epoch": 1, "decay2_epoch": 2,
                   "lr": 0.05},
         "out_dir": str(out_dir), "name": "run", "quiet": True, "checkpoint_every": 1, "rule": "drs"}
    for k, v in kw.items():
        if isinstance(v, dict):
            d[k] = {**d.get(k, {}), **v}
        else:
            d[k] = v
    return from_dict(classifier.TrainConfig, d)


def test_learning_rate_schedule_matches_ldam_drw():
    o = classifier.OptimConfig()
    assert classifier.learning_rate(o, 0) == pytest.approx(0.02)
    assert classifier.learning_rate(o, 4) == pytest.approx(0.1)
    assert classifier.learning_rate(o, 159) == pytest.approx(0.1)
    assert classifier.learning_rate(o, 160) == pytest.approx(0.001)
    assert classifier.learning_rate(o, 179) == pytest.approx(0.001)
    assert classifier.learning_rate(o, 180) == pytest.approx(1e-5)
    cos = classifier.OptimConfig(schedule="cosine", epochs=10, warmup_epochs=0, decay1_epoch=5, decay2_epoch=8)
    assert classifier.learning_rate(cos, 0) == pytest.approx(0.1)
    assert classifier.learning_rate(cos, 5) == pytest.approx(0.05)


def test_scale_to_epochs_trains_a_short_run_on_the_scaled_schedule():
    """optim.scale_to_epochs=N trains N epochs with warm-up, E1 and E2 at their fraction of the
    preset's schedule; the scaled values are the config's (and config.yaml's), and load back as they are."""
    cifar = load_config(classifier.TrainConfig, "configs/cifar10_lt/ce_drs.yaml", ["optim.scale_to_epochs=20"])
    o = cifar.optim
    assert (o.epochs, o.warmup_epochs, o.decay1_epoch, o.decay2_epoch, cifar.e1) == (20, 1, 16, 18, 16)
    assert [classifier.learning_rate(o, e) for e in (0, 15, 16, 17, 18, 19)] == pytest.approx(
        [0.1, 0.1, 1e-3, 1e-3, 1e-5, 1e-5])
    assert to_dict(from_dict(classifier.TrainConfig, to_dict(cifar))) == to_dict(cifar)
    for preset, n, want in (("fmnist_lt", 10, (10, 1, 6, 8)), ("fmnist_lt", 1, (1, 0, 0, 1)),
                            ("cifar10_lt", 3, (3, 0, 2, 3))):
        o = load_config(classifier.TrainConfig, f"configs/{preset}/ce_drs.yaml", [f"optim.scale_to_epochs={n}"]).optim
        assert (o.epochs, o.warmup_epochs, o.decay1_epoch, o.decay2_epoch) == want, (preset, n)


def test_a_short_schedule_that_contradicts_itself_is_refused_in_one_message():
    cifar = "configs/cifar10_lt/ce_drs.yaml"
    with pytest.raises(InvTransferError, match=r"decay1_epoch' \(E1=160\) must be smaller than optim\.epochs=3\. .*"
                                               r"set optim\.scale_to_epochs"):
        load_config(classifier.TrainConfig, cifar, ["optim.epochs=3"])
    # the default warm-up of 5 epochs no longer silently replaces the decays of a 3-epoch run
    with pytest.raises(InvTransferError, match=r"warmup_epochs'=5 reaches past optim\.decay1_epoch \(E1=1\): .* "
                                               r"epochs 1 to 2"):
        load_config(classifier.TrainConfig, cifar, ["optim.epochs=3", "optim.decay1_epoch=1"])
    with pytest.raises(InvTransferError) as every:
        load_config(classifier.TrainConfig, cifar, ["optim.epochs=3", "optim.decay1_epoch=1", "optim.decay2_epoch=1"])
    assert "(E2=1) must be larger" in str(every.value) and "warmup_epochs'=5 reaches past" in str(every.value)
    with pytest.raises(InvTransferError, match="longer than optim.epochs=3: the run would end inside the warm-up"):
        load_config(classifier.TrainConfig, cifar, ["optim.schedule=cosine", "optim.epochs=3", "optim.decay1_epoch=1",
                                                    "optim.decay2_epoch=2"])


def test_method_labels():
    mk = lambda **kw: from_dict(classifier.TrainConfig, kw)  # noqa: E731
    assert classifier.method_label(mk()) == "CE"
    assert classifier.method_label(mk(rule="drs")) == "CE+DRS"
    assert classifier.method_label(mk(loss={"name": "ldam"}, rule="drw")) == "LDAM-DRW"
    assert classifier.method_label(mk(loss={"name": "balanced_softmax"}, rule="drs")) == "BalancedSoftmax+DRS"
    assert classifier.method_label(mk(rule="drs", oracle=True)) == "CE+DRS+Oracle"
    assert classifier.method_label(mk(rule="drs", git={"generator": "g"})) == "CE+DRS+GIT"
    assert classifier.method_label(mk(rule="drs", git={"generator": "g", "filter": "top1", "filter_classifier": "c"})) \
        == "CE+DRS+GIT+Filter"


def test_the_loss_class_decides_the_cosine_head_for_training_and_loading(tiny_npz, tmp_path, monkeypatch):
    """The head a run trains with and the head load_classifier rebuilds come from one place (the
    loss class): a loss that asks for a cosine head gets one in both, or loading would fail."""
    monkeypatch.setattr(losses.FocalLoss, "needs_cosine_head", True)
    cfg = tiny_cfg(tiny_npz, tmp_path, loss={"name": "focal"}, augment="none",
                   optim={"epochs": 1, "warmup_epochs": 0, "decay1_epoch": 0, "decay2_epoch": 1})
    assert cfg.uses_cosine_head and not tiny_cfg(tiny_npz, tmp_path, loss={"name": "focal"},
                                                 cosine_head=False).uses_cosine_head
    classifier.train(cfg)
    model, _ = classifier.load_classifier(str(tmp_path / "run"))
    assert model.cosine_head


def test_a_loaded_ldam_model_gives_the_logits_its_loss_trained(tiny_npz, tmp_path):
    """LDAM trains softmax(s * cosine): a loaded model outputs s x cosines, so its probabilities
    (eKLD, GIT's filter) are not the near-uniform softmax of cosines in [-1, 1]."""
    cfg = tiny_cfg(tiny_npz, tmp_path, loss={"name": "ldam", "ldam_scale": 20.0}, augment="none",
                   optim={"epochs": 1, "warmup_epochs": 0, "decay1_epoch": 0, "decay2_epoch": 1})
    classifier.train(cfg)
    model, meta = classifier.load_classifier(str(tmp_path / "run"))
    assert model.cosine_head and meta["logit_scale"] == 20.0
    x = torch.randn(4, *meta["image_shape"])
    out = model(x)
    model.fc.scale = 1.0  # the head as training used it
    cos = model(x)
    assert cos.abs().max() <= 1.0 + 1e-6 and torch.allclose(out, 20.0 * cos, atol=1e-5)
    ce = tiny_cfg(tiny_npz, tmp_path / "ce", augment="none",
                  optim={"epochs": 1, "warmup_epochs": 0, "decay1_epoch": 0, "decay2_epoch": 1})
    classifier.train(ce)
    assert classifier.load_classifier(str(tmp_path / "ce" / "run"))[1]["logit_scale"] == 1.0


def test_rules_switch_at_e1(tiny_npz, tmp_path):
    for rule, samplers, weighted in [("erm", "uuu", "---"), ("drs", "ubb", "---"), ("drw", "uuu", "-ww"),
                                     ("resample", "bbb", "---"), ("reweight", "uuu", "www")]:
        run = classifier.ClassifierRun(tiny_cfg(tiny_npz, tmp_path / rule, rule=rule))
        assert "".join(run.sampler_for(e)[0] for e in range(3)) == samplers, rule
        assert "".join("w" if run.class_weight_for(e) is not None else "-" for e in range(3)) == weighted, rule


def test_short_run_writes_every_output(tiny_npz, tmp_path):
    res = classifier.train(tiny_cfg(tiny_npz, tmp_path))
    run_dir = tmp_path / "run"
    for f in ("config.yaml", "metrics.jsonl", "metrics.csv", "results.json", "checkpoint.pt", "model.pt",
              "curves.png", "per_class_accuracy.png"):
        assert (run_dir / f).is_file() and (run_dir / f).stat().st_size > 0, f
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert [r["sampler"] for r in lines] == ["uniform", "balanced", "balanced"]
    on_disk = json.loads((run_dir / "results.json").read_text())
    for key in ("dataset", "method", "seed", "train_class_counts", "test_error", "test_balanced_accuracy",
                "per_class_accuracy", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy",
                "selected_weights", "wall_time_s", "device", "versions", "config"):
        assert key in on_disk, key
    assert on_disk["train_class_counts"] == [40, 20, 8, 4]
    assert on_disk["method"] == "CE+DRS" and res["test_error"] == on_disk["test_error"]
    assert on_disk["selected_weights"]["which"] in ("best_val", "last")
    assert on_disk["config"]["data"]["profile"] == "list"  # resolved dataset options are stored
    # evaluate reproduces the test metrics from the saved weights
    ev = classifier.evaluate_checkpoint(str(run_dir), split="test", device="cpu")
    assert ev["error"] == pytest.approx(on_disk["test_error"])


def test_existing_run_dir_is_not_reused(tiny_npz, tmp_path):
    classifier.train(tiny_cfg(tiny_npz, tmp_path, optim={"epochs": 2}))
    before = (tmp_path / "run" / "results.json").read_bytes()
    with pytest.raises(InvTransferError, match="already exists.*resume=true.*overwrite=true"):
        classifier.train(tiny_cfg(tiny_npz, tmp_path, optim={"epochs": 2}))
    assert (tmp_path / "run" / "results.json").read_bytes() == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_then_resume_gives_identical_weights(tiny_npz, tmp_path, monkeypatch, signum):
    classifier.train(tiny_cfg(tiny_npz, tmp_path / "a"))
    ref = load_checkpoint(str(tmp_path / "a" / "run" / "checkpoint.pt"))["model"]

    real_step = classifier.ClassifierRun._train_step
    calls = {"n": 0}

    def step_then_signal(self, *a, **k):
        out = real_step(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 7:  # mid-epoch 2 (5 steps per epoch)
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(classifier.ClassifierRun, "_train_step", step_then_signal)
    with pytest.raises(TrainingInterrupted, match=f"signal {int(signum)} at epoch 1 step 2") as stopped:
        classifier.train(tiny_cfg(tiny_npz, tmp_path / "b"))
    assert stopped.value.signum == signum
    monkeypatch.setattr(classifier.ClassifierRun, "_train_step", real_step)
    ck = load_checkpoint(str(tmp_path / "b" / "run" / "checkpoint.pt"))
    assert (ck["epoch"], ck["step"]) == (1, 2)
    assert ck["wall_time_s"] > 0
    ck["wall_time_s"] = 1000.0  # the interrupted process's time must carry over into results.json
    atomic_save(ck, str(tmp_path / "b" / "run" / "checkpoint.pt"))
    res = classifier.train(tiny_cfg(tiny_npz, tmp_path / "b", resume=True))
    assert 1000 < res["wall_time_s"] < 1000 + 600
    got = load_checkpoint(str(tmp_path / "b" / "run" / "checkpoint.pt"))["model"]
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    lines = (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_resume_with_other_config_names_the_keys(tiny_npz, tmp_path):
    classifier.train(tiny_cfg(tiny_npz, tmp_path, optim={"epochs": 2}))
    with pytest.raises(InvTransferError, match="optim.lr"):
        classifier.train(tiny_cfg(tiny_npz, tmp_path, optim={"epochs": 2, "lr": 0.5}, resume=True))


def test_non_finite_loss_stops_with_epoch_and_step(tiny_npz, tmp_path):
    cfg = tiny_cfg(tiny_npz, tmp_path, optim={"lr": 1e30, "warmup_epochs": 0})
    with pytest.raises(InvTransferError, match=r"non-finite training loss .* in step \d+/\d+ of epoch \d+/3"):
        classifier.train(cfg)


def test_oracle_needs_a_nuisance(tiny_npz, tmp_path):
    cfg = tiny_cfg(tiny_npz, tmp_path, oracle=True, data={**tiny_data_overrides(tiny_npz), "nuisance": "none"})
    with pytest.raises(InvTransferError, match="oracle=true. needs a dataset with a synthetic nuisance"):
        classifier.train(cfg)


def test_resume_accepts_options_added_since_the_run_started(tiny_npz, tmp_path):
    """A checkpoint written before an option existed resumes with that option at its default."""
    from invtransfer.train.checkpoint import atomic_save
    classifier.train(tiny_cfg(tiny_npz, tmp_path, optim={"epochs": 2}, checkpoint_every=1))
    path = str(tmp_path / "run" / "checkpoint.pt")
    ck = load_checkpoint(path)
    del ck["config"]["git"]  # as written by an older version
    ck["epoch"] = 1
    atomic_save(ck, path)
    (tmp_path / "run" / "results.json").unlink()
    classifier.train(tiny_cfg(tiny_npz, tmp_path, optim={"epochs": 2}, checkpoint_every=1, resume=True))
    assert (tmp_path / "run" / "results.json").is_file()


def test_a_finished_run_can_be_refinished_with_the_other_selection(tiny_npz, tmp_path):
    """resume=true on a finished run only rewrites its outputs; `select` may change there."""
    res = classifier.train(tiny_cfg(tiny_npz, tmp_path, select="val"))
    run = tmp_path / "run"
    assert res["selected_weights"]["which"] == "best_val"
    final = load_checkpoint(str(run / "checkpoint.pt"))["model"]
    last = classifier.train(tiny_cfg(tiny_npz, tmp_path, select="last", resume=True))
    assert last["selected_weights"] == {"which": "last", "epoch": 3, "why": "select=last"}
    model = load_checkpoint(str(run / "model.pt"))["model"]
    assert all(torch.equal(model[k], final[k]) for k in final)
    assert json.loads((run / "results.json").read_text())["selected_weights"]["which"] == "last"
    again = classifier.train(tiny_cfg(tiny_npz, tmp_path, select="val", resume=True))
    assert again["selected_weights"] == res["selected_weights"] and again["test_error"] == res["test_error"]
    # same weights under both policies: nothing else to report
    assert res["other_selection"] is None and last["other_selection"] is None
    # a best validation epoch before the last (as written by the loop: its epoch and weights)
    from invtransfer.train.checkpoint import atomic_save
    ck = load_checkpoint(str(run / "checkpoint.pt"))
    ck["best"] = {"epoch": 1, "balanced_accuracy": 99.0}
    ck["best_model"] = {k: (v * 0.5 if v.is_floating_point() else v) for k, v in ck["model"].items()}
    atomic_save(ck, str(run / "checkpoint.pt"))
    res = classifier.train(tiny_cfg(tiny_npz, tmp_path, select="val", resume=True))
    last = classifier.train(tiny_cfg(tiny_npz, tmp_path, select="last", resume=True))
    assert res["selected_weights"]["epoch"] == 1 and res["test_error"] != last["test_error"]
    # each policy's results carry the other's test metrics, the same as the other policy's own
    for a, b in ((res, last), (last, res)):
        o = a["other_selection"]
        assert (o["which"], o["epoch"]) == (b["selected_weights"]["which"], b["selected_weights"]["epoch"])
        assert (o["test_error"], o["test_balanced_accuracy"], o["per_class_accuracy"]) == \
            (b["test_error"], b["test_balanced_accuracy"], b["per_class_accuracy"])
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3  # no epoch was trained again
    # a checkpoint from before checkpoints recorded wall time: the log's epoch times stand in
    ck = load_checkpoint(str(run / "checkpoint.pt"))
    del ck["wall_time_s"]
    atomic_save(ck, str(run / "checkpoint.pt"))
    logged = sum(json.loads(x)["epoch_time_s"] for x in (run / "metrics.jsonl").read_text().splitlines())
    assert classifier.train(tiny_cfg(tiny_npz, tmp_path, resume=True))["wall_time_s"] >= logged > 0
