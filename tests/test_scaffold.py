"""invtransfer.train.scaffold: automatic run names, the log a resumed run keeps, the run clock."""

import json
import os
import time

from conftest import tiny_data_overrides
from invtransfer.config import from_dict
from invtransfer.train import classifier, generator
from invtransfer.train.scaffold import RunClock, config_digest, truncate_log
from test_generator import TINY_ARCH, data_dict, npz16  # noqa: F401 (npz16: a fixture)


def classifier_cfg(npz, out_dir, **kw):
    d = {"data": tiny_data_overrides(npz), "model": "resnet20", "rule": "drs", "out_dir": str(out_dir),
         "optim": {"epochs": 3, "batch_size": 16, "warmup_epochs": 1, "decay1_epoch": 1, "decay2_epoch": 2},
         "quiet": True, "device": "cpu"}
    d.update(kw)
    return from_dict(classifier.TrainConfig, d)


def generator_cfg(npz, out_dir, **kw):
    d = {"data": data_dict(npz), "arch": dict(TINY_ARCH), "iterations": 2, "batch_size": 4, "device": "cpu",
         "out_dir": str(out_dir), "quiet": True}
    d.update(kw)
    return from_dict(generator.GeneratorTrainConfig, d)


def test_automatic_names_are_unique_per_launch_and_per_configuration(tiny_npz, npz16, tmp_path, monkeypatch):
    """Parallel launches in the same second (a sweep over data.instance, or one config twice) each
    get their own run directory, named by dataset instance and config; none is told to resume."""
    monkeypatch.setattr(time, "strftime", lambda *a: "20240101-120000")  # every launch in the same second
    out = tmp_path / "runs"
    runs = [classifier.ClassifierRun(classifier_cfg(tiny_npz, out, data=tiny_data_overrides(tiny_npz, instance=i)))
            for i in (0, 1, 1)]
    names = [os.path.basename(r.run_dir) for r in runs]
    assert len(set(names)) == 3 and sorted(os.listdir(out)) == sorted(names)
    assert [n.split("__")[:4] for n in names] == [["fmnist-dil-lt", f"i{i}", "CE-DRS", "s0"] for i in (0, 1, 1)]
    digests = [n.split("__")[4] for n in names]
    assert digests[1] == digests[2] != digests[0]  # the same configuration, launched twice
    # a setting that changes training changes the digest; where the run lives does not
    optim = {"epochs": 3, "batch_size": 16, "warmup_epochs": 1, "decay1_epoch": 1, "decay2_epoch": 2, "lr": 0.05}
    other_lr = classifier.ClassifierRun(classifier_cfg(tiny_npz, out, optim=optim))
    moved = classifier.ClassifierRun(classifier_cfg(tiny_npz, tmp_path / "elsewhere", quiet=False))
    assert os.path.basename(other_lr.run_dir).split("__")[4] != digests[0]
    assert os.path.basename(moved.run_dir).split("__")[4] == digests[0]
    gens = [generator.GeneratorRun(generator_cfg(npz16, out)) for _ in range(2)]
    gen_names = [os.path.basename(g.run_dir) for g in gens]
    assert gen_names[0] != gen_names[1] and all(n.startswith("fmnist-bg-lt__i0__munit__s0__") for n in gen_names)


def test_a_method_label_with_a_slash_still_names_one_directory(tiny_npz, tmp_path):
    run = classifier.ClassifierRun(classifier_cfg(tiny_npz, tmp_path, method="CE/DRS (mine)"))
    assert os.path.dirname(run.run_dir) == str(tmp_path) and "CE-DRS-mine-" in os.path.basename(run.run_dir)


def test_config_digest_ignores_only_the_given_keys():
    cfg = {"seed": 0, "name": "a", "data": {"instance": 1, "cache_dir": "/x"}}
    same = {"seed": 0, "name": "b", "data": {"instance": 1, "cache_dir": "/y"}}
    assert config_digest(cfg, ("name", "data.cache_dir")) == config_digest(same, ("name", "data.cache_dir"))
    assert config_digest(cfg) != config_digest(same)
    assert config_digest(cfg, ("name",)) != config_digest(dict(cfg, data={"instance": 2, "cache_dir": "/x"}),
                                                          ("name",))


def test_truncate_log_keeps_earlier_records_drops_a_partial_line_and_leaves_a_clean_file_alone(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"epoch": e, "loss": 1.0 / e}) + "\n" for e in (1, 2, 3)]
    path.write_text("".join(lines) + '{"epoch": 4, "lo')  # a writer killed mid-line
    truncate_log(str(path), "epoch", 2)
    assert path.read_text() == "".join(lines[:2])
    before = os.stat(path)
    truncate_log(str(path), "epoch", 2)  # nothing to drop: the file is not rewritten
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    truncate_log(str(tmp_path / "missing.jsonl"), "epoch", 2)  # a run that logged nothing yet


def test_run_clock_adds_the_earlier_processes_time_and_marks_unknown_cpu_time():
    clock = RunClock()
    clock.restore({"wall_time_s": 100.0, "cpu_time_s": 50.0})
    assert 100.0 <= clock.wall() < 110.0 and 50.0 <= clock.cpu() < 60.0 and not clock.cpu_partial
    clock.restore({"wall_time_s": 10.0})  # written before CPU time was recorded
    assert clock.cpu_partial and clock.cpu() < 10.0
    clock.restore({}, logged_wall=lambda: 7.0)  # written before wall time was recorded
    assert 7.0 <= clock.wall() < 17.0
