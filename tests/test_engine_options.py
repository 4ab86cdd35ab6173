"""Options and failure paths of the classifier engine: out of memory, non-finite values, the
checkpoint schedule, the oracle control, progress output, TensorBoard, devices, autocast,
torch.compile and model selection (the CLI's own output: test_cli.py).

Every case trains on the tiny generated data of ``conftest.py`` (seconds per run). CLI cases run
in-process through ``invtransfer.cli.main``, as tests/test_faults.py does.
"""

import json
import os
import re
import sys
import types

import numpy as np
import pytest
import torch

from conftest import tiny_data_overrides
from invtransfer import cli
from invtransfer.data import datasets
from invtransfer.data import nuisance as nuisance_ops
from invtransfer.errors import InvTransferError
from invtransfer.models.resnet_cifar import CifarResNet
from invtransfer.train import classifier, inference
from invtransfer.train.checkpoint import load_checkpoint
from test_classifier import tiny_cfg
from test_faults import assert_unchanged, snapshot

STEPS_PER_EPOCH = 5  # 72 training images in batches of 16


def train_argv(npz, out_dir, *extra: str) -> list[str]:
    """`invtransfer train` arguments of tiny_cfg's run (3 epochs, resnet20, DRS, quiet)."""
    d = {f"data.{k}": v for k, v in tiny_data_overrides(npz).items()}
    d.update({"model": "resnet20", "augment": "crop_flip", "crop_padding": 2, "optim.epochs": 3,
              "optim.batch_size": 16, "optim.warmup_epochs": 1, "optim.decay1_epoch": 1, "optim.decay2_epoch": 2,
              "optim.lr": 0.05, "out_dir": str(out_dir), "name": "run", "quiet": True, "checkpoint_every": 1,
              "rule": "drs"})
    return ["train", *(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in d.items()), *extra]


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def out_of_memory() -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")


@pytest.fixture
def empty_cache_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    return calls


# ----------------------------------------------------------------------------- out of memory

def test_out_of_memory_in_a_training_step_names_the_batch_size(tiny_npz, tmp_path, capsys, monkeypatch,
                                                              empty_cache_calls):
    real_forward = CifarResNet.forward
    seen = {"train": 0, "fail_from": STEPS_PER_EPOCH + 2}  # the 7th training forward: step 2 of epoch 2

    def forward(self, x):
        if self.training:
            seen["train"] += 1
            if seen["train"] >= seen["fail_from"]:
                raise out_of_memory()
        return real_forward(self, x)

    monkeypatch.setattr(CifarResNet, "forward", forward)
    run = tmp_path / "run"
    assert cli.main(train_argv(tiny_npz, tmp_path)) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and "Traceback" not in err + out
    assert "CUDA ran out of memory in training step 2/5 of epoch 2/" in err
    assert "optim.batch_size=16" in err and "e.g. optim.batch_size=8" in err
    assert empty_cache_calls
    assert not (run / "results.json").exists() and not (run / "model.pt").exists()
    ck = load_checkpoint(str(run / "checkpoint.pt"))
    assert (ck["epoch"], ck["step"]) == (1, 0)  # the last good one, after the first epoch

    # Resuming runs out of memory at once: nothing in the run directory changes.
    before = snapshot(run)
    seen.update(train=0, fail_from=1)
    empty_cache_calls.clear()
    assert cli.main(train_argv(tiny_npz, tmp_path, "resume=true")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "optim.batch_size=16" in err and "optim.batch_size=8" in err
    assert "training step 1/5 of epoch 2/" in err and str(run / "checkpoint.pt") in err
    assert empty_cache_calls
    after = snapshot(run)
    assert_unchanged(before, after)
    assert after.keys() == before.keys()  # nothing added either


def test_out_of_memory_while_evaluating_names_the_evaluation_batch_size(tiny_npz, tmp_path, capsys, monkeypatch,
                                                                       empty_cache_calls):
    assert cli.main(train_argv(tiny_npz, tmp_path, "optim.epochs=2", "select=last")) == 0
    run = tmp_path / "run"
    first = json.loads((run / "results.json").read_text())
    capsys.readouterr()
    real_forward = CifarResNet.forward

    def forward(self, x):  # evaluation batches of more than 30 images do not fit
        if not self.training and x.shape[0] > 30:
            raise out_of_memory()
        return real_forward(self, x)

    monkeypatch.setattr(CifarResNet, "forward", forward)
    before = snapshot(run)

    # invtransfer evaluate: the 60 test images went in one batch of 60 (--batch-size 1024)
    assert cli.main(["evaluate", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "--batch-size=1024" in err and "e.g. --batch-size=30" in err and "largest batch was 60" in err
    assert empty_cache_calls
    assert cli.main(["evaluate", str(run), "--device", "cpu", "--batch-size", "30", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["error"] == pytest.approx(first["test_error"])

    # Re-finishing the run (resume=true) evaluates the test split before writing model.pt.
    empty_cache_calls.clear()
    assert cli.main(train_argv(tiny_npz, tmp_path, "optim.epochs=2", "select=last", "resume=true")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "evaluating the test split" in err
    assert "eval_batch_size=1024" in err and "resume=true eval_batch_size=30" in err
    assert empty_cache_calls
    assert_unchanged(before, snapshot(run))
    # and the suggestion works: the evaluation batch size may change on resume
    assert cli.main(train_argv(tiny_npz, tmp_path, "optim.epochs=2", "select=last", "resume=true",
                               "eval_batch_size=30")) == 0
    assert json.loads((run / "results.json").read_text())["test_error"] == pytest.approx(first["test_error"])


def test_a_batch_of_one_that_does_not_fit_says_so(empty_cache_calls):
    def fail():
        raise out_of_memory()

    with pytest.raises(InvTransferError, match="optim.batch_size=1; a single image does not fit"):
        classifier.without_out_of_memory(fail, "in a step", "optim.batch_size", 1, 1)
    assert classifier.without_out_of_memory(lambda: 7, "in a step", "optim.batch_size", 8, 8) == 7
    with pytest.raises(ValueError):  # other errors pass through untouched
        classifier.without_out_of_memory(lambda: int("x"), "in a step", "optim.batch_size", 8, 8)


# ----------------------------------------------------------------------------- non-finite values

def test_nan_loss_keeps_the_last_good_checkpoint(tiny_npz, tmp_path, monkeypatch):
    real_step = classifier.ClassifierRun._train_step
    ck_path = tmp_path / "run" / "checkpoint.pt"
    good = {}

    def step(self, bidx, epoch, step, weight, bidx2=None):
        if (epoch, step) != (1, 1):
            return real_step(self, bidx, epoch, step, weight, bidx2)
        good["bytes"] = ck_path.read_bytes()
        loss_fn = self.loss_fn
        self.loss_fn = lambda *a, **k: loss_fn(*a, **k) * float("nan")
        try:
            return real_step(self, bidx, epoch, step, weight, bidx2)
        finally:
            self.loss_fn = loss_fn

    monkeypatch.setattr(classifier.ClassifierRun, "_train_step", step)
    with pytest.raises(InvTransferError, match=r"non-finite training loss \(nan\) in step 2/5 of epoch 2/3"):
        classifier.train(tiny_cfg(tiny_npz, tmp_path, checkpoint_every=1))
    assert ck_path.read_bytes() == good["bytes"]
    ck = load_checkpoint(str(ck_path))
    assert (ck["epoch"], ck["step"]) == (1, 0)
    assert all(bool(v.isfinite().all()) for v in ck["model"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "results.json").exists() and not (tmp_path / "run" / "model.pt").exists()


def test_non_finite_weights_after_a_finite_loss_are_never_saved(tiny_npz, tmp_path, monkeypatch):
    """An optimiser step can overflow the weights although its loss (computed before it) was
    finite; at the end of an epoch they would reach the log and the checkpoint before the next
    step's loss shows it."""
    real_step = classifier.ClassifierRun._train_step
    run = tmp_path / "run"
    good = {}

    def step(self, bidx, epoch, step, weight, bidx2=None):
        out = real_step(self, bidx, epoch, step, weight, bidx2)
        if (epoch, step) == (1, STEPS_PER_EPOCH - 1):
            good["bytes"] = (run / "checkpoint.pt").read_bytes()
            with torch.no_grad():
                self.model.fc.weight[0, 0] = float("inf")
            assert np.isfinite(out[0])
        return out

    monkeypatch.setattr(classifier.ClassifierRun, "_train_step", step)
    with pytest.raises(InvTransferError, match=r"non-finite model weights \(fc.weight\) after step 5/5 of epoch 2/3"):
        classifier.train(tiny_cfg(tiny_npz, tmp_path, checkpoint_every=1))
    assert (run / "checkpoint.pt").read_bytes() == good["bytes"]
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert not (run / "results.json").exists() and not (run / "model.pt").exists()


# ----------------------------------------------------------------------------- checkpoints

def test_checkpoints_every_n_epochs_and_at_the_end(tiny_npz, tmp_path, monkeypatch):
    written = []
    real_save = classifier.atomic_save

    def save(obj, path):
        if os.path.basename(path) == "checkpoint.pt":
            written.append((obj["epoch"], obj["step"]))
        return real_save(obj, path)

    monkeypatch.setattr(classifier, "atomic_save", save)
    cfg = tiny_cfg(tiny_npz, tmp_path, checkpoint_every=2, optim={"epochs": 5, "batch_size": 32})
    classifier.train(cfg)
    # epochs count from 0; a checkpoint at (e, 0) is the state after e finished epochs
    assert written == [(2, 0), (4, 0), (5, 0)]
    assert load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))["epoch"] == 5


# ----------------------------------------------------------------------------- the oracle control

def test_oracle_trains_on_base_images_with_the_true_transform_online(tiny_npz, tmp_path, monkeypatch):
    seen = []
    real_materialize = classifier.ClassifierRun.materialize

    def materialize(self, plan, rows=None):
        x, y = real_materialize(self, plan, rows)
        seen.append((self, plan, x.clone()))
        return x, y

    monkeypatch.setattr(classifier.ClassifierRun, "materialize", materialize)
    cfg = tiny_cfg(tiny_npz, tmp_path, oracle=True, augment="none",
                   optim={"epochs": 1, "warmup_epochs": 0, "decay1_epoch": 0, "decay2_epoch": 1})
    res = classifier.train(cfg)
    assert len(seen) == STEPS_PER_EPOCH
    run = seen[0][0]
    ds = run.ds
    assert ds.nuisance == "dil" and ds.x_train_base is not None
    base = torch.from_numpy(ds.x_train_base).permute(0, 3, 1, 2)
    stored = torch.from_numpy(ds.x_train).permute(0, 3, 1, 2)
    assert torch.equal(run.x_train, base) and not torch.equal(base, stored)
    codes = []
    for _, plan, x in seen:
        p = plan.augment.nuisance
        assert p is not None and len(p) == len(plan.index)
        codes.append(p)
        # the model sees the base images with the drawn true transform applied (nothing else)
        expected = run.normalizer(nuisance_ops.apply("dil", base[plan.index].float(), p))
        torch.testing.assert_close(x, expected)
        assert not torch.allclose(x, run.normalizer(stored[plan.index].float()))
    codes = torch.cat(codes)
    # fresh draws from DIL's distribution: dilation codes +2..+4, erosion -1..-2 (-1 = identity)
    assert set(codes.tolist()) <= {2, 3, 4, -1, -2} and len(set(codes.tolist())) >= 3
    assert res["method"] == "CE+DRS+Oracle"
    for f in ("results.json", "model.pt", "checkpoint.pt", "metrics.jsonl", "curves.png"):
        assert (tmp_path / "run" / f).is_file(), f
    assert json.loads((tmp_path / "run" / "results.json").read_text())["config"]["oracle"] is True


# ----------------------------------------------------------------------------- progress output

def test_progress_bar_and_quiet_lines(tiny_npz, tmp_path, capsys):
    classifier.train(tiny_cfg(tiny_npz, tmp_path / "bar", quiet=False, optim={"epochs": 2}))
    out, err = capsys.readouterr()
    for epoch in (1, 2):
        assert f"epoch {epoch}/2" in err
    for field in ("loss=", "acc=", "lr=", "img/s="):
        assert field in err, field
    assert "\r" in err  # a redrawn bar, not lines

    classifier.train(tiny_cfg(tiny_npz, tmp_path / "quiet", quiet=True, optim={"epochs": 2}))
    out, err = capsys.readouterr()
    epoch_lines = [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    assert len(epoch_lines) == 2
    for i, ln in enumerate(epoch_lines, 1):
        assert re.match(rf"epoch {i}/2 loss \d+\.\d+ acc \d+\.\d+ lr \S+ \d+ img/s", ln), ln
    assert "\r" not in out + err and "loss=" not in out + err and "it/s" not in out + err


# ----------------------------------------------------------------------------- TensorBoard

def test_tensorboard_without_the_package_is_a_clear_error(tiny_npz, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert cli.main(train_argv(tiny_npz, tmp_path, "tensorboard=true")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "tensorboard=true" in err and "pip install tensorboard" in err
    assert not (tmp_path / "run").exists()  # refused before the run directory is made
    help_text = classifier.TrainConfig.__dataclass_fields__["tensorboard"].metadata
    assert "opt-in" in str(help_text) and "tensorboard package" in str(help_text)


def test_tensorboard_receives_the_per_epoch_scalars(tiny_npz, tmp_path, monkeypatch):
    writers = []

    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir, self.scalars, self.closed = log_dir, [], False
            writers.append(self)

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

        def close(self):
            self.closed = True

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    classifier.train(tiny_cfg(tiny_npz, tmp_path, tensorboard=True, optim={"epochs": 2}))
    (w,) = writers
    assert w.log_dir == str(tmp_path / "run" / "tensorboard") and w.closed
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        for tag in ("train_loss", "train_accuracy", "lr", "images_per_s", "val_error", "val_balanced_accuracy"):
            assert (tag, r[tag], r["epoch"] - 1) in w.scalars, (tag, r["epoch"])


# ----------------------------------------------------------------------------- devices, amp, compile

def test_device_resolution(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(InvTransferError, match="'device=cuda' but CUDA is not available"):
        classifier.resolve_device("cuda")
    with pytest.raises(InvTransferError, match="'device=mps' but MPS is not available"):
        classifier.resolve_device("mps")
    assert classifier.resolve_device("auto") == torch.device("cpu")
    assert classifier.resolve_device("cpu") == torch.device("cpu")
    assert cli.main(["train", "device=cuda"]) == 2
    assert "device=cuda" in capsys.readouterr().err


def test_autocast_dtype():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert classifier.autocast_dtype("auto", cuda) == torch.bfloat16
    assert classifier.autocast_dtype("auto", cpu) is None
    assert classifier.autocast_dtype("bf16", cpu) == torch.bfloat16
    assert classifier.autocast_dtype("off", cuda) is None


def _assert_finished(res, run):
    assert np.isfinite(res["test_error"]) and np.isfinite(res["test_balanced_accuracy"])
    for f in ("results.json", "model.pt", "checkpoint.pt", "metrics.jsonl", "metrics.csv", "curves.png"):
        assert (run / f).is_file(), f
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and all(np.isfinite(r["train_loss"]) for r in records)


def test_bf16_autocast_run_on_cpu(tiny_npz, tmp_path, monkeypatch):
    real_forward = CifarResNet.forward
    dtypes = set()

    def forward(self, x):
        if self.training:
            dtypes.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return real_forward(self, x)

    monkeypatch.setattr(CifarResNet, "forward", forward)
    cfg = tiny_cfg(tiny_npz, tmp_path, amp="bf16", optim={"epochs": 1, "warmup_epochs": 0, "decay1_epoch": 0,
                                                            "decay2_epoch": 1})
    res = classifier.train(cfg)
    assert dtypes == {torch.bfloat16}
    _assert_finished(res, tmp_path / "run")


def test_compiled_run(tiny_npz, tmp_path, monkeypatch):
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available in this torch")
    compiled = []
    real_compile = torch.compile

    def compile_(model, *a, **k):
        compiled.append(model)
        return real_compile(model, *a, **k)

    monkeypatch.setattr(torch, "compile", compile_)
    cfg = tiny_cfg(tiny_npz, tmp_path, compile=True,
                   optim={"epochs": 1, "warmup_epochs": 0, "decay1_epoch": 0, "decay2_epoch": 1, "batch_size": 36})
    res = classifier.train(cfg)
    assert len(compiled) == 1 and isinstance(compiled[0], CifarResNet)
    _assert_finished(res, tmp_path / "run")


# ----------------------------------------------------------------------------- model selection

def test_select_val_keeps_the_best_validation_weights_and_reports_the_last_beside_them(tiny_npz, tmp_path, monkeypatch):
    cfg = tiny_cfg(tiny_npz, tmp_path, select="val", keep_checkpoints=[2])
    ds = datasets.build_dataset(cfg.data)
    y_val, y_test = ds.y_val, ds.y_test
    assert len(y_val) != len(y_test)
    val_scores = iter([50.0, 90.0, 70.0])  # the second epoch is the best on validation
    calls = {"val": 0, "test": []}
    real_evaluate = classifier.evaluate_split

    def evaluate_split(model, images, labels, *a, **k):
        m = real_evaluate(model, images, labels, *a, **k)
        y = labels.cpu().numpy()
        if len(y) == len(y_val) and np.array_equal(y, y_val):
            calls["val"] += 1
            m = dict(m, balanced_accuracy=next(val_scores))
        else:
            assert len(y) == len(y_test) and np.array_equal(y, y_test)
            calls["test"].append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return m

    monkeypatch.setattr(classifier, "evaluate_split", evaluate_split)
    res = classifier.train(cfg)
    run = tmp_path / "run"
    # the test set is seen by the final weights of each policy, after training, never before
    assert calls["val"] == 3 and len(calls["test"]) == 2
    assert res["selected_weights"]["which"] == "best_val" and res["selected_weights"]["epoch"] == 2
    final = load_checkpoint(str(run / "checkpoint.pt"))
    after_epoch_2 = load_checkpoint(str(run / "checkpoint_e2.pt"))["model"]
    model = load_checkpoint(str(run / "model.pt"))["model"]
    assert final["best"]["epoch"] == 2
    assert same_tensors(model, final["best_model"]) and same_tensors(model, after_epoch_2)
    assert same_tensors(calls["test"][1], after_epoch_2)  # the reported metrics: the selected weights
    assert not same_tensors(model, final["model"])  # not the last epoch's
    assert same_tensors(calls["test"][0], final["model"])  # other_selection: the last epoch's
    assert (res["other_selection"]["which"], res["other_selection"]["epoch"]) == ("last", 3)
    # either policy's weights load by name from the full checkpoint, whatever the run selected
    def loaded(weights, path=run):
        m, meta = classifier.load_classifier(str(path), weights=weights)
        return m.state_dict(), (meta["selected_weights"]["which"], meta["selected_weights"]["epoch"])

    assert same_tensors(loaded("selected")[0], model)
    state, which = loaded("best_val")
    assert same_tensors(state, final["best_model"]) and which == ("best_val", 2)
    for w in ("last", "other"):  # other: the policy select=val did not use
        state, which = loaded(w, run / "model.pt")  # model.pt leads to its run's checkpoint.pt
        assert same_tensors(state, final["model"]) and which == ("last", 3)
    assert inference.same_weights_under_both_policies(str(run)) is None
    with pytest.raises(InvTransferError, match="after epoch 2 of 3"):
        loaded("last", run / "checkpoint_e2.pt")
    weights_only = tmp_path / "weights_only"
    weights_only.mkdir()
    (weights_only / "model.pt").write_bytes((run / "model.pt").read_bytes())
    with pytest.raises(InvTransferError, match="holds no checkpoint.pt"):
        loaded("best_val", weights_only)
    # eKLD of the other policy's weights goes to its own file, and says whose weights it measured
    assert cli.main(["invariance", str(run), "--transform", "dil", "--draws", "2", "--images-per-class", "2",
                     "--weights", "other", "--quiet"]) == 0
    other = json.loads((run / "invariance_last.json").read_text())
    assert other["weights"]["which"] == "last" and other["weights"]["epoch"] == 3
    assert not (run / "invariance.json").exists()
