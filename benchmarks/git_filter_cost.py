"""Cost of GIT's class filter: the reference classifier over a batch's generated rows against the
generator's own decode of them.

For each generator preset (``paper``: configs/generator/cifar10_munit.yaml; ``small``:
configs/generator/cifar10_munit_small.yaml; untrained weights: the cost does not depend on them),
on CIFAR-10-LT (real, else synthetic data of its shape) with the ce_drs_git config and
``git.filter=top1`` (gen_frac 0.5: 64 of 128 slots generated), whose reference classifier is an
untrained ``model.pt`` of the config's architecture (ResNet-32) recording the run's dataset, in
one process, alternating in an order rotated every repeat, on the generated rows of one planned
batch (their sources already gathered and augmented):

* ``generator_<generator>``: the nuisance sampler's decode of those rows (what GIT costs anyway);
* ``filter``: the run's class filter (``ClassifierRun.class_filter``, the code the engine calls)
  over the decoded images: one forward pass of the reference classifier, the keep mask.

Reports seconds per batch of each and, per repeat, ``filter / generator_<generator>``: what the
filter adds to GIT's generation, as a fraction of it. No target: the number is for choosing.

    python benchmarks/git_filter_cost.py --json
    python benchmarks/git_filter_cost.py --generators paper --batches 3 --repeats 5 device=cuda
    python benchmarks/git_filter_cost.py --data synthetic model=resnet20 optim.batch_size=16   # a quick check
"""

from __future__ import annotations

import os
import tempfile
import time

import torch

from common import ROOT, bench_parser, bracket, cifar10_lt_overrides, emit, machine, ratios, spread, sync, time_rotated
from git_overhead import GENERATORS, untrained_git_run
from invtransfer.config import load_config, to_dict
from invtransfer.data import batches, datasets
from invtransfer.models.resnet_cifar import build_model
from invtransfer.train import classifier
from invtransfer.train.checkpoint import atomic_save
from invtransfer.train.scaffold import dataset_meta


def save_reference(path: str, cfg: classifier.TrainConfig) -> str:
    """An untrained classifier model.pt of ``cfg``'s architecture, recording ``cfg``'s dataset (as
    ``invtransfer train`` writes it), so git.filter accepts it for that dataset."""
    ds = datasets.build_dataset(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, ds.num_classes, in_channels=ds.image_shape[0], cosine_head=cfg.uses_cosine_head)
    mean, std = batches.channel_stats(ds.x_train)
    atomic_save({"format": "invtransfer/classifier", "state": "weights", "config": to_dict(cfg),
                 "model": model.state_dict(), "dataset": dataset_meta(ds, normalizer={"mean": mean, "std": std}),
                 "selected_weights": {"which": "last", "epoch": 0, "why": "untrained (benchmark)"}}, path)
    return path


def main() -> int:
    p = bench_parser(__doc__, "configs/cifar10_lt/ce_drs_git.yaml", "key=value for the classifier (e.g. device=cuda)")
    p.add_argument("--generators", nargs="*", default=list(GENERATORS), choices=list(GENERATORS))
    p.add_argument("--batches", type=int, default=2, help="batches per timed block")
    a = p.parse_args()
    out = {"benchmark": "git_filter_cost", "config": a.config, "overrides": a.overrides, "batches_per_block": a.batches,
           "repeats": a.repeats, "generators": {}, **machine()}
    with tempfile.TemporaryDirectory() as tmp:
        data_over, out["data"] = cifar10_lt_overrides(a.data, tmp)
        overrides = [*data_over, *a.overrides]
        reference = save_reference(os.path.join(tmp, "reference.pt"),
                                   load_config(classifier.TrainConfig, a.config, overrides))
        with_filter = ("git.filter=top1", f"git.filter_classifier={reference}")
        runs = {g: untrained_git_run(a.config, overrides, tmp, g, with_filter) for g in a.generators}
        base = runs[a.generators[0]]
        bs = base.cfg.optim.batch_size
        idx = batches.epoch_indices("balanced", base.y_train_cpu, base.counts_t, 0, 0)
        idx2 = batches.epoch_indices("balanced", base.y_train_cpu, base.counts_t, 0, 0, stream=2)
        n_batches = len(idx) // bs
        epoch = base.cfg.git_start
        mean, std = base.normalizer.mean, base.normalizer.std

        def inputs(k):
            """The generated rows of batch k: sources (augmented), styles, labels; and their decodes."""
            s = k % n_batches
            plan = base.plan_batch(idx[s * bs:(s + 1) * bs], epoch, s, idx2[s * bs:(s + 1) * bs])
            x2 = base.augmenter.apply(base.x_train[batches.to_device(plan.gen_index, base.device)], plan.gen_augment)
            return x2, plan.gen_styles, plan.git.labels

        def timed(fn) -> float:
            sync()
            t = time.perf_counter()
            fn()
            sync()
            return time.perf_counter() - t

        def generator(gname, k):
            x2, styles, _ = inputs(k)
            sampler = runs[gname].nuisance_sampler
            return timed(lambda: sampler(x2, mean, std, styles=styles))

        def filtering(k):
            x2, styles, labels = inputs(k)
            decoded = base.nuisance_sampler(x2, mean, std, styles=styles)
            return timed(lambda: base.class_filter(decoded, labels, mean, std))

        pipelines = {f"generator_{g}": (lambda k, g=g: generator(g, k)) for g in runs}
        pipelines["filter"] = filtering
        secs = time_rotated(pipelines, a.repeats, a.batches)  # the same batches for each pipeline; rotated order

        generated = len(inputs(1)[2])
        out.update(seconds_per_batch={name: spread(v) for name, v in secs.items()}, generated_per_batch=generated,
                   batch_size=bs, reference_model=base.cfg.model, filter_rule=base.cfg.git.filter, ratios={})
        print(f"class filter cost, reference {base.cfg.model} over {generated} generated rows of a batch of {bs}, "
              f"{base.device}, data: {out['data']}; threads {torch.get_num_threads()}, load average "
              f"{out['load_average']:.1f}")
        for name, v in out["seconds_per_batch"].items():
            print(f"  {name:>18} s/batch: {bracket(v, 4)}")
        for gname, run in runs.items():
            key = f"filter/generator_{gname}"
            out["ratios"][key] = ratios(secs["filter"], secs[f"generator_{gname}"])
            out["generators"][gname] = {"preset": os.path.relpath(GENERATORS[gname], ROOT),
                                        "arch": to_dict(run.nuisance_sampler.gen.arch)}
            print(f"  {key:>26}: {bracket(out['ratios'][key])}")
    emit(out, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
