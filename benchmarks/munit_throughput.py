"""MUNIT training throughput (images per stream per second) for a few presets, in one process.

Each setting does a warm-up, then the settings alternate in rounds (the order rotated each
round) so that a load change on a shared machine hits all of them alike. Prints images/s per setting (min / median / max over
rounds) and the per-round ratios to the paper's batch size 1 of our default batch size (4) and
of batch 16, at the paper's width and in the small preset (target, checked, never asserted: the
default >= 2x batch 1 per image); ``--json`` adds one JSON line.

    python benchmarks/munit_throughput.py data.data_root=/work/shared/data --threads 1 2 --rounds 3
    python benchmarks/munit_throughput.py --settings paper_b1 paper_b4 paper_b16 --seconds 5 --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from common import fmt, machine, profile_table, ratios, rotated, spread
from invtransfer.config import load_config
from invtransfer.train import generator

SETTINGS = {  # label -> (preset, overrides); the learning rate does not change the time
    "paper_b1": ("configs/generator/fmnist_munit.yaml", ["batch_size=1"]),
    "paper_b4": ("configs/generator/fmnist_munit.yaml", ["batch_size=4"]),
    "paper_b16": ("configs/generator/fmnist_munit.yaml", ["batch_size=16"]),
    "small_b1": ("configs/generator/fmnist_munit_small.yaml", ["batch_size=1"]),
    "small_b4": ("configs/generator/fmnist_munit_small.yaml", ["batch_size=4"]),
    "small_b16": ("configs/generator/fmnist_munit_small.yaml", ["batch_size=16"]),
}
PAIRS = (("paper_b4", "paper_b1"), ("paper_b16", "paper_b1"), ("small_b4", "small_b1"), ("small_b16", "small_b1"),
         ("small_b4", "paper_b4"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="key=value for every setting (e.g. data.data_root=DIR)")
    p.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--threads", nargs="*", type=int, default=[torch.get_num_threads()])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0, help="time per setting per round (whole iterations)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--profile-iterations", type=int, default=2, help="iterations profiled when a target is missed")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as out:
        for label in a.settings:
            preset, over = SETTINGS[label]
            cfg = load_config(generator.GeneratorTrainConfig, preset,
                              [*over, *a.overrides, f"out_dir={out}", f"name={label}", f"device={a.device}"])
            runs[label] = generator.GeneratorRun(cfg)
        rates: dict[tuple[str, int], list[float]] = {}
        it = 0
        for threads in a.threads:  # warm-up: first calls create kernels and allocator pools
            torch.set_num_threads(threads)
            for run in runs.values():
                run.train_step(it)
                it += 1
        for rnd in range(a.rounds):
            for threads in a.threads:
                torch.set_num_threads(threads)
                for label in rotated(list(runs), rnd):  # none always first
                    run = runs[label]
                    n, t0 = 0, time.perf_counter()
                    while n == 0 or time.perf_counter() - t0 < a.seconds:
                        run.train_step(it)
                        it += 1
                        n += 1
                    if run.device.type == "cuda":
                        torch.cuda.synchronize()
                    dt = time.perf_counter() - t0
                    rates.setdefault((label, threads), []).append(n * run.cfg.batch_size / dt)
    out = {"benchmark": "munit_throughput", "device": a.device, "rounds": a.rounds, "seconds": a.seconds,
           "images_per_s": {f"{label}@{threads}": spread(r) for (label, threads), r in rates.items()},
           "ratios": {}, **machine()}
    for threads in a.threads:
        for x, y in PAIRS:
            if (x, threads) in rates and (y, threads) in rates:
                out["ratios"][f"{x}/{y}@{threads}"] = ratios(rates[(x, threads)], rates[(y, threads)])
    for key, v in out["images_per_s"].items():
        print(f"  {key:>16} images/s: {fmt(v)}")
    for key, v in out["ratios"].items():
        print(f"  {key:>26}: {fmt(v)}")
    out["targets_met"] = {f"default_batch_at_least_2x_batch_1_{arch}@{t}":
                          out["ratios"][f"{arch}_b4/{arch}_b1@{t}"]["median"] >= 2
                          for arch in ("paper", "small") for t in a.threads
                          if f"{arch}_b4/{arch}_b1@{t}" in out["ratios"]}
    for name, ok in out["targets_met"].items():
        print(f"  target {name}: {'met' if ok else 'NOT met'}")
    if not all(out["targets_met"].values()):  # where the time of one iteration goes, at both batch sizes
        out["profiles"] = {}
        for label in ("paper_b1", "paper_b4", "small_b1", "small_b4"):  # those that ran
            if label in runs:
                out["profiles"][label] = profile_table(lambda r=runs[label]: r.train_step(it), a.profile_iterations)
                print(f"\nprofile of {label} ({a.profile_iterations} iterations), top ops by self time:\n"
                      f"{out['profiles'][label]}")
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
