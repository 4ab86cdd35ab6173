"""Cost of GIT's generated samples: training steps with GIT active vs inactive vs the generator alone.

For each generator (the paper's MUNIT architecture and the small preset's, untrained weights: the
cost does not depend on them), on CIFAR-10-LT (real, else synthetic data of its shape) with the
ce_drs_git config (gen_frac 0.5: 64 of 128 slots generated), alternating blocks of ``--steps``:

* ``plain``: ``ClassifierRun._train_step`` without the second stream (GIT inactive);
* ``git``: the same step with the second stream (GIT active);
* ``generator``: the nuisance sampler alone on that step's generated slots (their sources
  already gathered and augmented), i.e. the inference the GIT step cannot avoid.

Reports seconds per step of each, and ``(git - plain) / generator``: 1 means GIT costs exactly
its generator inference; the target (checked, never asserted) is <= 1.10 (nothing generated and
thrown away, no other overhead). A missed target prints the profile of a GIT step.

    python benchmarks/git_overhead.py --json
    python benchmarks/git_overhead.py --generators paper --steps 3 --repeats 5 device=cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from common import cifar10_lt_overrides, emit, fmt, machine, profile_table, ratios, spread, sync
from invtransfer.config import from_dict, load_config, to_dict
from invtransfer.data import batches
from invtransfer.models.munit import MunitArch, MunitGenerator
from invtransfer.train import classifier
from invtransfer.train.checkpoint import atomic_save

GENERATORS = {"paper": {}, "small": {"width": 32, "n_res": 2, "mlp_dim": 128, "disc_width": 32}}  # see configs


def save_untrained(path: str, channels: int, size: int, arch_overrides: dict) -> str:
    arch = from_dict(MunitArch, dict(arch_overrides, channels=channels, image_size=size))
    torch.manual_seed(0)
    atomic_save({"format": "invtransfer/generator", "state": "weights", "arch": to_dict(arch),
                 "generator": MunitGenerator(arch).state_dict(), "dataset": {"image_shape": [channels, size, size]},
                 "iteration": 0, "images_seen": 0}, path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/cifar10_lt/ce_drs_git.yaml")
    p.add_argument("overrides", nargs="*", help="key=value for the classifier (e.g. device=cuda)")
    p.add_argument("--generators", nargs="*", default=list(GENERATORS), choices=list(GENERATORS))
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", choices=("auto", "real", "synthetic"), default="auto")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    out = {"benchmark": "git_overhead", "config": a.config, "overrides": a.overrides, "steps_per_block": a.steps,
           "repeats": a.repeats, "generators": {}, **machine()}
    with tempfile.TemporaryDirectory() as tmp:
        data_over, out["data"] = cifar10_lt_overrides(a.data, tmp)
        for gname in a.generators:
            gen_path = save_untrained(f"{tmp}/{gname}.pt", 3, 32, GENERATORS[gname])
            cfg = load_config(classifier.TrainConfig, a.config, [*data_over, *a.overrides, f"git.generator={gen_path}",
                                                                  f"out_dir={tmp}", f"name=git_{gname}", "quiet=true"])
            run = classifier.ClassifierRun(cfg)
            run._setup()
            bs = cfg.optim.batch_size
            idx = batches.epoch_indices("balanced", run.y_train_cpu, run.counts_t, 0, 0)
            idx2 = batches.epoch_indices("balanced", run.y_train_cpu, run.counts_t, 0, 0, stream=2)
            n_batches = len(idx) // bs
            epoch = cfg.git_start  # an epoch with DRS resampling and GIT

            def rows(k):
                s = k % n_batches
                return idx[s * bs:(s + 1) * bs], idx2[s * bs:(s + 1) * bs], s

            def plain(k):
                b, _, s = rows(k)
                run._train_step(b, epoch, s, None)

            def git(k):
                b, b2, s = rows(k)
                run._train_step(b, epoch, s, None, b2)

            def generator_inputs(k):
                b, b2, s = rows(k)
                plan = run.plan_batch(b, epoch, s, b2)
                x2 = run.augmenter.apply(run.x_train[batches.to_device(plan.gen_index, run.device)], plan.gen_augment)
                return x2, plan.gen_styles

            def timed(fn, k):  # seconds of fn(k), for the generator only its own call
                if fn is None:
                    x2, styles = generator_inputs(k)
                    sync()
                    t = time.perf_counter()
                    run.nuisance_sampler(x2, run.normalizer.mean, run.normalizer.std, styles=styles)
                else:
                    sync()
                    t = time.perf_counter()
                    fn(k)
                sync()
                return time.perf_counter() - t

            pipelines = {"plain": plain, "git": git, "generator": None}
            for fn in pipelines.values():  # warm-up
                timed(fn, 0)
            secs = {name: [] for name in pipelines}
            k, names = 1, list(pipelines)
            for rep in range(a.repeats):  # the same steps for each pipeline; rotated order
                for name in names[rep % 3:] + names[:rep % 3]:
                    secs[name].append(sum(timed(pipelines[name], k + i) for i in range(a.steps)) / a.steps)
                k += a.steps
            overhead = [(g - q) / s for g, q, s in zip(secs["git"], secs["plain"], secs["generator"])]
            res = {"arch": to_dict(run.nuisance_sampler.gen.arch), "generated_per_step": int(bs * cfg.git.gen_frac),
                   "seconds_per_step": {k2: spread(v) for k2, v in secs.items()},
                   "git_over_plain": ratios(secs["git"], secs["plain"]),
                   "(git-plain)/generator": spread(overhead)}
            res["target_met"] = res["(git-plain)/generator"]["median"] <= 1.10
            if not res["target_met"]:
                res["profile_git_step"] = profile_table(lambda: git(k), 1)
            out["generators"][gname] = res
            print(f"{gname} generator ({res['generated_per_step']} generated of {bs}), {cfg.model}, {run.device}, "
                  f"data: {out['data']}")
            for name, v in res["seconds_per_step"].items():
                print(f"  {name:>10} s/step: {fmt(v)}")
            print(f"  {'git / plain':>22}: {fmt(res['git_over_plain'])}")
            print(f"  {'(git-plain)/generator':>22}: {fmt(res['(git-plain)/generator'])}  target <= 1.10: "
                  f"{'met' if res['target_met'] else 'NOT met'}")
            if "profile_git_step" in res:
                print(f"\nprofile of one GIT step:\n{res['profile_git_step']}")
    emit(out, a.json)


if __name__ == "__main__":
    main()
