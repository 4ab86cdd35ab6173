"""Strong augmentation and SAM inside the classifier engine: configs, exact resume, SAM's step,
GIT's composition with them."""

import os
import signal

import pytest
import torch

from conftest import tiny_data_overrides
from invtransfer.config import from_dict, load_config, to_dict
from invtransfer.data import augment
from invtransfer.errors import InvTransferError
from invtransfer.train import classifier, sam
from invtransfer.train.checkpoint import TrainingInterrupted, atomic_save, load_checkpoint


def cfg_dict(npz, out_dir, name="run", **kw):
    d = {"data": tiny_data_overrides(npz), "model": "resnet20", "augment": {"crop": "crop_flip"}, "crop_padding": 2,
         "optim": {"epochs": 2, "batch_size": 16, "warmup_epochs": 1, "decay1_epoch": 1, "decay2_epoch": 2,
                   "lr": 0.05},
         "out_dir": str(out_dir), "name": name, "quiet": True, "checkpoint_every": 1, "rule": "drs",
         "select": "last"}
    for k, v in kw.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return d


def cfg(npz, out_dir, **kw):
    return from_dict(classifier.TrainConfig, cfg_dict(npz, out_dir, **kw))


def final_weights(out_dir, name="run"):
    return load_checkpoint(str(out_dir / name / "checkpoint.pt"))["model"]


def assert_same(a, b):
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------- configs
def test_a_plain_augment_value_is_the_crop_key_everywhere(tmp_path):
    """`augment: crop_flip` (configs, command lines, checkpoints written before augment had
    sub-keys) means augment.crop; a base file's value and a sub-key override combine."""
    c = from_dict(classifier.TrainConfig, {"augment": "crop"})
    assert (c.augment.crop, c.augment.policy, c.augment.mixup) == ("crop", "none", 0.0)
    base = tmp_path / "base.yaml"
    base.write_text("augment: none\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\naugment:\n  policy: trivialaugment\n")
    c = load_config(classifier.TrainConfig, child, ["augment.mixup=0.2"])
    assert (c.augment.crop, c.augment.policy, c.augment.mixup) == ("none", "trivialaugment", 0.2)
    c = load_config(classifier.TrainConfig, child, ["augment=crop"])
    assert (c.augment.crop, c.augment.policy) == ("crop", "trivialaugment")
    assert from_dict(classifier.TrainConfig, to_dict(c)) == c


@pytest.mark.parametrize("override, match", [
    (["augment.policy=randaugmnt"], "augment.policy.*'randaugmnt' is not allowed.*randaugment"),
    (["augment=cropflip"], "augment.crop.*'cropflip' is not allowed"),
    (["augment.mixup=-1"], "augment.mixup.*expected a value >= 0"),
    (["augment.cutmix=.inf"], "augment.cutmix.*finite"),
    (["augment.randaugment_m=30"], "augment.randaugment_m.*< 30"),
    (["augment.autoaugment_policy=cifar100"], "augment.autoaugment_policy.*cifar10"),
    (["optim.sam_rho=-0.1"], "optim.sam_rho.*>= 0"),
    (["optim.sam_rho=0.1", "optim.sam_classes=tail"], "optim.sam_tail_threshold.*required"),
    (["optim.sam_rho=0.1", "optim.sam_start_epoch=200"], "optim.sam_start_epoch"),
])
def test_bad_values_name_the_key(override, match):
    with pytest.raises(InvTransferError, match=match):
        load_config(classifier.TrainConfig, None, override)


def test_method_labels_name_the_options():
    def label(*over):
        return classifier.method_label(load_config(classifier.TrainConfig, None, list(over)))

    assert label("loss.name=ldam", "rule=drw", "optim.sam_rho=0.8") == "LDAM-DRW+SAM"
    assert label("rule=drs", "augment.policy=randaugment", "augment.mixup=0.2") == "CE+DRS+RandAugment+Mixup"
    assert label("rule=drs", "optim.sam_rho=0.5", "optim.sam_classes=tail",
                 "optim.sam_tail_threshold=100") == "CE+DRS+TailSAM"
    assert label("augment.cutmix=1", "augment.mixup=0") == "CE+CutMix"
    assert label("rule=drs", "augment.mixup=0", "optim.sam_rho=0") == "CE+DRS"


# ----------------------------------------------------------------------------- training
def test_options_at_zero_are_the_plain_engine_bit_for_bit(tiny_npz, tmp_path):
    """mixup/CutMix alpha 0, SAM rho 0 and policy none are off: the run is today's run."""
    classifier.train(cfg(tiny_npz, tmp_path / "a"))
    classifier.train(cfg(tiny_npz, tmp_path / "b", augment={"mixup": 0.0, "cutmix": 0.0, "policy": "none"},
                         optim={"sam_rho": 0.0}))
    assert_same(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))


def test_sam_step_with_rho_zero_is_the_sgd_step_bit_for_bit(tiny_npz, tmp_path, monkeypatch):
    """The engine's two-pass SAM step, its perturbation forced to 0, gives plain SGD's weights
    (and batch-norm statistics) exactly: the second pass changes nothing else."""
    classifier.train(cfg(tiny_npz, tmp_path / "a"))

    class RhoZero(sam.SharpnessAware):
        def __init__(self, params, rho, eps=1e-12):
            super().__init__(params, 0.0, eps)

    monkeypatch.setattr(classifier, "SharpnessAware", RhoZero)
    calls = {"n": 0}
    real = RhoZero.gradient

    def counted(self, *a, **k):
        calls["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(RhoZero, "gradient", counted)
    classifier.train(cfg(tiny_npz, tmp_path / "b", optim={"sam_rho": 0.05}))
    assert calls["n"] == 10  # every step of both epochs went through SAM
    assert_same(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))


def test_sam_changes_the_step_and_leaves_no_perturbation(tiny_npz, tmp_path):
    run = classifier.ClassifierRun(cfg(tiny_npz, tmp_path, optim={"sam_rho": 0.5}))
    plain = classifier.ClassifierRun(cfg(tiny_npz, tmp_path / "p"))
    plain.model.load_state_dict(run.model.state_dict())
    bidx = torch.arange(16)
    run._train_step(bidx, 0, 0, None)
    plain._train_step(bidx, 0, 0, None)
    assert not run.sam.perturbed
    diff = max((a - b).abs().max().item() for a, b in zip(run.model.parameters(), plain.model.parameters()))
    assert diff > 0  # another gradient: the one at w + e
    # Batch-norm statistics: one update per step, at the weights (not the perturbed ones).
    for (k, a), b in zip(run.model.state_dict().items(), plain.model.state_dict().values()):
        if "running" in k or "num_batches" in k:
            assert torch.equal(a, b), k


@pytest.mark.parametrize("options", [
    {"augment": {"policy": "randaugment", "mixup": 0.4}},
    {"augment": {"policy": "autoaugment", "cutmix": 1.0}, "optim": {"sam_rho": 0.1}},
    {"augment": {"policy": "trivialaugment", "mixup": 0.4, "cutmix": 1.0},
     "optim": {"sam_rho": 0.1, "sam_classes": "tail", "sam_tail_threshold": 8}},
], ids=["randaugment+mixup", "autoaugment+cutmix+sam", "trivialaugment+both+tailsam"])
def test_signal_mid_epoch_then_resume_gives_the_uninterrupted_weights(tiny_npz, tmp_path, monkeypatch, options):
    classifier.train(cfg(tiny_npz, tmp_path / "a", **options))
    ref = final_weights(tmp_path / "a")
    real_step = classifier.ClassifierRun._train_step
    calls = {"n": 0}

    def step_then_signal(self, *a, **k):
        out = real_step(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 3:  # mid-epoch 1 (5 steps per epoch)
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(classifier.ClassifierRun, "_train_step", step_then_signal)
    with pytest.raises(TrainingInterrupted, match="at epoch 0 step 3"):
        classifier.train(cfg(tiny_npz, tmp_path / "b", **options))
    monkeypatch.setattr(classifier.ClassifierRun, "_train_step", real_step)
    torch.manual_seed(12345)  # another global RNG state: nothing of the run may depend on it
    torch.rand(7)
    classifier.train(cfg(tiny_npz, tmp_path / "b", resume=True, **options))
    got = final_weights(tmp_path / "b")
    assert_same(ref, got)
    # And the options did something: not the plain run's weights.
    classifier.train(cfg(tiny_npz, tmp_path / "c"))
    assert any(not torch.equal(ref[k], v) for k, v in final_weights(tmp_path / "c").items())


def test_a_run_from_before_the_options_resumes(tiny_npz, tmp_path):
    """A checkpoint whose config has augment as a plain value and no SAM keys resumes."""
    classifier.train(cfg(tiny_npz, tmp_path))
    path = str(tmp_path / "run" / "checkpoint.pt")
    ck = load_checkpoint(path)
    ck["config"]["augment"] = "crop_flip"
    for key in ("sam_rho", "sam_classes", "sam_tail_threshold", "sam_start_epoch"):
        del ck["config"]["optim"][key]
    ck["epoch"] = 1
    atomic_save(ck, path)
    (tmp_path / "run" / "results.json").unlink()
    classifier.train(cfg(tiny_npz, tmp_path, resume=True))
    assert (tmp_path / "run" / "results.json").is_file()


# ----------------------------------------------------------------------------- losses in the engine
def test_tail_loss_is_the_loss_of_the_tail_rows(tiny_npz, tmp_path):
    run = classifier.ClassifierRun(cfg(tiny_npz, tmp_path, optim={"sam_rho": 0.1, "sam_classes": "tail",
                                                                  "sam_tail_threshold": 8}))
    logits = torch.randn(12, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 0, 1, 2, 3, 3, 0, 1])  # counts [40, 20, 8, 4]: tail = {2, 3}
    tail_rows = labels >= 2
    full = run.shard_loss(logits, labels, labels, (0, 12), None)
    tail = run.shard_loss(logits, labels, labels, (0, 12), None, tail=True)
    assert torch.allclose(full, run.loss_fn(logits, labels))
    assert torch.allclose(tail, run.loss_fn(logits[tail_rows], labels[tail_rows]))
    # Mixed targets: each term restricted to its own tail labels.
    mixed = augment.MixedTargets(labels, labels.flip(0), 0.3)
    got = run.shard_loss(logits, mixed, mixed, (0, 12), None, tail=True)
    b = labels.flip(0)
    ref = 0.3 * run.loss_fn(logits[tail_rows], labels[tail_rows]) + 0.7 * run.loss_fn(logits[b >= 2], b[b >= 2])
    assert torch.allclose(got, ref)
    # No tail example in a term: that term is 0, not 0/0.
    head = torch.tensor([0, 1] * 6)
    assert float(run.shard_loss(logits, head, head, (0, 12), None, tail=True)) == 0.0


# ----------------------------------------------------------------------------- with GIT
def test_generated_rows_are_augmented_and_mixed_like_real_rows(tmp_path):
    """GIT writes its generated rows first; the policy and the mixing then act on the whole batch,
    so a generated row is augmented, can be mixed with a real one, and its label enters the
    mixed targets: the batch equals the plain GIT batch put through the step's draws."""
    from git_reference_setup import reference_run

    from invtransfer.data import batches

    options = {"crop": "crop_flip", "policy": "trivialaugment", "policy_group": 4, "mixup": 0.4}
    strong, epoch = reference_run(str(tmp_path / "s"), augment=options)
    plain, _ = reference_run(str(tmp_path / "p"))
    bidx = torch.arange(16)
    bidx2 = torch.nonzero(plain.y_train_cpu >= 2).flatten().repeat(2)[:16]  # the classes GIT's threshold keeps
    x, y, generated = plain.compose_batch(bidx, epoch, 0, bidx2)
    slots = plain.plan_batch(bidx, epoch, 0, bidx2).gen_slots
    assert generated > 0 and len(slots) == generated
    got, targets, same = strong.compose_batch(bidx, epoch, 0, bidx2)
    assert same == generated  # GIT's decisions do not depend on the options
    draw = strong.batch_augment.draw(16, 16, 16, batches.step_generator(strong.cfg.seed, epoch, 0,
                                                                        stream=augment.STREAM))
    assert torch.equal(got, strong.batch_augment.images(x, draw, strong.normalizer))
    assert isinstance(targets, augment.MixedTargets)
    assert torch.equal(targets.a, y) and torch.equal(targets.b, y[draw.mix.partner])  # generated labels too
    # The policy reached the generated rows: without mixing they would differ from GIT's output.
    policy_only = augment.BatchAugment(strong.batch_augment.policy)
    augmented = policy_only.images(x, augment.BatchDraw(draw.policy_seed), strong.normalizer)
    assert any(not torch.allclose(augmented[i], x[i], atol=1e-3) for i in slots.tolist())
    # Some generated row is mixed with a real one.
    assert any(int(draw.mix.partner[i]) not in set(slots.tolist()) for i in slots.tolist())


@pytest.mark.parametrize("loss", ["ce", "focal", "ldam"])
def test_the_processes_loss_shares_add_up_to_the_global_loss(tiny_npz, tmp_path, loss):
    """Several processes: the mean over processes of their shards' losses (what DDP's gradient
    average sees) is the global batch's loss, for hard and mixed targets, with and without class
    weights, for the whole loss and tail-class SAM's, also for unequal shards."""
    from invtransfer.train.distributed import Dist

    run = classifier.ClassifierRun(cfg(tiny_npz, tmp_path, loss={"name": loss}, optim={
        "sam_rho": 0.1, "sam_classes": "tail", "sam_tail_threshold": 8}))
    g = torch.Generator().manual_seed(0)
    n = 11
    logits = torch.randn(n, 4, generator=g).tanh()
    a, b = torch.randint(0, 4, (n,), generator=g), torch.randint(0, 4, (n,), generator=g)
    for targets in (a, augment.MixedTargets(a, b, 0.3)):
        for weight in (None, run.class_weight):
            for tail in (False, True):
                whole = run.shard_loss(logits, targets, targets, (0, n), weight, tail=tail)
                shares = []
                for rank in range(2):
                    run.dist = Dist(rank=rank, world_size=2)
                    s, e = run.dist.shard(n)
                    mine = (augment.MixedTargets(a[s:e], b[s:e], 0.3) if isinstance(targets, augment.MixedTargets)
                            else a[s:e])
                    shares.append(run.shard_loss(logits[s:e], mine, targets, (s, e), weight, tail=tail))
                run.dist = Dist()
                assert torch.allclose(sum(shares) / 2, whole, atol=1e-6), (type(targets).__name__, weight, tail)
