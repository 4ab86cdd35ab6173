"""GIT's class filter (git.filter, invtransfer.git.ClassFilter): in the public mixer, exactly the
accepted slots are written and a rejected slot keeps its real image and label; the rules and the
normalisation conversion; in the engine, per-class counts in metrics.jsonl that survive a
mid-epoch stop, the global labels with several processes, the report and the config errors."""

import json
import os
import signal

import numpy as np
import pytest
import torch

from conftest import make_images, tiny_data_overrides
from git_reference_setup import reference_config, write_classifier, write_npz16
from invtransfer.config import dump_yaml, from_dict, to_dict
from invtransfer.errors import InvTransferError
from invtransfer.git import ClassFilter, GitMixer, load_class_filter
from invtransfer.report import write_report
from invtransfer.train import classifier
from invtransfer.train.checkpoint import TrainingInterrupted, load_checkpoint
from invtransfer.train.inference import FrozenClassifier, NuisanceSampler
from test_git_api import batch, small_generator

COUNTS = [40, 20, 8, 4]


class Judge(torch.nn.Module):
    """A reference classifier whose logits are given: ``table`` (one row per image it will see, in
    order) or, without it, zeros; it records every input it sees."""

    def __init__(self, table=None, classes=4):
        super().__init__()
        self.table, self.classes, self.seen = table, classes, []
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the device it lives on

    def forward(self, x):
        self.seen.append(x.detach().clone())
        if self.table is None:
            return torch.zeros(x.shape[0], self.classes)
        return self.table[:x.shape[0]] + 0 * self.anchor


def one_hot_logits(classes_first):
    """Logits that rank ``classes_first[i]`` first in row i (10 against 0)."""
    return 10.0 * torch.nn.functional.one_hot(torch.as_tensor(classes_first), 4).float()


def mixers(gen, judge, rule="top1", min_prob=0.5, **kw):
    kw = dict(dict(gen_frac=0.5, seed=3, mean=[0.3], std=[0.2]), **kw)
    plain = GitMixer(gen, COUNTS, **kw)
    keep = ClassFilter(judge, mean=[0.3], std=[0.2], rule=rule, min_prob=min_prob)
    return plain, GitMixer(gen, COUNTS, filter=keep, **kw)


def test_a_filter_that_always_agrees_gives_plain_gits_batch(tmp_path):
    gen = small_generator(tmp_path)
    x, y = batch(seed=1)
    x2, y2 = batch(seed=2)
    for step in range(3):
        plain, filtered = mixers(gen, Judge())
        slots = plain.plan(y2, epoch=1, step=step).slots
        filtered.filter.classifier.model.table = one_hot_logits(y2[slots])  # the source class, every time
        a, b = plain(x, y, x2, y2, epoch=1, step=step), filtered(x, y, x2, y2, epoch=1, step=step)
        assert len(a.replaced) == 8
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.replaced, b.replaced)


def test_a_filter_that_never_agrees_leaves_the_batch_as_it_came(tmp_path, monkeypatch):
    gen = small_generator(tmp_path)
    calls = []
    real = NuisanceSampler.__call__
    monkeypatch.setattr(NuisanceSampler, "__call__",
                        lambda self, x, *a, **k: calls.append(len(x)) or real(self, x, *a, **k))
    x, y = batch(seed=1)
    x2, y2 = batch(seed=2)
    _, filtered = mixers(gen, Judge())
    slots = filtered.plan(y2, epoch=0, step=0).slots
    filtered.filter.classifier.model.table = one_hot_logits((y2[slots] + 1) % 4)  # always another class
    out = filtered(x, y, x2, y2, epoch=0, step=0)
    assert calls == [8]  # every planned slot was generated and judged ...
    assert len(filtered.filter.classifier.model.seen[0]) == 8
    assert torch.equal(out.x, x) and torch.equal(out.y, y) and len(out.replaced) == 0  # ... and none written
    assert not torch.equal(y[slots], y2[slots])  # the real labels differ from the generated ones here


def test_a_mixed_verdict_replaces_exactly_the_accepted_slots(tmp_path):
    gen = small_generator(tmp_path)
    x, y = batch(seed=1)
    x2, y2 = batch(seed=2)
    plain, filtered = mixers(gen, Judge())
    plan = plain.plan(y2, epoch=2, step=5)
    accept = torch.tensor([True, False, False, True, True, False, True, False])
    verdict = torch.where(accept, y2[plan.slots], (y2[plan.slots] + 2) % 4)  # the source class, or another
    filtered.filter.classifier.model.table = one_hot_logits(verdict)
    a, b = plain(x, y, x2, y2, epoch=2, step=5), filtered(x, y, x2, y2, epoch=2, step=5)
    assert torch.equal(b.replaced, plan.slots[accept])
    written, kept = plan.slots[accept], plan.slots[~accept]
    assert torch.equal(b.x[written], a.x[written]) and torch.equal(b.y[written], y2[written])  # generated
    assert torch.equal(b.x[kept], x[kept]) and torch.equal(b.y[kept], y[kept])  # real image, real label
    rest = torch.ones(16, dtype=torch.bool)
    rest[plan.slots] = False
    assert torch.equal(b.x[rest], x[rest]) and torch.equal(b.y[rest], y[rest])
    # the engine's entry point says which it wrote, in slot order
    xs, ys = x.clone(), y.clone()
    assert torch.equal(filtered.replace_accepted(xs, plan, x2[plan.slots], y=ys), accept)
    assert torch.equal(xs, b.x) and torch.equal(ys, b.y)
    assert filtered.replace(x.clone(), plan, x2[plan.slots]) == 4


def test_prob_rule_keeps_the_slots_at_or_above_the_threshold(tmp_path):
    p_source = torch.tensor([0.9, 0.6, 0.51, 0.49, 0.3, 0.7, 0.05, 0.26])
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    probs = torch.zeros(8, 4)
    for i, (c, p) in enumerate(zip(labels.tolist(), p_source.tolist())):
        probs[i] = (1 - p) / 3
        probs[i, c] = p
    table = probs.log()  # softmax(log p) = p
    images = torch.randn(8, 1, 16, 16)
    for min_prob in (0.5, 0.25, 0.95):
        keep = ClassFilter(Judge(table), mean=[0.0], std=[1.0], rule="prob", min_prob=min_prob)
        assert torch.equal(keep(images, labels, [0.0], [1.0]), p_source >= min_prob), min_prob
    top1 = ClassFilter(Judge(table), mean=[0.0], std=[1.0], rule="top1")
    # the source class is first where its probability beats the others' (1 - p) / 3, i.e. p > 0.25
    assert torch.equal(top1(images, labels, [0.0], [1.0]), p_source > 0.25)
    # through the mixer: the slots whose source class gets >= 0.5
    gen = small_generator(tmp_path)
    x, y = batch(seed=1)
    x2, _ = batch(seed=2)
    y2 = torch.tensor([0, 9, 1, 9, 2, 9, 3, 9, 0, 9, 1, 9, 2, 9, 3, 9]) % 9  # slots 0, 2, ..., 14 hold `labels`
    _, filtered = mixers(gen, Judge(table), rule="prob", min_prob=0.5)
    out = filtered(x, y, x2, y2, epoch=0, step=0)
    assert torch.equal(out.replaced, (torch.arange(8) * 2)[p_source >= 0.5])


def test_the_reference_classifier_sees_the_same_pixels_in_its_own_normalisation(tmp_path):
    gen = small_generator(tmp_path)
    x, y = batch(seed=1)
    x2, y2 = batch(seed=2)
    x2 = x2.sigmoid()  # pixels in [0, 1]: mixer B's normalisation (mean 0, std 1)
    m_a, s_a, m_ref, s_ref = 0.3, 0.2, 0.45, 0.7
    seen = {}
    for name, mean, std in (("a", m_a, s_a), ("b", 0.0, 1.0)):
        judge = Judge()
        keep = ClassFilter(judge, mean=[m_ref], std=[s_ref])
        mixer = GitMixer(gen, COUNTS, seed=1, mean=[mean], std=[std], filter=keep)
        plan = mixer.plan(y2, epoch=0, step=0)
        xs = (x2 - mean) / std  # the same pixels in this mixer's normalisation
        mixer(xs, y, xs, y2, epoch=0, step=0)
        seen[name] = judge.seen[0]
        pixels = gen(x2[plan.slots], [0.0], [1.0], styles=plan.styles)  # the decodes as [0, 1] pixels
    torch.testing.assert_close(seen["a"], seen["b"], rtol=0, atol=1e-5)
    torch.testing.assert_close(seen["b"], (pixels - m_ref) / s_ref, rtol=0, atol=1e-5)
    # the same normalisation on both sides: the generated images themselves, bit for bit
    judge = Judge()
    mixer = GitMixer(gen, COUNTS, seed=1, mean=[m_a], std=[s_a], filter=ClassFilter(judge, mean=[m_a], std=[s_a]))
    mixer((x2 - m_a) / s_a, y, (x2 - m_a) / s_a, y2, epoch=0, step=0)
    assert torch.equal(judge.seen[0], gen((x2[plan.slots] - m_a) / s_a, [m_a], [s_a], styles=plan.styles))


def test_class_filter_bad_input(tmp_path):
    judge = Judge()
    with pytest.raises(InvTransferError, match="rule 'top5' is not one of top1, prob"):
        ClassFilter(judge, mean=[0.0], std=[1.0], rule="top5")
    for bad in (0, 1.5, -0.1, True):
        with pytest.raises(InvTransferError, match=r"min_prob must be a probability in \(0, 1\]"):
            ClassFilter(judge, mean=[0.0], std=[1.0], rule="prob", min_prob=bad)
    with pytest.raises(InvTransferError, match="needs the reference classifier's input normalisation"):
        ClassFilter(judge)
    with pytest.raises(InvTransferError, match="brings its own normaliser"):
        ClassFilter(FrozenClassifier(judge, [0.0], [1.0]), mean=[0.0], std=[1.0])
    with pytest.raises(InvTransferError, match="labels must lie in 0..3"):
        ClassFilter(judge, mean=[0.0], std=[1.0])(torch.zeros(2, 1, 4, 4), torch.tensor([0, 4]), [0.0], [1.0])
    with pytest.raises(InvTransferError, match="filter must be an invtransfer.git.ClassFilter"):
        GitMixer(small_generator(tmp_path), COUNTS, filter=judge)
    frozen = ClassFilter(judge, mean=[0.0], std=[1.0]).classifier
    assert not judge.training and not any(p.requires_grad for p in judge.parameters())
    with pytest.raises(InvTransferError, match="2 entries; the images have 1 channel"):
        frozen(torch.zeros(1, 1, 4, 4), [0.0, 0.0], [1.0, 1.0])


# ----------------------------------------------------------------------------- in the engine

def filter_config(tmp, rule="top1", **top):
    """The reference GIT run (class sizes [40, 20, 8, 4]; GIT in epoch 2, threshold weighting: classes 2
    and 3 generated) with a reference classifier that always ranks class 2 first (p = 0.61; class 3:
    0.22): generated class-2 slots are accepted, class-3 slots rejected."""
    os.makedirs(tmp, exist_ok=True)
    data = tiny_data_overrides(write_npz16(os.path.join(tmp, "tiny16.npz")))
    clf = write_classifier(os.path.join(tmp, "reference.pt"), data, bias=[0.0, 0.0, 2.0, 1.0], mean=[0.45],
                           std=[0.7])
    cfg = reference_config(tmp, **top)
    cfg.git.filter, cfg.git.filter_classifier = rule, clf
    return from_dict(classifier.TrainConfig, to_dict(cfg))


def log_of(run_dir):
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_engine_logs_the_filters_per_class_counts_and_trains_on_its_batches(tmp_path, monkeypatch):
    decisions = []  # (labels judged, kept) of every call
    real = ClassFilter.__call__

    def spy(self, images, labels, mean, std):
        keep = real(self, images, labels, mean, std)
        decisions.append((labels.clone(), keep.clone()))
        return keep

    composed = {}
    real_compose = classifier.ClassifierRun.strong_augment

    def record(self, x, y, plan, rows, epoch, step):  # the labels the step trains on, and the real ones
        composed[(epoch, step)] = (plan, y.clone(), self.y_train_cpu[plan.index])
        return real_compose(self, x, y, plan, rows, epoch, step)

    monkeypatch.setattr(ClassFilter, "__call__", spy)
    monkeypatch.setattr(classifier.ClassifierRun, "strong_augment", record)
    res = classifier.train(filter_config(str(tmp_path)))
    log = log_of(tmp_path / "runs" / "ref")
    assert [("git_filter_proposed" in r) for r in log] == [False, False, True]  # GIT epochs only
    proposed, accepted = log[2]["git_filter_proposed"], log[2]["git_filter_accepted"]
    assert sum(proposed) == log[2]["generated"] > 0
    labels = torch.cat([d[0] for d in decisions])
    kept = torch.cat([d[1] for d in decisions])
    assert proposed == torch.bincount(labels, minlength=4).tolist()
    assert accepted == torch.bincount(labels[kept], minlength=4).tolist()
    assert proposed[0] == proposed[1] == 0 and accepted[2] == proposed[2] > 0 and proposed[3] > accepted[3] == 0
    # every step trained on the real labels at its rejected slots, the generated ones at its accepted slots
    assert sum(plan.generated for plan, _, _ in composed.values()) == log[2]["generated"]
    for plan, y, real_labels in composed.values():
        want = real_labels.clone()
        if plan.git is not None:
            assert torch.equal(plan.accepted, plan.git.labels == 2)
            want[plan.gen_slots[plan.accepted]] = plan.git.labels[plan.accepted]
        assert torch.equal(y, want) and torch.equal(plan.labels, want)
    assert res["git_filter"]["rule"] == "top1" and res["git_filter"]["min_prob"] is None
    assert res["git_filter"]["classifier"]["path"] == str(tmp_path / "reference.pt")
    assert res["git_filter"]["classifier"]["dataset"] == "fmnist-dil-lt"
    # the report: acceptance per class against class size, and the overall acceptance
    out = tmp_path / "report"
    md = open(write_report([str(tmp_path / "runs")], str(out))).read()
    assert "Class filter" in md and f"{sum(accepted)} of {sum(proposed)}" in md
    assert (out / "git_filter_acceptance_fmnist-dil-lt.png").is_file()


def test_rejected_slots_carry_their_real_labels_in_the_plan(tmp_path):
    run = classifier.ClassifierRun(filter_config(str(tmp_path)))  # set up, as the run starts
    bidx = torch.arange(16)
    bidx2 = torch.nonzero(run.y_train_cpu >= 2).flatten().repeat(2)[:16]  # classes 2 and 3: all candidates generated
    plan = run.plan_batch(bidx, 2, 0, bidx2)
    assert plan.generated == 12 and plan.accepted is None
    x, y = run.materialize(plan)
    assert torch.equal(plan.accepted, plan.git.labels == 2)
    rejected = plan.gen_slots[~plan.accepted]
    assert len(rejected) > 0
    assert torch.equal(y[rejected], run.y_train[bidx[rejected]])
    real_x, _ = run.materialize(run.plan_batch(bidx, 2, 0))  # no GIT: the real batch
    assert torch.equal(x[rejected], real_x[rejected])


def test_resume_after_a_mid_epoch_stop_gives_the_same_weights_and_counts(tmp_path, monkeypatch):
    whole = classifier.train(filter_config(str(tmp_path / "a")))
    ref = load_checkpoint(str(tmp_path / "a" / "runs" / "ref" / "checkpoint.pt"))["model"]
    real_step, calls = classifier.ClassifierRun._train_step, {"n": 0}

    def step_then_signal(self, *a, **k):
        out = real_step(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 12:  # 5 steps an epoch: epoch 2 (GIT) after step 2
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(classifier.ClassifierRun, "_train_step", step_then_signal)
    with pytest.raises(TrainingInterrupted, match="epoch 2 step 2"):
        classifier.train(filter_config(str(tmp_path / "b")))
    monkeypatch.setattr(classifier.ClassifierRun, "_train_step", real_step)
    ck = load_checkpoint(str(tmp_path / "b" / "runs" / "ref" / "checkpoint.pt"))
    assert (ck["epoch"], ck["step"]) == (2, 2) and sum(ck["running"]["git_filter_proposed"]) > 0
    resumed_cfg = filter_config(str(tmp_path / "b"))
    resumed_cfg.resume = True
    resumed = classifier.train(resumed_cfg)
    got = load_checkpoint(str(tmp_path / "b" / "runs" / "ref" / "checkpoint.pt"))["model"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    keys = ("epoch", "generated", "git_filter_proposed", "git_filter_accepted", "train_loss")
    a, b = log_of(tmp_path / "a" / "runs" / "ref"), log_of(tmp_path / "b" / "runs" / "ref")
    assert [{k: r.get(k) for k in keys} for r in a] == [{k: r.get(k) for k in keys} for r in b]
    assert whole["test_error"] == resumed["test_error"]


def test_two_processes_filter_like_one(tmp_path):
    """Each process judges its own generated rows; one gather gives both the global batch's
    decisions, so the class-weighted loss shares (DRW) use the same global labels as one process:
    the counts are the single process's exactly and the training matches it."""
    from test_distributed import make_setup, max_diff, one_thread, torchrun, weights

    setup = make_setup(tmp_path, rule="drw", sync_bn=True)
    data = setup["cfg"]["data"]
    clf = write_classifier(tmp_path / "reference.pt", data, bias=[0.0, 0.0, 2.0, 1.0], mean=[0.4], std=[0.6])
    cfg = dict(setup["cfg"], git=dict(setup["cfg"]["git"], filter="top1", filter_classifier=clf))
    (tmp_path / "cfg.yaml").write_text(dump_yaml(to_dict(from_dict(classifier.TrainConfig, cfg))))
    with one_thread():
        classifier.train(from_dict(classifier.TrainConfig, dict(cfg, name="single")))
    torchrun(["train", str(tmp_path / "cfg.yaml"), "name=ddp"], tmp_path)
    single, ddp = log_of(tmp_path / "runs" / "single"), log_of(tmp_path / "runs" / "ddp")
    for key in ("generated", "git_filter_proposed", "git_filter_accepted"):
        assert [r.get(key) for r in ddp] == [r.get(key) for r in single], key
    accepted, proposed = single[2]["git_filter_accepted"], single[2]["git_filter_proposed"]
    assert 0 < sum(accepted) < sum(proposed)
    assert [r["train_loss"] for r in ddp] == pytest.approx([r["train_loss"] for r in single], rel=1e-3)
    assert max_diff(weights(tmp_path / "runs" / "single"), weights(tmp_path / "runs" / "ddp"), buffers=False) < 2e-3


def test_filter_config_errors_name_their_keys(tmp_path):
    base = to_dict(reference_config(str(tmp_path / "cfg")))

    def cfg(name="ref", **git):
        return from_dict(classifier.TrainConfig, dict(base, name=name, git=dict(base["git"], **git)))

    with pytest.raises(InvTransferError, match="config key 'git.filter': 'top5' is not allowed"):
        cfg(filter="top5", filter_classifier="x")
    for bad in (0, 1.5):
        with pytest.raises(InvTransferError, match="config key 'git.filter_min_prob'"):
            cfg(filter="prob", filter_classifier="x", filter_min_prob=bad)
    with pytest.raises(InvTransferError, match="config key 'git.filter_classifier' is required with git.filter=top1"):
        cfg(filter="top1")
    with pytest.raises(InvTransferError, match="'git.filter_classifier'='x' is set but git.filter=none"):
        cfg(filter_classifier="x")
    with pytest.raises(InvTransferError, match="config key 'git.filter'=top1 .* git.generator is not set"):
        cfg(filter="top1", filter_classifier="x", generator=None)
    runs = tmp_path / "cfg" / "runs"
    with pytest.raises(InvTransferError, match=r"'git.filter_classifier'='.*nope': no such file"):
        classifier.ClassifierRun(cfg(filter="top1", filter_classifier=str(tmp_path / "nope")))
    with pytest.raises(InvTransferError, match=r"'git.filter_classifier'=.*gen.pt.*is a generator checkpoint"):
        classifier.ClassifierRun(cfg(filter="top1", filter_classifier=base["git"]["generator"]))
    # a classifier of another dataset (instance 1 of the same preset): refused before the run folder exists
    other = write_classifier(tmp_path / "other.pt", dict(base["data"], instance=1))
    with pytest.raises(InvTransferError, match=r"config key 'git.filter_classifier': classifier .*other.pt was trained "
                                               r"on dataset 'fmnist-dil-lt' .*instance 1 vs 0.*"
                                               r"git.allow_other_dataset=true"):
        classifier.ClassifierRun(cfg(filter="top1", filter_classifier=other))
    assert not runs.exists()
    run = classifier.ClassifierRun(cfg(filter="top1", filter_classifier=other, allow_other_dataset=True))
    assert run.class_filter.classifier.meta["fingerprint"] != run.ds.fingerprint
    # images or classes that differ are refused even then
    x, y = make_images(60, size=12, seed=1)
    np.savez(tmp_path / "npz12.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    small = write_classifier(tmp_path / "small.pt", tiny_data_overrides(tmp_path / "npz12.npz"))
    with pytest.raises(InvTransferError, match=r"'git.filter_classifier': classifier .*small.pt takes images of "
                                               r"shape \(C, H, W\) = \(1, 12, 12\), but dataset 'fmnist-dil-lt' "
                                               r"has \(1, 16, 16\)"):
        classifier.ClassifierRun(cfg("small", filter="top1", filter_classifier=small, allow_other_dataset=True))
    x, y = make_images(60, num_classes=3, size=16, seed=1)
    np.savez(tmp_path / "npz3.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    three = write_classifier(tmp_path / "three.pt", tiny_data_overrides(tmp_path / "npz3.npz", counts=[40, 20, 8]))
    with pytest.raises(InvTransferError, match=r"three.pt has 3 classes, but dataset 'fmnist-dil-lt' has 4"):
        classifier.ClassifierRun(cfg("three", filter="top1", filter_classifier=three, allow_other_dataset=True))
    # the public loader gives the classifier's own normaliser
    keep = load_class_filter(other, rule="prob", min_prob=0.8)
    assert keep.rule == "prob" and keep.min_prob == 0.8 and keep.classifier.path == str(other)
