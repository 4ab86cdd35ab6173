"""Helpers shared by the benchmarks: data (real or synthetic of the same shape), statistics, profiles.

Benchmarks run pipelines side by side in one process, alternating blocks of work, so a load
change on a shared machine hits all of them alike; they report min / median / max over the
repeats and the ratio of each pair of interest, computed per repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from invtransfer.data import datasets, longtail
from invtransfer.errors import InvTransferError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def bench_parser(doc: str, config: str, overrides_help: str) -> argparse.ArgumentParser:
    """The options every classifier-side benchmark shares: ``--config``, ``key=value`` overrides,
    ``--repeats``, ``--data`` (CIFAR configs: real CIFAR-10-LT, synthetic data of its shape, or
    real when found) and ``--json``; each script adds its own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--config", default=config)
    p.add_argument("overrides", nargs="*", help=overrides_help)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", choices=("auto", "real", "synthetic"), default="auto",
                   help="CIFAR configs: real CIFAR-10-LT, synthetic data of its shape, or real when found")
    p.add_argument("--json", action="store_true")
    return p


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def ratios(a: list[float], b: list[float]) -> dict:
    """Per-repeat ratios a / b (the pipelines of one repeat ran back to back)."""
    return spread([x / y for x, y in zip(a, b)])


def fmt(v: dict, unit: str = "") -> str:
    return f"median {v['median']:9.3f}{unit}  min {v['min']:9.3f}  max {v['max']:9.3f}"


def bracket(v: dict, digits: int = 3) -> str:
    """``median [min, max]``, the form RESULTS.md quotes."""
    return f"{v['median']:.{digits}f} [{v['min']:.{digits}f}, {v['max']:.{digits}f}]"


def rotated(names: list[str], rep: int) -> list[str]:
    """The pipelines in the order of repeat ``rep``: rotated by one each repeat, so none is always first."""
    k = rep % len(names)
    return names[k:] + names[:k]


def time_rotated(pipelines: dict[str, Callable[[int], float]], repeats: int, per_block: int) -> dict[str, list[float]]:
    """Seconds per unit of each pipeline, one entry per repeat. ``pipelines[name](k)`` does unit
    ``k`` (a step, a batch) and returns its seconds; each is warmed up on unit 0, then every repeat
    runs a block of ``per_block`` units of each, the same units for all, in an order rotated
    every repeat (:func:`rotated`)."""
    for fn in pipelines.values():  # warm-up
        fn(0)
    secs: dict[str, list[float]] = {name: [] for name in pipelines}
    k = 1
    for rep in range(repeats):
        for name in rotated(list(pipelines), rep):
            secs[name].append(sum(pipelines[name](k + i) for i in range(per_block)) / per_block)
        k += per_block
    return secs


def preset_arch(path: str) -> dict:
    """The MUNIT architecture values a generator preset sets (those the dataset decides left out)."""
    from invtransfer.config import load_config, to_dict
    from invtransfer.train.generator import GeneratorTrainConfig

    return {k: v for k, v in to_dict(load_config(GeneratorTrainConfig, path).arch).items() if v is not None}


def machine() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "load_average": os.getloadavg()[0],
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def synthetic_cifar10_lt(folder: str) -> str:
    """A generic npz with CIFAR-10-LT's shape: 10 classes of 32x32 RGB, exactly the LT class sizes.

    Class c holds ``int(5000 * 0.01 ** (c / 9))`` training images plus the 20 the preset holds out
    for validation, and 100 test images; pixels are uniform noise (the benchmarks time
    throughput, not learning).
    """
    path = os.path.join(folder, "synthetic_cifar10_lt.npz")
    if os.path.isfile(path):
        return path
    rng = np.random.default_rng(0)
    sizes = [n + 20 for n in longtail.exponential_profile(5000, 10, 100.0)]
    y_train = np.repeat(np.arange(10), sizes)
    y_test = np.repeat(np.arange(10), 100)
    np.savez(path, x_train=rng.integers(0, 256, (len(y_train), 32, 32, 3), dtype=np.uint8), y_train=y_train,
             x_test=rng.integers(0, 256, (len(y_test), 32, 32, 3), dtype=np.uint8), y_test=y_test)
    return path


def cifar10_lt_overrides(kind: str, folder: str) -> tuple[list[str], str]:
    """Dataset overrides for CIFAR-10-LT: the real files (data roots as usual) when ``kind`` is
    ``real``, or when it is ``auto`` and they are found; else synthetic data of the same shape."""
    if kind in ("auto", "real"):
        try:
            datasets.build_dataset(datasets.DatasetConfig(name="cifar10-lt"))
            return [], "real CIFAR-10-LT"
        except InvTransferError as e:
            if kind == "real":
                raise
            print(f"(real CIFAR-10 not found, using synthetic data of its shape: {str(e).splitlines()[0][:120]})")
    path = synthetic_cifar10_lt(folder)
    return ["data.source=npz", f"data.npz_file={path}"], "synthetic CIFAR-10-LT (noise, same shape and class sizes)"


def profile_table(fn: Callable[[], None], steps: int = 2, rows: int = 15) -> str:
    """torch.profiler's table of the top ops (self CPU time) over ``steps`` calls of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            fn()
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def emit(out: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(out))
