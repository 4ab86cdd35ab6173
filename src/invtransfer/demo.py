"""``invtransfer demo``: the whole GIT pipeline on Fashion-MNIST-DIL-LT at a CPU-sized budget.

It replaces ``runs/demo/`` and then: builds the dataset and its preview; trains the small MUNIT
preset for a few hundred iterations; trains CE+DRS and CE+DRS+GIT on a short version of the K49
schedule (GIT from the epoch after E1, as published; the GIT run continues from CE+DRS's
checkpoint at that epoch rather than repeating the identical epochs before it); measures
per-class eKLD of both under the true DIL transform; and writes ``runs/demo/report.md`` with the table, the eKLD and per-class
accuracy plots and the generator's sample grid. The budgets (one block below) are chosen to
finish in minutes on 2 CPU cores; the report says so and draws no conclusion about the methods.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from invtransfer.errors import InvTransferError

# The demo's budgets, in one place.
DEMO_EPOCHS = 8  # per classifier run (the paper: 50); E1/E2 scale with it
DEMO_GENERATOR_ITERATIONS = 1100  # small MUNIT preset at batch 4: 4,400 images (the K49 public budget: 10,000)
DEMO_DRAWS = 20  # eKLD draws per image (the protocol: 100)
DEMO_IMAGES_PER_CLASS = 40


def _configs_dir() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(here, "..", "..", "configs"), os.path.join(os.getcwd(), "configs")):
        if os.path.isdir(cand):
            return os.path.abspath(cand)
    raise InvTransferError("the demo reads configs/ of the source checkout, and no configs/ folder was found "
                           "beside the package or in the current directory; run it from the repository root.")


def _schedule(epochs: int) -> dict:
    e1 = max(1, epochs * 5 // 8)
    return {"epochs": epochs, "warmup_epochs": 1, "decay1_epoch": e1, "decay2_epoch": max(e1 + 1, epochs * 7 // 8)}


def run_demo(out_dir: str = "runs/demo", data: dict | None = None, epochs: int = DEMO_EPOCHS,
             generator_iterations: int = DEMO_GENERATOR_ITERATIONS, draws: int = DEMO_DRAWS,
             quiet: bool = False) -> str:
    """Run the demo into ``out_dir`` (replaced) and return the path of its report."""
    # Imported here so that the CLI can read the budgets above without loading torch.
    from invtransfer.config import from_dict, load_config
    from invtransfer.data import datasets
    from invtransfer.metrics import invariance
    from invtransfer.report import markdown_table, summary_rows
    from invtransfer.train import classifier, generator

    t0 = time.time()
    configs = _configs_dir()
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    data = dict({"name": "fmnist-dil-lt"}, **(data or {}))
    ds = datasets.build_dataset(from_dict(datasets.DatasetConfig, data))
    print(f"[demo 1/5] dataset {ds.name}: {len(ds.y_train)} training images, class sizes "
          f"{sorted(ds.train_class_counts, reverse=True)}", flush=True)
    datasets.preview(ds, os.path.join(out_dir, "dataset_preview.png"))

    print(f"[demo 2/5] training the small generator preset for {generator_iterations} iterations ...", flush=True)
    gen_cfg = load_config(generator.GeneratorTrainConfig, os.path.join(configs, "generator", "fmnist_munit_small.yaml"),
                          {"data": data, "iterations": generator_iterations, "out_dir": out_dir, "name": "generator",
                           "sample_every": generator_iterations, "checkpoint_every": generator_iterations,
                           "quiet": quiet})
    gen_summary = generator.train(gen_cfg)
    gen_dir = os.path.join(out_dir, "generator")

    results, invs = [], []
    schedule = _schedule(epochs)

    def run_config(method: str, extra: dict) -> classifier.TrainConfig:
        return load_config(classifier.TrainConfig, os.path.join(configs, "fmnist_lt", f"{method}.yaml"),
                           dict({"data": data, "optim": schedule, "out_dir": out_dir, "name": method,
                                 "eval_every": epochs, "quiet": quiet}, **extra))

    # CE+DRS+GIT equals CE+DRS until GIT's first epoch, so it continues from CE+DRS's checkpoint
    # there (init_from) instead of training those epochs again (same weights as from scratch).
    git_cfg = run_config("ce_drs_git", {"git": {"generator": gen_dir}})
    fork = git_cfg.git_start
    git_cfg.init_from = os.path.join(out_dir, "ce_drs", f"checkpoint_e{fork}.pt")
    runs = (("ce_drs", run_config("ce_drs", {"keep_checkpoints": [fork]})), ("ce_drs_git", git_cfg))
    for step, (method, cfg) in enumerate(runs):
        print(f"[demo {3 + step}/5] training {method} ({epochs} epochs) ...", flush=True)
        results.append(classifier.train(cfg))
        inv = invariance.measure_checkpoint(os.path.join(out_dir, method), ds.nuisance, draws=draws,
                                            images_per_class=DEMO_IMAGES_PER_CLASS)
        datasets.atomic_write_bytes(os.path.join(out_dir, method, "invariance.json"),
                                    (json.dumps(inv, indent=2) + "\n").encode())
        invs.append(inv)
        results[-1]["invariance"] = inv

    print("[demo 5/5] writing the report ...", flush=True)
    labels = [r["method"] for r in results]
    invariance.plot_ekld(invs, labels, os.path.join(out_dir, "ekld_vs_class_size.png"))
    classifier.plot_per_class_accuracy(results, os.path.join(out_dir, "per_class_accuracy.png"))
    shutil.copyfile(os.path.join(gen_dir, "samples_final.png"), os.path.join(out_dir, "generator_samples.png"))
    rows = summary_rows(results)
    trend_lines = []
    for lab, inv in zip(labels, invs):
        rho = inv["spearman_rho"]
        trend_lines.append(f"- {lab}: Spearman(eKLD, class size) = {'undefined' if rho is None else f'{rho:+.2f}'}, "
                           f"mean eKLD of the smallest third of classes {inv['mean_ekld_smallest_third']:.4f}")
    trend = "\n".join(trend_lines)
    report = [
        f"# invtransfer demo: {ds.name}\n\n",
        f"Dataset: {ds.name} ({len(ds.y_train)} training images, class sizes "
        f"{sorted(ds.train_class_counts, reverse=True)}, imbalance ratio "
        f"{max(ds.train_class_counts) / min(ds.train_class_counts):.0f}; {len(ds.y_val)} validation and "
        f"{len(ds.y_test)} test images; fingerprint {ds.fingerprint}).\n\n",
        f"Budgets: small MUNIT preset, {gen_summary['iterations']} iterations at batch "
        f"{gen_summary['batch_size']} ({gen_summary['images_seen']} images; the public K49 generator saw 10,000 at "
        f"batch 1); resnet20, {epochs} epochs per classifier (the paper: 50; E1 = {schedule['decay1_epoch']}, "
        f"GIT from epoch {fork + 1} of {epochs}; CE+DRS+GIT continues from CE+DRS's checkpoint after epoch "
        f"{fork}, where the two runs are still identical); eKLD with the true DIL transform, "
        f"{DEMO_IMAGES_PER_CLASS} test images per class x {draws} draws (the protocol: 100). One seed. These "
        f"budgets show the pipeline and its outputs; they are far too small to compare the methods, and this "
        f"report claims nothing about them.\n\n",
        markdown_table(rows), "\n", trend, "\n",
        "\n![per-class eKLD against class size](ekld_vs_class_size.png)\n",
        "\n![per-class test accuracy against class size](per_class_accuracy.png)\n",
        "\nGenerator samples (per row: a real held-out image, its reconstruction, random-style decodes):\n\n"
        "![generator samples](generator_samples.png)\n",
        "\n![training images](dataset_preview.png)\n",
        f"\nTotal demo time: {(time.time() - t0) / 60:.1f} min.\n",
    ]
    path = os.path.join(out_dir, "report.md")
    datasets.atomic_write_bytes(path, "".join(report).encode())
    print(f"report: {os.path.abspath(path)}", flush=True)
    return path
