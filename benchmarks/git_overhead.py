"""Cost of GIT's generated samples: training steps with GIT active vs inactive vs the generator alone.

For each generator preset (``paper``: configs/generator/cifar10_munit.yaml, the paper's MUNIT
architecture; ``small``: configs/generator/cifar10_munit_small.yaml; untrained weights: the cost
does not depend on them), on CIFAR-10-LT (real, else synthetic data of its shape) with the
ce_drs_git config (gen_frac 0.5: 64 of 128 slots generated), in one process, alternating blocks
of ``--steps`` in an order rotated every repeat:

* ``plain``: ``ClassifierRun._train_step`` without the second stream (GIT inactive);
* ``git_<generator>``: the same step with the second stream (GIT active);
* ``generator_<generator>``: the nuisance sampler alone on that step's generated slots (their
  sources already gathered and augmented), i.e. the inference the GIT step cannot avoid.

Reports seconds per step of each and, computed per repeat, ``git / plain`` (what GIT costs per
step) and ``(git - plain) / generator``: 1 means GIT costs exactly its generator inference; the
target (checked, never asserted) is <= 1.10, and a missed target prints the profile of a GIT
step. The rows that pass through the generator's encoder and decoder during the GIT steps are
counted and compared with the generated slots the steps planned: a difference (something
generated and thrown away, or a slot left ungenerated) is an error, exit status 1.

    python benchmarks/git_overhead.py --json
    python benchmarks/git_overhead.py --generators paper --steps 3 --repeats 5 device=cuda
    python benchmarks/git_overhead.py --data synthetic model=resnet20 optim.batch_size=16   # a quick check
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import torch

from common import (ROOT, bench_parser, bracket, cifar10_lt_overrides, emit, machine, preset_arch, profile_table,
                    ratios, spread, sync, time_rotated)
from invtransfer.config import from_dict, load_config, to_dict
from invtransfer.data import batches
from invtransfer.models.munit import MunitArch, MunitGenerator
from invtransfer.train import classifier
from invtransfer.train.checkpoint import atomic_save

GENERATORS = {"paper": os.path.join(ROOT, "configs", "generator", "cifar10_munit.yaml"),
              "small": os.path.join(ROOT, "configs", "generator", "cifar10_munit_small.yaml")}


def save_untrained(path: str, channels: int, size: int, arch_values: dict) -> str:
    arch = from_dict(MunitArch, dict(arch_values, channels=channels, image_size=size))
    torch.manual_seed(0)
    atomic_save({"format": "invtransfer/generator", "state": "weights", "arch": to_dict(arch),
                 "generator": MunitGenerator(arch).state_dict(), "dataset": {"image_shape": [channels, size, size]},
                 "iteration": 0, "images_seen": 0}, path)
    return path


def untrained_git_run(config: str, overrides: list[str], tmp: str, gname: str,
                      extra: tuple[str, ...] = ()) -> classifier.ClassifierRun:
    """The (set-up) classifier run of ``config`` with ``overrides`` and ``extra``, its folder in
    ``tmp``, whose GIT uses an untrained generator of preset ``gname`` written there."""
    gen_path = save_untrained(f"{tmp}/{gname}.pt", 3, 32, preset_arch(GENERATORS[gname]))
    cfg = load_config(classifier.TrainConfig, config, [*overrides, f"git.generator={gen_path}",
                                                       "git.allow_other_dataset=true",  # untrained
                                                       f"out_dir={tmp}", f"name=git_{gname}", "quiet=true", *extra])
    return classifier.ClassifierRun(cfg)


class RowCounter:
    """Counts the generated slots a run plans (wraps its ``plan_batch``) and the rows its generator
    encodes and decodes (wraps the generator's two halves)."""

    def __init__(self, run: classifier.ClassifierRun):
        self.planned = self.encoded = self.decoded = 0
        gen = run.nuisance_sampler.gen
        plan_batch, encode, decode = run.plan_batch, gen.content_encoder.forward, gen.decode

        def counted_plan(*args, **kwargs):
            plan = plan_batch(*args, **kwargs)
            self.planned += plan.generated
            return plan

        def counted_encode(x):
            self.encoded += x.shape[0]
            return encode(x)

        def counted_decode(content, styles):
            self.decoded += content.shape[0]
            return decode(content, styles)

        run.plan_batch = counted_plan
        gen.content_encoder.forward = counted_encode
        gen.decode = counted_decode

    def totals(self) -> tuple[int, int, int]:
        return self.planned, self.encoded, self.decoded


def main() -> int:
    p = bench_parser(__doc__, "configs/cifar10_lt/ce_drs_git.yaml", "key=value for the classifier (e.g. device=cuda)")
    p.add_argument("--generators", nargs="*", default=list(GENERATORS), choices=list(GENERATORS))
    p.add_argument("--steps", type=int, default=2)
    a = p.parse_args()
    out = {"benchmark": "git_overhead", "config": a.config, "overrides": a.overrides, "steps_per_block": a.steps,
           "repeats": a.repeats, "generators": {}, **machine()}
    with tempfile.TemporaryDirectory() as tmp:
        data_over, out["data"] = cifar10_lt_overrides(a.data, tmp)
        runs: dict[str, classifier.ClassifierRun] = {}
        counters: dict[str, RowCounter] = {}
        for gname in a.generators:
            runs[gname] = run = untrained_git_run(a.config, [*data_over, *a.overrides], tmp, gname)
            counters[gname] = RowCounter(run)
        base = runs[a.generators[0]]  # the plain step (no generator) is the same on every run
        cfg, bs = base.cfg, base.cfg.optim.batch_size
        idx = batches.epoch_indices("balanced", base.y_train_cpu, base.counts_t, 0, 0)
        idx2 = batches.epoch_indices("balanced", base.y_train_cpu, base.counts_t, 0, 0, stream=2)
        n_batches = len(idx) // bs
        epoch = cfg.git_start  # an epoch with DRS resampling and GIT
        # generated slots the GIT steps planned, rows they put through the generator's encoder and decoder
        counted = {g: {"planned": 0, "encoded": 0, "decoded": 0} for g in runs}

        def rows(k):
            s = k % n_batches
            return idx[s * bs:(s + 1) * bs], idx2[s * bs:(s + 1) * bs], s

        def plain(k):
            b, _, s = rows(k)
            base._train_step(b, epoch, s, None)

        def git(gname, k):
            b, b2, s = rows(k)
            before = counters[gname].totals()
            runs[gname]._train_step(b, epoch, s, None, b2)
            for key, x, y in zip(counted[gname], counters[gname].totals(), before):
                counted[gname][key] += x - y

        def generator_inputs(gname, k):
            run = runs[gname]
            b, b2, s = rows(k)
            plan = run.plan_batch(b, epoch, s, b2)
            x2 = run.augmenter.apply(run.x_train[batches.to_device(plan.gen_index, run.device)], plan.gen_augment)
            return x2, plan.gen_styles

        def generator(gname, k):  # seconds of the sampler's own call only
            run = runs[gname]
            x2, styles = generator_inputs(gname, k)
            sync()
            t = time.perf_counter()
            run.nuisance_sampler(x2, run.normalizer.mean, run.normalizer.std, styles=styles)
            sync()
            return time.perf_counter() - t

        def timed(fn, k):
            sync()
            t = time.perf_counter()
            fn(k)
            sync()
            return time.perf_counter() - t

        pipelines = {"plain": lambda k: timed(plain, k)}
        for gname in runs:
            pipelines[f"git_{gname}"] = lambda k, g=gname: timed(lambda i: git(g, i), k)
            pipelines[f"generator_{gname}"] = lambda k, g=gname: generator(g, k)
        secs = time_rotated(pipelines, a.repeats, a.steps)  # the same steps for each pipeline; rotated order
        k = 1 + a.repeats * a.steps  # the next step (the profile of a missed target)

        out["seconds_per_step"] = {name: spread(v) for name, v in secs.items()}
        out["ratios"] = {}
        failed = []
        print(f"GIT overhead, {cfg.model} batch {bs}, {base.device}, data: {out['data']}; threads "
              f"{torch.get_num_threads()}, load average {out['load_average']:.1f}")
        for name, v in out["seconds_per_step"].items():
            print(f"  {name:>18} s/step: {bracket(v, 4)}")
        for gname, run in runs.items():
            git_s, gen_s = secs[f"git_{gname}"], secs[f"generator_{gname}"]
            over = [(g - q) / s for g, q, s in zip(git_s, secs["plain"], gen_s)]
            res = {"preset": os.path.relpath(GENERATORS[gname], ROOT), "arch": to_dict(run.nuisance_sampler.gen.arch),
                   "generated_per_step": int(bs * run.cfg.git.gen_frac),
                   "seconds_per_step": {"plain": spread(secs["plain"]), "git": spread(git_s),
                                        "generator": spread(gen_s)},
                   "git_over_plain": ratios(git_s, secs["plain"]), "(git-plain)/generator": spread(over),
                   "generated_rows": dict(counted[gname])}
            res["generated_rows"]["match"] = len(set(counted[gname].values())) == 1
            res["target_met"] = res["(git-plain)/generator"]["median"] <= 1.10
            out["ratios"][f"git_{gname}/plain"] = res["git_over_plain"]
            out["ratios"][f"(git_{gname}-plain)/generator_{gname}"] = res["(git-plain)/generator"]
            rows_ = res["generated_rows"]
            print(f"{gname} generator ({res['preset']}; {res['generated_per_step']} of {bs} slots generated)")
            print(f"  {'git / plain':>22}: {bracket(res['git_over_plain'])}")
            print(f"  {'(git-plain)/generator':>22}: {bracket(res['(git-plain)/generator'])}  target <= 1.10: "
                  f"{'met' if res['target_met'] else 'NOT met'}")
            print(f"  {'rows generated':>22}: planned {rows_['planned']}, encoded {rows_['encoded']}, decoded "
                  f"{rows_['decoded']}: {'as planned' if rows_['match'] else 'DIFFERENT FROM THE PLAN'}")
            if not rows_["match"]:
                failed.append(gname)
            if not res["target_met"]:
                res["profile_git_step"] = profile_table(lambda g=gname: git(g, k), 1)
                print(f"\nprofile of one GIT step ({gname}):\n{res['profile_git_step']}")
            out["generators"][gname] = res
        if "paper" in runs and "small" in runs:
            out["ratios"]["git_small/git_paper"] = ratios(secs["git_small"], secs["git_paper"])
            out["ratios"]["generator_small/generator_paper"] = ratios(secs["generator_small"],
                                                                      secs["generator_paper"])
            for key in ("git_small/git_paper", "generator_small/generator_paper"):
                print(f"  {key:>32}: {bracket(out['ratios'][key])}")
        out["rows_as_planned"] = not failed
    emit(out, a.json)
    if failed:
        print(f"error: the GIT steps of {', '.join(failed)} put a number of rows through the generator other than "
              f"the generated slots they planned", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
