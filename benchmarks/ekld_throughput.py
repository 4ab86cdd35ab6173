"""Throughput of eKLD measurement (images x draws per second) under the true transform and generators.

``measure_invariance`` (the function behind ``invtransfer invariance``) with an untrained
classifier on Fashion-MNIST-shaped held-out images (28x28 grey; uniform noise: the cost does
not depend on the pixels or weights), in one process, alternating between the transforms in an
order rotated every repeat:

* ``true_<nuisance>``: the dataset's true synthetic transform (kornia ops), default DIL;
* ``generator_<preset>``: random-style decodes of an untrained MUNIT, the paper's architecture
  (configs/generator/fmnist_munit.yaml) and the small preset's (fmnist_munit_small.yaml).

Reports images x draws per second of each and, computed per repeat, the ratios of each
generator to the true transform and of the small generator to the paper's, median [min, max]
over the repeats; ``--json`` ends with one JSON line.

    python benchmarks/ekld_throughput.py --json
    python benchmarks/ekld_throughput.py --images-per-class 40 --draws 100 --device cuda
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from common import ROOT, bracket, emit, machine, preset_arch, ratios, rotated, spread, sync
from invtransfer.config import from_dict
from invtransfer.data.batches import Normalizer
from invtransfer.metrics.invariance import measure_invariance, true_transform
from invtransfer.models.munit import MunitArch, MunitGenerator
from invtransfer.models.resnet_cifar import build_model
from invtransfer.train.classifier import resolve_device
from invtransfer.train.generator import NuisanceSampler

GENERATORS = {"paper": os.path.join(ROOT, "configs", "generator", "fmnist_munit.yaml"),
              "small": os.path.join(ROOT, "configs", "generator", "fmnist_munit_small.yaml")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--images-per-class", type=int, default=10)
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--nuisance", default="dil", choices=("rot", "bg", "dil"))
    p.add_argument("--generators", nargs="*", default=list(GENERATORS), choices=list(GENERATORS))
    p.add_argument("--batch-size", type=int, default=2000, help="measure_invariance's batch size")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    dev = resolve_device(a.device)
    rng = np.random.default_rng(0)
    n = a.classes * a.images_per_class
    pixels = torch.from_numpy(rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)).to(dev)
    labels = np.repeat(np.arange(a.classes), a.images_per_class)
    norm = Normalizer([0.29], [0.35])
    images = norm(pixels)
    torch.manual_seed(0)
    model = build_model(a.model, a.classes, in_channels=1).to(dev).eval()
    sizes = [int(4800 / (k + 1) ** 2) + 5 for k in range(a.classes)]
    true_name = f"true_{a.nuisance}"
    transforms = {true_name: true_transform(a.nuisance, norm)}
    archs = {}
    for gname in a.generators:
        torch.manual_seed(0)
        arch = from_dict(MunitArch, dict(preset_arch(GENERATORS[gname]), channels=1, image_size=28))
        archs[gname] = {"preset": os.path.relpath(GENERATORS[gname], ROOT), "width": arch.width,
                        "n_res": arch.n_res, "mlp_dim": arch.mlp_dim}
        sampler = NuisanceSampler(MunitGenerator(arch).to(dev))
        transforms[f"generator_{gname}"] = lambda x, g, s=sampler: s(x, norm.mean, norm.std, g)

    def measure(tf, draws: int) -> float:
        sync()
        t = time.perf_counter()
        measure_invariance(model, images, labels, sizes, tf, images_per_class=a.images_per_class, draws=draws,
                           batch_size=a.batch_size)
        sync()
        return n * draws / (time.perf_counter() - t)

    for tf in transforms.values():  # warm-up
        measure(tf, 1)
    rates: dict[str, list[float]] = {name: [] for name in transforms}
    for rep in range(a.repeats):
        for name in rotated(list(transforms), rep):  # no transform always first
            rates[name].append(measure(transforms[name], a.draws))
    pairs = [(f"generator_{g}", true_name) for g in a.generators]
    if "paper" in a.generators and "small" in a.generators:
        pairs.append(("generator_small", "generator_paper"))
    out = {"benchmark": "ekld_throughput", "model": a.model, "classes": a.classes,
           "images_per_class": a.images_per_class, "draws": a.draws, "repeats": a.repeats, "device": str(dev),
           "generators": archs, "image_draws_per_s": {k: spread(v) for k, v in rates.items()},
           "ratios": {f"{x}/{y}": ratios(rates[x], rates[y]) for x, y in pairs}, **machine()}
    print(f"eKLD with {a.model}, {a.classes} classes x {a.images_per_class} images x {a.draws} draws on {dev}, "
          f"{a.repeats} repeats; threads {torch.get_num_threads()}, load average {out['load_average']:.1f}")
    for name, v in out["image_draws_per_s"].items():
        print(f"  {name:>34} images x draws / s: {bracket(v, 1)}")
    for name, v in out["ratios"].items():
        print(f"  {name:>34}: {bracket(v)}")
    emit(out, a.json)


if __name__ == "__main__":
    main()
