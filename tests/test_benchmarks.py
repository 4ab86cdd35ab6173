"""Every benchmark script at its smallest size, as a subprocess: it runs (exit 0) and its JSON has
the keys that `make bench` and RESULTS.md read, with finite ratios. This guards the benchmarks
against API drift in the package; no speed is ever asserted."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_images

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BENCH = os.path.join(ROOT, "benchmarks")
# CIFAR-10-LT-shaped synthetic data cut down to a tiny long-tailed profile; resnet20, batch 16
CIFAR_TINY = ["--data", "synthetic", "model=resnet20", "optim.batch_size=16", "data.profile=list",
              "data.counts=[30,20,10,10,10,10,10,10,10,10]"]


def fmnist_tiny(tmp_path):
    """Fashion-MNIST-shaped (28x28 grey) tiny long-tailed data for the MUNIT presets."""
    x, y = make_images(30, size=28, seed=1)
    xt, yt = make_images(5, size=28, seed=2)
    np.savez(tmp_path / "t28.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    return ["data.source=npz", f"data.npz_file={tmp_path / 't28.npz'}", "data.profile=list", "data.counts=[20,10,6,3]",
            "data.class_order=index"]


COMMANDS = {  # script -> its arguments (a function of tmp_path where it needs data)
    "augment_costs.py": lambda tmp: ["--config", "configs/cifar10_lt/ce.yaml", "--steps", "1", "--repeats", "1",
                                     "--json", *CIFAR_TINY],
    "classifier_throughput.py": lambda tmp: ["--config", "configs/cifar10_lt/ce.yaml", "--steps", "1", "--repeats", "1",
                                             "--workers", "1", "--pipelines", "ours", "ours_nchw", "pure", "data",
                                             "reference", "--json", *CIFAR_TINY],  # ours_compile: ~1 min of compile
    "munit_throughput.py": lambda tmp: ["--settings", "small_b1", "small_b4", "--seconds", "0", "--rounds", "1",
                                        "--profile-iterations", "1", "--json", *fmnist_tiny(tmp)],
    "git_overhead.py": lambda tmp: ["--steps", "1", "--repeats", "1", "--json", *CIFAR_TINY],
    "git_filter_cost.py": lambda tmp: ["--batches", "1", "--repeats", "1", "--json", *CIFAR_TINY],
    "ekld_throughput.py": lambda tmp: ["--classes", "2", "--images-per-class", "1", "--draws", "1", "--repeats", "1",
                                       "--json"],
    # the default tolerance (2 MiB) from epoch 2, after the first epoch's warm-up
    "memory_epochs.py": lambda tmp: ["--epochs", "3", "--baseline-epoch", "2", "--json"],
}


def run_script(script, args, prefix=(), expect_rc=0):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *prefix, os.path.join(BENCH, script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == expect_rc, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def check_spreads(table, keys, n=1):
    """``table`` has exactly ``keys``, each a median/min/max spread over ``n`` repeats, finite."""
    assert set(table) == set(keys), sorted(table)
    for k, v in table.items():
        assert v["n"] == n and all(math.isfinite(v[s]) for s in ("median", "min", "max")), (k, v)
        assert v["min"] <= v["median"] <= v["max"], (k, v)


def test_every_benchmark_script_has_a_smoke_test():
    scripts = {f for f in os.listdir(BENCH) if f.endswith(".py") and f != "common.py"}
    assert scripts == set(COMMANDS)


@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_benchmark_script_runs_and_reports(script, tmp_path):
    out = run_script(script, COMMANDS[script](tmp_path)).stdout
    if script == "augment_costs.py":
        d = last_json(out)
        variants = ["crop_flip", "randaugment", "autoaugment", "trivialaugment", "mixup", "cutmix", "sam", "tail_sam"]
        check_spreads(d["seconds_per_step"], variants)
        check_spreads(d["ratios"], [f"{v}/crop_flip" for v in variants[1:]])
        assert all(v["min"] > 0 for v in d["ratios"].values())
        assert d["batch_size"] == 16 and d["tail_threshold"] == 10
    elif script == "classifier_throughput.py":
        d = last_json(out)
        check_spreads(d["images_per_s"], ["ours", "ours_nchw", "pure", "data", "reference"])
        check_spreads(d["ratios"], ["ours/pure", "ours/reference", "ours_nchw/reference", "ours/ours_nchw",
                                    "pure/reference", "ours/pure from parts"])
        assert all(v["min"] > 0 for v in d["ratios"].values())
        assert d["batch_size"] == 16 and d["model"] == "resnet20" and d["best_vs_reference"] in d["ratios"]
        assert set(d["targets_met"]) == {"pipeline_overhead_within_1.10x_of_pure", "at_least_1.5x_reference",
                                         "pipeline_overhead_within_1.10x_of_pure (from parts)"}
    elif script == "munit_throughput.py":
        d = last_json(out)
        check_spreads(d["images_per_s"], ["small_b1@1", "small_b4@1"])
        check_spreads(d["ratios"], ["small_b4/small_b1@1"])
        assert list(d["targets_met"]) == ["default_batch_at_least_2x_batch_1_small@1"]
    elif script == "git_overhead.py":
        d = last_json(out)
        check_spreads(d["seconds_per_step"], ["plain", "git_paper", "generator_paper", "git_small", "generator_small"])
        check_spreads(d["ratios"], ["git_paper/plain", "(git_paper-plain)/generator_paper", "git_small/plain",
                                    "(git_small-plain)/generator_small", "git_small/git_paper",
                                    "generator_small/generator_paper"])
        assert d["rows_as_planned"] is True
        for name, width in (("paper", 64), ("small", 32)):
            g = d["generators"][name]
            assert g["preset"] == f"configs/generator/cifar10_munit{'_small' if name == 'small' else ''}.yaml"
            assert g["arch"]["width"] == width and g["generated_per_step"] == 8  # half of batch 16
            # the warm-up step and the timed step, each with its 8 slots through encoder and decoder
            assert g["generated_rows"] == {"planned": 16, "encoded": 16, "decoded": 16, "match": True}
    elif script == "git_filter_cost.py":
        d = last_json(out)
        check_spreads(d["seconds_per_batch"], ["generator_paper", "generator_small", "filter"])
        check_spreads(d["ratios"], ["filter/generator_paper", "filter/generator_small"])
        assert all(v["min"] > 0 for v in d["ratios"].values())
        assert d["generated_per_batch"] == 8 and d["batch_size"] == 16  # half of batch 16
        assert d["reference_model"] == "resnet20" and d["filter_rule"] == "top1"
        assert d["generators"]["small"]["arch"]["width"] == 32 and d["generators"]["paper"]["arch"]["width"] == 64
    elif script == "ekld_throughput.py":
        d = last_json(out)
        check_spreads(d["image_draws_per_s"], ["true_dil", "generator_paper", "generator_small"])
        check_spreads(d["ratios"], ["generator_paper/true_dil", "generator_small/true_dil",
                                    "generator_small/generator_paper"])
        assert d["generators"]["small"]["width"] == 32 and d["generators"]["paper"]["width"] == 64
    else:  # memory_epochs.py: an indented JSON document ends its output
        lines = out.splitlines()
        d = json.loads("\n".join(lines[lines.index("{"):]))
        assert d["epochs"] == 3 and [r["epoch"] for r in d["per_epoch"]] == [1, 2, 3] and d["ok"] is True
        assert d["tolerance_mib"] == 2.0 and d["growth_mib"] <= 2.0 and all(r["rss_mib"] > 0 for r in d["per_epoch"])


def test_git_overhead_fails_when_the_generator_sees_other_rows_than_planned():
    """A GIT step that puts one row more than planned through the generator (and throws it
    away) makes the benchmark exit with status 1 and say so."""
    script = os.path.join(BENCH, "git_overhead.py")
    wasteful = (
        "import runpy, sys\n"
        "from invtransfer.train import classifier\n"
        "real = classifier.ClassifierRun.materialize\n"
        "def wasteful(self, plan, rows=None):\n"
        "    if plan.generated:\n"
        "        x = self.augmenter.apply(self.x_train[plan.gen_index[:1]], plan.gen_augment.select(slice(0, 1)))\n"
        "        self.nuisance_sampler(x, self.normalizer.mean, self.normalizer.std, styles=plan.gen_styles[:1])\n"
        "    return real(self, plan, rows)\n"
        "classifier.ClassifierRun.materialize = wasteful\n"
        "sys.argv = sys.argv[1:]  # [script, arguments...]\n"
        f"sys.path.insert(0, {BENCH!r})\n"
        f"runpy.run_path({script!r}, run_name='__main__')\n")
    proc = run_script("git_overhead.py", ["--generators", "small", "--steps", "1", "--repeats", "1", "--json",
                                          *CIFAR_TINY], prefix=("-c", wasteful), expect_rc=1)
    assert "error: the GIT steps of small put a number of rows through the generator other than" in proc.stderr
    rows = last_json(proc.stdout)["generators"]["small"]["generated_rows"]
    assert rows == {"planned": 16, "encoded": 18, "decoded": 18, "match": False}


def test_memory_check_fails_when_training_leaks():
    """The memory benchmark's check is live: training that keeps 8 MiB more every epoch (written,
    so resident) makes it exit with status 1 and say the memory grows."""
    script = os.path.join(BENCH, "memory_epochs.py")
    leaky = (
        "import runpy, sys\n"
        "from invtransfer.train import classifier\n"
        "kept = []\n"
        "real = classifier.ClassifierRun._end_epoch\n"
        "def leaky(self, epoch, lr, running):\n"
        "    kept.append(b'x' * (8 << 20))\n"
        "    return real(self, epoch, lr, running)\n"
        "classifier.ClassifierRun._end_epoch = leaky\n"
        "sys.argv = sys.argv[1:]  # [script, arguments...]\n"
        f"runpy.run_path({script!r}, run_name='__main__')\n")
    proc = run_script("memory_epochs.py", ["--epochs", "3", "--baseline-epoch", "2", "--json"], prefix=("-c", leaky),
                      expect_rc=1)
    lines = proc.stdout.splitlines()
    d = json.loads("\n".join(lines[lines.index("{"):]))
    assert d["ok"] is False and d["growth_mib"] >= 7.5, d["growth_mib"]
