"""``invtransfer demo``: the whole pipeline on Fashion-MNIST-DIL-LT at a CPU-sized budget.

It replaces ``runs/demo/``, builds the dataset and its preview, trains CE and CE+DRS on a short
version of the K49 schedule and writes ``runs/demo/report.md``. The budgets are chosen to finish
in minutes on 2 CPU cores; the report says so and draws no conclusion about the methods from them.
"""

from __future__ import annotations

import os
import shutil
import time

from invtransfer.config import from_dict, load_config
from invtransfer.data import datasets
from invtransfer.errors import InvTransferError
from invtransfer.report import markdown_table, summary_rows
from invtransfer.train import classifier

#: The demo's budgets (one place): epochs of each classifier run and its schedule.
DEMO_EPOCHS = 6
DEMO_SCHEDULE = {"epochs": DEMO_EPOCHS, "warmup_epochs": 1, "decay1_epoch": 4, "decay2_epoch": 5}


def _configs_dir() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(here, "..", "..", "configs"), os.path.join(os.getcwd(), "configs")):
        if os.path.isdir(cand):
            return os.path.abspath(cand)
    raise InvTransferError("the demo reads configs/fmnist_lt/*.yaml of the source checkout, and no configs/ "
                           "folder was found beside the package or in the current directory; run it from "
                           "the repository root.")


def run_demo(out_dir: str = "runs/demo", data: dict | None = None, epochs: int = DEMO_EPOCHS,
             quiet: bool = False) -> str:
    """Run the demo into ``out_dir`` (replaced) and return the path of its report."""
    t0 = time.time()
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    data = dict({"name": "fmnist-dil-lt"}, **(data or {}))
    print(f"[demo 1/3] building {data['name']} ...", flush=True)
    ds = datasets.build_dataset(from_dict(datasets.DatasetConfig, data))
    datasets.preview(ds, os.path.join(out_dir, "dataset_preview.png"))
    schedule = dict(DEMO_SCHEDULE, epochs=epochs, decay1_epoch=max(1, epochs * 2 // 3),
                    decay2_epoch=max(2, epochs * 5 // 6))
    schedule["decay2_epoch"] = max(schedule["decay2_epoch"], schedule["decay1_epoch"] + 1)
    results = []
    for i, method in enumerate(("ce", "ce_drs")):
        print(f"[demo 2/3] training {method} ({epochs} epochs) ...", flush=True)
        cfg = load_config(classifier.TrainConfig, os.path.join(_configs_dir(), "fmnist_lt", f"{method}.yaml"),
                          {"data": data, "optim": schedule, "out_dir": out_dir, "name": method,
                           "eval_every": epochs, "quiet": quiet})
        results.append(classifier.train(cfg))
    print("[demo 3/3] writing the report ...", flush=True)
    classifier.plot_per_class_accuracy(results, os.path.join(out_dir, "per_class_accuracy.png"))
    rows = summary_rows([dict(r, _path=os.path.join(out_dir, m)) for r, m in zip(results, ("ce", "ce_drs"))])
    report = [
        f"# invtransfer demo: {ds.name}\n\n",
        f"Dataset: {ds.name} ({len(ds.y_train)} training images, class sizes "
        f"{sorted(ds.train_class_counts, reverse=True)}, imbalance ratio "
        f"{max(ds.train_class_counts) / min(ds.train_class_counts):.0f}; {len(ds.y_val)} validation and "
        f"{len(ds.y_test)} test images; fingerprint {ds.fingerprint}).\n\n",
        f"Budget: resnet20, {epochs} epochs per classifier (the paper trains 50), one seed. These budgets "
        f"show the pipeline and its outputs; they are far too small to compare methods, and this report "
        f"claims nothing about them.\n\n",
        markdown_table(rows), "\n![training images](dataset_preview.png)\n",
        "\n![per-class test accuracy against class size](per_class_accuracy.png)\n",
        f"\nTotal demo time: {(time.time() - t0) / 60:.1f} min.\n",
    ]
    path = os.path.join(out_dir, "report.md")
    datasets.atomic_write_bytes(path, "".join(report).encode())
    print(f"report: {os.path.abspath(path)}", flush=True)
    return path
