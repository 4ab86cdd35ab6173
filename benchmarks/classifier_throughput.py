"""Training throughput of the classifier engine next to the pure model step, side by side.

Both pipelines run in this one process, alternating, on the same model, batch size and execution
mode, so a noisy shared machine affects both alike:

* ``engine``: the training step of ``invtransfer train`` (``ClassifierRun._train_step``): indices
  from the epoch sampler, gather from the device-resident uint8 tensor, batched augmentation
  and normalisation, forward, loss, backward, SGD step.
* ``pure``: forward, loss, backward and SGD step on one fixed, already normalised batch: the
  compute limit of the same model and batch.

Usage (data roots from $INVTRANSFER_DATA):
    python benchmarks/classifier_throughput.py --config configs/fmnist_lt/ce.yaml
    python benchmarks/classifier_throughput.py --config configs/cifar10_lt/ce.yaml --steps 10
Prints images/s (median, min, max over repeats) and the ratio engine/pure, and with --json a
JSON line for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch

from invtransfer.config import load_config
from invtransfer.data import batches
from invtransfer.train import classifier


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/fmnist_lt/ce.yaml")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--steps", type=int, default=15, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(classifier.TrainConfig, a.config, list(a.overrides) + [f"out_dir={tmp}", "name=bench",
                                                                                "quiet=true"])
        run = classifier.ClassifierRun(cfg)
        run._setup()
        bs = cfg.optim.batch_size
        idx = batches.epoch_indices("uniform", run.y_train, run.counts_t, 0, 0)
        fixed = run.augmenter(run.x_train[idx[:bs]], batches.step_generator(0, 0, 0))
        fixed_y = run.y_train[idx[:bs]]
        if cfg.channels_last:
            fixed = fixed.contiguous(memory_format=torch.channels_last)

        def engine_block(rep: int) -> float:
            t = time.perf_counter()
            for s in range(a.steps):
                step = (rep * a.steps + s) % (len(idx) // bs)
                run._train_step(idx[step * bs:(step + 1) * bs], 0, step, None)
            return a.steps * bs / (time.perf_counter() - t)

        def pure_block(rep: int) -> float:  # noqa: ARG001
            t = time.perf_counter()
            for _ in range(a.steps):
                loss = run.loss_fn(run.train_model(fixed).float(), fixed_y)
                run.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                run.optimizer.step()
            return a.steps * bs / (time.perf_counter() - t)

        engine_block(0), pure_block(0)  # warm-up (allocator, compile if enabled)
        eng, pure = [], []
        for rep in range(a.repeats):
            eng.append(engine_block(rep + 1))
            pure.append(pure_block(rep + 1))
        ratios = [e / q for e, q in zip(eng, pure)]
        out = {"config": a.config, "overrides": a.overrides, "model": cfg.model, "batch_size": bs,
               "image_shape": list(run.ds.image_shape), "augment": cfg.augment, "channels_last": cfg.channels_last,
               "compile": cfg.compile, "steps_per_block": a.steps, "repeats": a.repeats,
               "engine_images_per_s": {"median": statistics.median(eng), "min": min(eng), "max": max(eng)},
               "pure_images_per_s": {"median": statistics.median(pure), "min": min(pure), "max": max(pure)},
               "engine_over_pure": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
               "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor()
               or platform.machine(), "date": time.strftime("%Y-%m-%d")}
        print(f"{cfg.model} batch {bs} {tuple(run.ds.image_shape)} augment={cfg.augment} "
              f"channels_last={cfg.channels_last} compile={cfg.compile}")
        for name, v in (("engine", out["engine_images_per_s"]), ("pure fwd+bwd", out["pure_images_per_s"]),
                        ("engine / pure", out["engine_over_pure"])):
            print(f"  {name:>14}: median {v['median']:8.2f}  min {v['min']:8.2f}  max {v['max']:8.2f}")
        if a.json:
            print(json.dumps(out))


if __name__ == "__main__":
    main()
