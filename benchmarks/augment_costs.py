"""Step cost of each strong-augmentation and SAM option, relative to plain crop/flip.

All variants run in this one process, alternating blocks of ``--steps`` training steps of
``invtransfer train``'s step (``ClassifierRun._train_step``: plan, gather, crop/flip, GIT-free
batch, the option, forward, loss, backward, optimiser step) on the same data, model and batch:

* ``crop_flip``: the config as given (the CIFAR presets: crop/flip, SGD): the baseline.
* ``randaugment``, ``autoaugment``, ``trivialaugment``: ``augment.policy=...`` (kornia's policies
  per group of ``augment.policy_group`` rows) on top of it.
* ``mixup``, ``cutmix``: ``augment.mixup=1`` / ``augment.cutmix=1``.
* ``sam``: ``optim.sam_rho=0.05`` (two forward/backward passes, so about 2x).
* ``tail_sam``: ``optim.sam_classes=tail`` with the tail the classes at or below the median class
  size (a batch without a tail example takes a plain step).

Reports seconds per step (median [min, max] over the repeats) and each variant's ratio to
``crop_flip``, per repeat. No speed is asserted anywhere.

    python benchmarks/augment_costs.py --config configs/cifar10_lt/ce.yaml --json
    python benchmarks/augment_costs.py --variants crop_flip randaugment sam device=cuda
"""

from __future__ import annotations

import statistics
import tempfile
import time

from common import bench_parser, cifar10_lt_overrides, emit, fmt, machine, ratios, rotated, spread, sync
from invtransfer.config import load_config
from invtransfer.data import batches
from invtransfer.train import classifier

VARIANTS = {
    "crop_flip": [],
    "randaugment": ["augment.policy=randaugment"],
    "autoaugment": ["augment.policy=autoaugment"],
    "trivialaugment": ["augment.policy=trivialaugment"],
    "mixup": ["augment.mixup=1.0"],
    "cutmix": ["augment.cutmix=1.0"],
    "sam": ["optim.sam_rho=0.05"],
    "tail_sam": ["optim.sam_rho=0.05", "optim.sam_classes=tail"],  # + the threshold, from the data
}


def main() -> None:
    p = bench_parser(__doc__, "configs/cifar10_lt/ce.yaml", "key=value for every variant (e.g. device=cuda)")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=4, help="training steps per timed block")
    a = p.parse_args()
    names = ["crop_flip"] + [v for v in a.variants if v != "crop_flip"]
    with tempfile.TemporaryDirectory() as tmp:
        data_over, data_desc = ([], "from the config")
        if "cifar" in a.config:
            data_over, data_desc = cifar10_lt_overrides(a.data, tmp)

        def make_run(name: str, extra: list[str]) -> classifier.ClassifierRun:
            cfg = load_config(classifier.TrainConfig, a.config, [*data_over, *a.overrides, *extra, f"out_dir={tmp}",
                                                                  f"name={name}", "quiet=true"])
            return classifier.ClassifierRun(cfg)

        base = make_run("crop_flip", [])
        threshold = int(statistics.median(base.ds.train_class_counts))
        runs = {"crop_flip": base}
        for name in names[1:]:
            extra = VARIANTS[name] + ([f"optim.sam_tail_threshold={threshold}"] if name == "tail_sam" else [])
            runs[name] = make_run(name, extra)
        bs = base.cfg.optim.batch_size
        idx = batches.epoch_indices("uniform", base.y_train_cpu, base.counts_t, 0, 0)
        n_batches = len(idx) // bs

        def step(run: classifier.ClassifierRun, k: int) -> None:
            s = k % n_batches
            run._train_step(idx[s * bs:(s + 1) * bs], 0, s, None)

        for run in runs.values():  # warm-up: allocator pools, kernels, kornia's first calls
            sync()
            step(run, 0)
        sync()
        counter = {name: 1 for name in runs}
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for rep in range(a.repeats):
            for name in rotated(names, rep):
                sync()
                t = time.perf_counter()
                for _ in range(a.steps):
                    step(runs[name], counter[name])
                    counter[name] += 1
                sync()
                seconds[name].append((time.perf_counter() - t) / a.steps)

        cfg = base.cfg
        out = {"benchmark": "augment_costs", "config": a.config, "overrides": a.overrides, "data": data_desc,
               "model": cfg.model, "batch_size": bs, "image_shape": list(base.ds.image_shape),
               "device": str(base.device), "amp": str(base.amp_dtype), "steps_per_block": a.steps,
               "repeats": a.repeats, "tail_threshold": threshold,
               "variants": {name: VARIANTS[name] for name in names},
               "seconds_per_step": {k: spread(v) for k, v in seconds.items()}, **machine()}
        # time ratios: cost of a step with the option over a plain step's
        out["ratios"] = {f"{n}/crop_flip": ratios(seconds[n], seconds["crop_flip"]) for n in names[1:]}
        print(f"{cfg.model} batch {bs} {tuple(base.ds.image_shape)} device={base.device} data: {data_desc}; "
              f"threads {out['threads']}, load average {out['load_average']:.1f}")
        for name, v in out["seconds_per_step"].items():
            print(f"  {name:>16} s/step: {fmt(v)}")
        for name, v in out["ratios"].items():
            print(f"  {name:>26}: {fmt(v)}")
        emit(out, a.json)


if __name__ == "__main__":
    main()
