"""The tiny MUNIT run whose weights tests/data/generator_reference.json records (see
tests/data/make_generator_reference.py): 16x16 grey squares, class sizes [40, 20, 8, 4], batch 4,
the tiny architecture, 3 iterations on one thread."""

import hashlib
import os

import numpy as np
import torch

from conftest import make_images, tiny_data_overrides
from invtransfer.config import from_dict
from invtransfer.train import generator

ITERATIONS = 3
TINY_ARCH = {"width": 8, "n_res": 1, "mlp_dim": 16, "disc_width": 8}


def reference_data(tmp: str) -> dict:
    """The dataset options of the reference run (its npz written into ``tmp``)."""
    os.makedirs(tmp, exist_ok=True)
    x, y = make_images(60, size=16, seed=1)
    xt, yt = make_images(10, size=16, seed=2)
    npz = os.path.join(tmp, "tiny16.npz")
    np.savez(npz, x_train=x, y_train=y, x_test=xt, y_test=yt, class_names=np.array(["a", "b", "c", "d"]))
    return tiny_data_overrides(npz, name="fmnist-bg-lt")


def reference_config(tmp: str, **top) -> generator.GeneratorTrainConfig:
    d = {"data": reference_data(tmp), "arch": dict(TINY_ARCH), "iterations": ITERATIONS, "batch_size": 4,
         "device": "cpu", "out_dir": os.path.join(tmp, "runs"), "name": "gen", "quiet": True}
    d.update(top)
    return from_dict(generator.GeneratorTrainConfig, d)


def digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes: equal digests are equal tensors, bit for bit."""
    t = t.detach().cpu().contiguous()
    return hashlib.sha256(f"{t.dtype} {tuple(t.shape)}".encode() + t.numpy().tobytes()).hexdigest()


def machine_key() -> str:
    """The kind of machine a recording holds for: float sums differ between vector units (torch's
    CPU capability) and between CPU vendors' implementations of them (the CPU model)."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{torch.backends.cpu.get_cpu_capability()} {model}"


def weight_digests(run: generator.GeneratorRun) -> dict[str, str]:
    nets = {"gen": run.gen, "disc": run.disc}
    return {f"{n}.{k}": digest(v) for n, net in nets.items() for k, v in net.state_dict().items()}
