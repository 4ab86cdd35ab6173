"""Reports from run directories, and the demo end to end on tiny data."""

import json

import numpy as np
import pytest

from conftest import make_images, tiny_data_overrides
from invtransfer import cli
from invtransfer.errors import InvTransferError
from invtransfer.report import find_results, grid_file_names, mean_se, summary_rows


def fake_run(path, method, seed, error, dataset="cifar10-lt"):
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({
        "dataset": dataset, "method": method, "seed": seed, "instance": 0, "test_error": error,
        "test_balanced_accuracy": 100 - error, "many_shot_accuracy": 90.0, "medium_shot_accuracy": None,
        "few_shot_accuracy": 50.0, "train_class_counts": [100, 10], "per_class_accuracy": [90.0, 50.0],
        "selected_weights": {"which": "last", "epoch": 1}, "wall_time_s": 60, "device": "cpu"}))


def test_mean_and_standard_error():
    m, se, n = mean_se([1.0, 2.0, 3.0, None])
    assert (m, n) == (2.0, 3) and se == pytest.approx(1.0 / 3 ** 0.5)
    assert mean_se([None]) is None and mean_se([5.0]) == (5.0, 0.0, 1)


def test_report_groups_seeds_and_shows_published(tmp_path):
    fake_run(tmp_path / "runs" / "a", "CE", 0, 30.0)
    fake_run(tmp_path / "runs" / "b", "CE", 1, 32.0)
    fake_run(tmp_path / "runs" / "c", "CE+DRS", 0, 25.0)
    rows = summary_rows(find_results([str(tmp_path / "runs")]))
    ce = next(r for r in rows if r["method"] == "CE")
    assert ce["n"] == 2 and ce["test_error"][0] == 31.0 and ce["published"][0] == 29.64
    assert cli.main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "31.00 ± 1.00" in text and "29.64" in text and "empty" in text
    # CE+DRS - CE on seed 0, the one pair; no eKLD rows where no run has an eKLD
    assert "| cifar10-lt | CE+DRS − CE | error % (points) | 1 (0 / 0) | -5.00 | - | - | n = 1: no interval |" in text
    assert "eKLD smallest third" not in text
    assert (tmp_path / "rep" / "per_class_accuracy_cifar10-lt.png").is_file()


def fake_invariance(path, eklds, sizes, rho, transform="dil"):
    (path / "invariance.json").write_text(json.dumps({
        "transform": transform, "draws": 10, "images_per_class": 5, "spearman_rho": rho, "spearman_p": 0.01,
        "mean_ekld_smallest_third": float(np.mean(eklds[-1:])),
        "per_class": [{"class": i, "class_size": n, "ekld": e, "consistency": 0.9}
                      for i, (n, e) in enumerate(zip(sizes, eklds))]}))


def test_report_shows_invariance_spread_and_generator_samples(tmp_path):
    runs = tmp_path / "runs"
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "samples_final.png").write_bytes(b"\x89PNG fake grid")
    for inst, (rho, small) in enumerate([(-0.5, 0.3), (-0.7, 0.5)]):
        fake_run(runs / f"git{inst}", "CE+DRS+GIT", 0, 20.0 + inst, dataset="fmnist-dil-lt")
        r = json.loads((runs / f"git{inst}" / "results.json").read_text())
        r.update(instance=inst, config={"git": {"generator": str(gen)}},
                 started_from={"checkpoint": f"/x/twin{inst}/checkpoint_e31.pt", "epoch": 31, "step": 0})
        (runs / f"git{inst}" / "results.json").write_text(json.dumps(r))
        fake_invariance(runs / f"git{inst}", [0.1, small], [100, 10], rho)
    fake_run(runs / "plain", "CE+DRS", 0, 25.0, dataset="fmnist-dil-lt")
    fake_invariance(runs / "plain", [0.1, 0.9], [100, 10], -1.0)
    fake_run(runs / "undergen", "CE+DRS", 0, 25.0, dataset="fmnist-bg-lt")
    fake_invariance(runs / "undergen", [0.1, 0.9], [100, 10], -1.0, transform=f"generator:{gen}")
    rows = {r["method"]: r for r in summary_rows(find_results([str(runs)]))}
    assert rows["CE+DRS+GIT"]["mean_ekld_smallest_third"][:2] == pytest.approx((0.4, 0.1))
    assert rows["CE+DRS+GIT"]["spearman_rho"][:2] == pytest.approx((-0.6, 0.1))
    assert cli.main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| fmnist-dil-lt | CE+DRS+GIT | 2 (0 / 0,1) | 20.50 ± 0.50 |" in text
    assert "0.400 ± 0.100 | -0.60 ± 0.10 |" in text  # eKLD of the smallest third, Spearman
    # every run in its own row (the spread), with its transform and draws
    assert "| CE+DRS+GIT | 0 | 1 | 21.00 | 79.00 | 0.5000 | -0.70 | dil, 10 |" in text
    assert "1.0 min on cpu from epoch 31 of twin1 |" in text  # a run started from another's checkpoint
    # GIT instance 0 against CE+DRS instance 0 (the only pair): error 20 - 25, tail eKLD 0.3 - 0.9
    for metric, diff in (("error % (points)", "-5.00"), ("bal. acc % (points)", "+5.00"),
                         ("eKLD smallest third", "-0.600")):
        assert (f"| fmnist-dil-lt | CE+DRS+GIT − CE+DRS | {metric} | 1 (0 / 0) | {diff} | - | - | "
                f"n = 1: no interval |") in text
    assert (tmp_path / "rep" / "ekld_vs_class_size_fmnist-dil-lt_dil.png").stat().st_size > 1000
    # under a generator, the plot is named by the generator's folder, not by its machine-specific path
    assert (tmp_path / "rep" / "ekld_vs_class_size_fmnist-bg-lt_generator_gen.png").stat().st_size > 1000
    grid = tmp_path / "rep" / "generator_samples_gen.png"
    assert grid.read_bytes() == b"\x89PNG fake grid" and grid.name in text
    # A grid from an earlier report into the same folder, no longer referenced, goes; other files stay.
    (tmp_path / "rep" / "generator_samples_0_old.png").write_bytes(b"stale")
    (tmp_path / "rep" / "notes.txt").write_text("mine")
    assert cli.main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    assert not (tmp_path / "rep" / "generator_samples_0_old.png").exists()
    assert grid.is_file() and (tmp_path / "rep" / "notes.txt").is_file()


def test_report_shows_every_run_under_the_other_selection_policy_too(tmp_path):
    runs = tmp_path / "runs"
    for inst in (0, 1):
        plain, git = runs / f"plain{inst}", runs / f"git{inst}"
        fake_run(plain, "CE+DRS", 0, 30.0 + inst, dataset="fmnist-dil-lt")
        fake_invariance(plain, [0.1, 0.8], [100, 10], -1.0)
        r = json.loads((plain / "results.json").read_text())
        # select=last; its best validation epoch (20) was better on test and on the tail eKLD
        r.update(instance=inst, other_selection={"which": "best_val", "epoch": 20, "test_error": 24.0 + inst,
                                                 "test_balanced_accuracy": 76.0 - inst, "many_shot_accuracy": 90.0,
                                                 "medium_shot_accuracy": None, "few_shot_accuracy": 60.0,
                                                 "per_class_accuracy": [90.0, 60.0]})
        (plain / "results.json").write_text(json.dumps(r))
        (plain / "invariance_best_val.json").write_text((plain / "invariance.json").read_text().replace("0.8", "0.3"))
        fake_run(git, "CE+DRS+GIT", 0, 22.0, dataset="fmnist-dil-lt")
        fake_invariance(git, [0.1, 0.5], [100, 10], -1.0)
        r = json.loads((git / "results.json").read_text())
        r.update(instance=inst, other_selection=None)  # best on validation at its last epoch: one set of weights
        (git / "results.json").write_text(json.dumps(r))
    fake_run(runs / "old", "CE", 0, 40.0, dataset="fmnist-dil-lt")  # before other_selection: left out there
    assert cli.main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    main, other = text.split("## Under the other selection policy")
    assert "| fmnist-dil-lt | CE+DRS+GIT − CE+DRS | error % (points) | 2 (0,1 / 0) | -8.50 ± 0.50 |" in main
    assert "| fmnist-dil-lt | CE+DRS | 2 (0 / 0,1) | 24.50 ± 0.50 |" in other
    assert "| fmnist-dil-lt | CE+DRS+GIT − CE+DRS | error % (points) | 2 (0,1 / 0) | -2.50 ± 0.50 |" in other
    assert "| fmnist-dil-lt | CE+DRS+GIT − CE+DRS | eKLD smallest third | 2 (0,1 / 0) | +0.200 ± 0.000 |" in other
    assert "best_val (epoch 20)" in other and "| CE |" not in other
    js = json.loads((tmp_path / "rep" / "report.json").read_text())
    ce_drs = next(g for g in js["other_selection"]["groups"] if g["method"] == "CE+DRS")
    assert ce_drs["test_error"]["mean"] == 24.5 and ce_drs["mean_ekld_smallest_third"]["mean"] == pytest.approx(0.3)


def test_report_counts_each_run_once(tmp_path):
    """A run passed twice, as a parent folder and its child, or copied elsewhere is one run (it used
    to be counted twice: n = 2 and a standard error from one run's numbers)."""
    runs = tmp_path / "runs"
    fake_run(runs / "a", "CE", 0, 30.0)
    fake_run(runs / "b", "CE", 1, 32.0)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "results.json").write_bytes((runs / "a" / "results.json").read_bytes())
    for paths in ([runs / "a", runs / "a"], [runs / "a", tmp_path / "copy"], [runs / "a" / "results.json", runs / "a"]):
        results = find_results([str(p) for p in paths])
        assert len(results) == 1 and summary_rows(results)[0]["n"] == 1, paths
    results = find_results([str(runs), str(runs / "b"), str(tmp_path / "copy")])
    assert [r["_path"] for r in results] == [str(runs / "a"), str(runs / "b")] and summary_rows(results)[0]["n"] == 2


def test_report_reads_several_results_files_of_one_folder(tmp_path):
    """Results files under other names in one folder (results/last_epoch/*.results.json) are
    different runs, each named by its file; no invariance.json of the folder is read for them
    (the folder used to identify the run: five of six files were dropped as repeats)."""
    fake_run(tmp_path / "x", "CE", 0, 30.0)
    for seed, method, error in ((0, "CE", 30.0), (1, "CE", 32.0), (0, "CE+DRS", 25.0)):
        r = json.loads((tmp_path / "x" / "results.json").read_text())
        (tmp_path / f"{method}_s{seed}.results.json").write_text(json.dumps(dict(r, method=method, seed=seed,
                                                                                 test_error=error)))
    fake_invariance(tmp_path, [0.1, 0.5], [100, 10], -0.5)  # not any of these runs'
    results = find_results(sorted(str(f) for f in tmp_path.glob("*.results.json")))
    assert [r["_path"] for r in results] == [str(tmp_path / f"{n}.results.json") for n in ("CE+DRS_s0", "CE_s0", "CE_s1")]
    assert not any("invariance" in r for r in results)
    assert {r["method"]: r["n"] for r in summary_rows(results)} == {"CE": 2, "CE+DRS": 1}
    assert cli.main(["report", *map(str, tmp_path.glob("*.results.json")), "--out", str(tmp_path / "rep")]) == 0
    assert "| `../CE_s1.results.json` | CE | 1 | 0 | 32.00 |" in (tmp_path / "rep" / "report.md").read_text()


def test_report_refuses_two_runs_of_one_seed_and_instance(tmp_path, capsys):
    """Two different runs of one method, seed and instance (a rerun, another config): the mean would
    count the repeat as another seed and the paired table silently picked one of them."""
    fake_run(tmp_path / "runs" / "first", "CE+DRS", 0, 25.0)
    fake_run(tmp_path / "runs" / "rerun", "CE+DRS", 0, 27.0)
    with pytest.raises(InvTransferError, match=r"first and .*rerun are two different runs of cifar10-lt CE\+DRS "
                                               r"with seed 0 on dataset instance 0"):
        find_results([str(tmp_path / "runs")])
    assert cli.main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "rep" / "report.md").exists()


def test_report_marks_means_of_part_of_a_group(tmp_path):
    """A mean over only the runs that have a value says so; eKLD measured with different settings is
    not averaged; GIT runs without a base run are named under the paired table."""
    runs = tmp_path / "runs"
    for seed, few in enumerate([50.0, None, 40.0]):
        fake_run(runs / f"ce{seed}", "CE+DRS", seed, 25.0 + seed)
        r = json.loads((runs / f"ce{seed}" / "results.json").read_text())
        (runs / f"ce{seed}" / "results.json").write_text(json.dumps(dict(r, few_shot_accuracy=few)))
    fake_invariance(runs / "ce0", [0.1, 0.5], [100, 10], -0.5)
    fake_run(runs / "git0", "CE+DRS+GIT", 0, 20.0)
    fake_run(runs / "git5", "CE+DRS+GIT", 5, 21.0)
    fake_invariance(runs / "git0", [0.1, 0.3], [100, 10], -0.5)
    fake_invariance(runs / "git5", [0.1, 0.4], [100, 10], -0.6)
    inv = json.loads((runs / "git5" / "invariance.json").read_text())
    (runs / "git5" / "invariance.json").write_text(json.dumps(dict(inv, draws=100)))
    assert cli.main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    ce = next(line for line in text.splitlines() if line.startswith("| cifar10-lt | CE+DRS | 3"))
    assert "| 45.00 ± 5.00 (2 of 3) |" in ce and "| 0.500 (1 of 3) | -0.50 (1 of 3) |" in ce
    git = next(line for line in text.splitlines() if line.startswith("| cifar10-lt | CE+DRS+GIT | 2"))
    assert git.count("mixed settings (see every run)") == 2
    assert "| cifar10-lt | CE+DRS+GIT − CE+DRS | error % (points) | 1 (0 / 0) |" in text
    assert "CE+DRS+GIT: 1 run(s) without a CE+DRS run on the same instance and seed, not in the pairs: " \
           "`../runs/git5` (instance 0, seed 5)" in text


def test_report_grid_names_are_stable_and_distinct():
    names = grid_file_names(["/a/gen", "/b/gen", "/c/other"])
    assert names["/c/other"] == "generator_samples_other.png"  # whatever else the report holds
    assert names["/a/gen"] != names["/b/gen"] and names["/a/gen"].startswith("generator_samples_gen_")
    assert grid_file_names(["/b/gen", "/a/gen"]) == {k: names[k] for k in ("/b/gen", "/a/gen")}


def test_report_bad_input(tmp_path):
    with pytest.raises(InvTransferError, match="no results.json"):
        find_results([str(tmp_path)])
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(InvTransferError, match="not readable JSON"):
        find_results([str(tmp_path / "results.json")])


def test_demo_runs_end_to_end_on_tiny_data(tmp_path, capsys, monkeypatch):
    x, y = make_images(60, size=16, seed=1)
    xt, yt = make_images(15, size=16, seed=2)
    npz = tmp_path / "tiny16.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=xt, y_test=yt)
    args = [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in tiny_data_overrides(npz).items()
            if k != "name"]
    out = tmp_path / "demo"
    out.mkdir()
    (out / "stale.txt").write_text("old")  # the demo replaces the previous runs/demo
    assert cli.main(["demo", *args, "--out", str(out), "--epochs", "3", "--generator-iterations", "2",
                     "--draws", "2", "--quiet"]) == 0
    assert not (out / "stale.txt").exists()
    report = (out / "report.md").read_text()
    assert "| CE+DRS |" in report and "| CE+DRS+GIT |" in report and "claims nothing" in report
    assert "eKLD smallest third" in report and "Spearman" in report
    for f in ("dataset_preview.png", "per_class_accuracy.png", "ekld_vs_class_size.png", "generator_samples.png",
              "ce_drs/results.json", "ce_drs_git/model.pt", "ce_drs_git/invariance.json", "generator/generator.pt"):
        assert (out / f).is_file(), f
    git_log = [json.loads(x) for x in (out / "ce_drs_git" / "metrics.jsonl").read_text().splitlines()]
    assert git_log[-1]["git"] and git_log[-1]["generated"] > 0
    assert [r["epoch"] for r in git_log] == [1, 2, 3]  # the shared epochs come from CE+DRS's log
    started = json.loads((out / "ce_drs_git" / "results.json").read_text())["started_from"]
    assert started["epoch"] == 2 and started["checkpoint"].endswith("ce_drs/checkpoint_e2.pt")
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out

    # `sample` labels its grid: a row per class, columns real / reconstruction / one per style
    from invtransfer import plots
    seen = {}
    real = plots.labelled_grid_png
    monkeypatch.setattr(plots, "labelled_grid_png", lambda grid, rows, cols, **kw: seen.update(
        shape=grid.shape, rows=rows, cols=cols, cell=kw["cell"]) or real(grid, rows, cols, **kw))
    png = tmp_path / "s.png"
    assert cli.main(["sample", str(out / "generator"), "fmnist-dil-lt", *args, "--out", str(png), "--n", "2"]) == 0
    assert seen["rows"] == ["0", "1", "2", "3"] and seen["cols"] == ["real", "recon.", "style 1", "style 2"]
    assert seen["cell"] == (64, 64) and seen["shape"] == (4 * 66 + 2, 4 * 66 + 2, 3)
    from PIL import Image
    with Image.open(png) as im:
        assert im.width > seen["shape"][1] and im.height > seen["shape"][0]  # margins hold the labels


def test_cli_version_help_and_quiet(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip().startswith("invtransfer 0.")
    # every option says what it does, and its default where it has one
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subs.items():
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
            if action.option_strings and action.default not in (None, False):
                assert "default" in action.help, f"{name} {action.option_strings} does not show its default"
    # --quiet on train / train-generator is the config key quiet=true
    assert cli.main(["train", "--quiet", "--print-config"]) == 0
    assert "quiet: true" in capsys.readouterr().out
    assert cli.main(["train-generator", "--quiet", "--print-config"]) == 0
    assert "quiet: true" in capsys.readouterr().out
