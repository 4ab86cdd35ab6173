"""GIT generates exactly the slots it plans: nothing generated and thrown away, no slot left out."""

import json
from collections import Counter

import numpy as np

from conftest import make_images, tiny_data_overrides
from invtransfer.config import from_dict
from invtransfer.models.munit import MunitGenerator
from invtransfer.train import classifier
from invtransfer.train.generator import NuisanceSampler
from test_git import save_generator


def test_git_epoch_generates_exactly_the_planned_rows(tmp_path, monkeypatch):
    x, y = make_images(60, size=16, seed=1)
    xt, yt = make_images(15, size=16, seed=2)
    npz = tmp_path / "tiny16.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=xt, y_test=yt)
    # Class sizes [40, 20, 8, 4]; the threshold weighting keeps generated slots of classes with
    # n_c <= 8 only, so a step generates fewer rows than its gen_frac * batch candidate slots and
    # the count depends on the plan's draws, not on the batch size alone.
    cfg = from_dict(classifier.TrainConfig, {
        "data": tiny_data_overrides(npz), "model": "resnet20", "augment": "crop_flip", "crop_padding": 2,
        "rule": "drs", "optim": {"epochs": 3, "batch_size": 16, "warmup_epochs": 1, "decay1_epoch": 1,
                                 "decay2_epoch": 2},
        "git": {"generator": save_generator(tmp_path / "gen.pt", data=tiny_data_overrides(npz)), "gen_frac": 0.75,
                "weighting": "threshold", "class_size_threshold": 8},
        "out_dir": str(tmp_path / "runs"), "name": "rows", "quiet": True, "select": "last"})

    where = {}  # the (epoch, step) being trained
    planned, sampled, decoded = Counter(), Counter(), Counter()
    real_step, real_plan = classifier.ClassifierRun._train_step, classifier.ClassifierRun.plan_batch
    real_call, real_decode = NuisanceSampler.__call__, MunitGenerator.decode

    def train_step(self, bidx, epoch, step, weight, bidx2=None):
        where["now"] = (epoch, step)
        try:
            return real_step(self, bidx, epoch, step, weight, bidx2)
        finally:
            where.pop("now")

    def plan_batch(self, bidx, epoch, step, bidx2=None):
        plan = real_plan(self, bidx, epoch, step, bidx2)
        assert where.get("now") == (epoch, step)  # planned by the step itself
        planned[(epoch, step)] += plan.generated
        return plan

    def call(self, x, *args, **kwargs):
        sampled[where["now"]] += x.shape[0]
        return real_call(self, x, *args, **kwargs)

    def decode(self, content, styles):
        decoded[where["now"]] += content.shape[0]
        return real_decode(self, content, styles)

    monkeypatch.setattr(classifier.ClassifierRun, "_train_step", train_step)
    monkeypatch.setattr(classifier.ClassifierRun, "plan_batch", plan_batch)
    monkeypatch.setattr(NuisanceSampler, "__call__", call)
    monkeypatch.setattr(MunitGenerator, "decode", decode)
    classifier.train(cfg)

    steps = -(-72 // 16)  # 72 training images ([40, 20, 8, 4]), batch 16
    assert len(planned) == 3 * steps  # one plan per step
    git_steps = {k: v for k, v in planned.items() if k[0] == 2}  # GIT from E1 + 1 = 2
    assert sum(v for k, v in planned.items() if k[0] < 2) == 0
    total = sum(git_steps.values())
    candidates = sum(int(min(16, 72 - 16 * s) * 0.75) for s in range(steps))
    assert 0 < total < candidates  # the weighting dropped some candidate slots
    # every step put exactly its planned slots through the sampler and the generator's decoder
    assert +sampled == +decoded == +Counter(git_steps)
    log = [json.loads(ln) for ln in (tmp_path / "runs" / "rows" / "metrics.jsonl").read_text().splitlines()]
    assert [r["generated"] for r in log] == [0, 0, total]

