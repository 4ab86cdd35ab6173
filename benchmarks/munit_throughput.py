"""MUNIT training throughput (images per stream per second) for a few presets, in one process.

Each setting does a warm-up, then the settings alternate in rounds so that a load change on a
shared machine hits all of them alike. Prints one JSON line per setting (median over rounds).

    python benchmarks/munit_throughput.py data.data_root=/work/shared/data --threads 1 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from invtransfer.config import load_config
from invtransfer.train import generator

SETTINGS = {  # label -> (preset, overrides)
    "paper_b1": ("configs/generator/fmnist_munit.yaml", ["batch_size=1"]),
    "paper_b16": ("configs/generator/fmnist_munit.yaml", ["batch_size=16"]),
    "small_b16": ("configs/generator/fmnist_munit_small.yaml", ["batch_size=16"]),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="key=value for every setting (e.g. data.data_root=DIR)")
    p.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--threads", nargs="*", type=int, default=[torch.get_num_threads()])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0, help="time per setting per round (whole iterations)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as out:
        for label in a.settings:
            preset, over = SETTINGS[label]
            cfg = load_config(generator.GeneratorTrainConfig, preset,
                              [*over, *a.overrides, f"out_dir={out}", f"name={label}", f"device={a.device}"])
            run = generator.GeneratorRun(cfg)
            run._setup()
            runs[label] = run
        rates: dict[tuple[str, int], list[float]] = {}
        it = 0
        for threads in a.threads:  # warm-up: first calls create kernels and allocator pools
            torch.set_num_threads(threads)
            for run in runs.values():
                for _ in range(2):
                    run.train_step(it)
                    it += 1
        for _ in range(a.rounds):
            for threads in a.threads:
                torch.set_num_threads(threads)
                for label, run in runs.items():
                    n, t0 = 0, time.perf_counter()
                    while n == 0 or time.perf_counter() - t0 < a.seconds:
                        run.train_step(it)
                        it += 1
                        n += 1
                    if run.device.type == "cuda":
                        torch.cuda.synchronize()
                    dt = time.perf_counter() - t0
                    rates.setdefault((label, threads), []).append(n * run.cfg.batch_size / dt)
    for (label, threads), r in rates.items():
        print(json.dumps({"setting": label, "threads": threads, "device": a.device,
                          "images_per_s_median": statistics.median(r), "images_per_s_rounds": r}))


if __name__ == "__main__":
    main()
