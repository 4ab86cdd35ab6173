"""Paired statistics of the report: every figure of known differences, n = 1, identical runs.

The expected numbers do not come from scipy: for 2 degrees of freedom Student's t has a closed
form, F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so the 97.5 % quantile is sqrt(2 * 0.95^2 / (1 - 0.95^2))
= 4.3027 and the two-sided p of t is 1 - t / sqrt(2 + t^2).
"""

import json
import math
import warnings

import pytest

from invtransfer import cli
from invtransfer.report import comparisons, find_results, format_p, paired_rows, paired_stats, reading

T975_DF2 = math.sqrt(2 * 0.95 ** 2 / (1 - 0.95 ** 2))


def p_df2(t):
    return 1 - abs(t) / math.sqrt(2 + t * t)


def test_t_quantile_closed_form():
    assert T975_DF2 == pytest.approx(4.3027, abs=1e-4)


def test_differences_one_two_three():
    s = paired_stats([1.0, 2.0, 3.0])
    se = 1 / math.sqrt(3)  # sample std 1, n 3
    assert s["n"] == 3 and s["mean"] == pytest.approx(2.0) and s["se"] == pytest.approx(se)
    assert se == pytest.approx(0.577, abs=5e-4)
    assert s["ci95"] == pytest.approx([2 - T975_DF2 * se, 2 + T975_DF2 * se], abs=1e-9)
    assert s["ci95"] == pytest.approx([-0.484, 4.484], abs=5e-4)
    # t = 2 / 0.577 = 3.464 -> p = 1 - 3.464 / sqrt(14) = 0.0742 (not 0.0572)
    assert s["p"] == pytest.approx(p_df2(2 / se), abs=1e-9) and s["p"] == pytest.approx(0.0742, abs=5e-5)
    assert (s["lower"], s["higher"]) == (0, 3)
    assert s["reading"] == "not detected: higher in 3 of 3, interval includes 0"


def test_interval_excluding_zero():
    s = paired_stats([-5.0, -6.0, -7.0])
    se = 1 / math.sqrt(3)
    assert s["ci95"] == pytest.approx([-6 - T975_DF2 * se, -6 + T975_DF2 * se], abs=1e-9)
    assert s["p"] == pytest.approx(p_df2(6 / se), abs=1e-9) and s["p"] < 0.05
    assert s["reading"] == "lower in 3 of 3, interval excludes 0"
    # one pair the other way: k counts the pairs with the mean's sign
    s = paired_stats([-8.0, -9.0, -10.0, -8.5, 0.5])
    assert s["ci95"][1] < 0 and s["reading"] == "lower in 4 of 5, interval excludes 0"
    assert paired_stats([5.0, 6.0, 7.0])["reading"] == "higher in 3 of 3, interval excludes 0"


def test_larger_n_uses_n_minus_one_degrees_of_freedom():
    # df = 4: t(0.975) = 2.7764, two-sided p of t = 2.7764 is 0.05
    d = [1.0, 2.0, 3.0, 4.0, 5.0]
    s = paired_stats(d)
    se = math.sqrt(2.5 / 5)
    assert s["ci95"] == pytest.approx([3 - 2.7764 * se, 3 + 2.7764 * se], abs=1e-3)
    s = paired_stats([x - 3 + 2.7764 * se for x in d])  # mean exactly t(0.975) s.e.: p 0.05, bound at 0
    assert s["p"] == pytest.approx(0.05, abs=1e-4) and s["ci95"][0] == pytest.approx(0.0, abs=1e-3)


def test_one_pair_has_no_interval():
    s = paired_stats([-2.5])
    assert (s["n"], s["mean"], s["se"], s["ci95"], s["p"]) == (1, -2.5, None, None, None)
    assert s["lower"] == 1 and s["reading"] == "n = 1: no interval"


def test_identical_runs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero, no precision-loss warning
        s = paired_stats([0.0, 0.0, 0.0])
        c = paired_stats([2.0, 2.0, 2.0])
    assert (s["mean"], s["se"], s["ci95"], s["p"]) == (0.0, 0.0, [0.0, 0.0], 1.0)
    assert s["reading"] == "not detected: lower in 0 of 3, interval includes 0"
    assert (c["se"], c["ci95"], c["p"]) == (0.0, [2.0, 2.0], 0.0)
    assert c["reading"] == "higher in 3 of 3, interval excludes 0"
    with pytest.raises(ValueError):
        paired_stats([])


def test_reading_bound_at_zero_is_not_detected():
    s = {"n": 3, "mean": -1.0, "ci95": [-2.0, 0.0], "lower": 3, "higher": 0}
    assert reading(s) == "not detected: lower in 3 of 3, interval includes 0"
    assert reading(dict(s, ci95=[-2.0, -1e-12])) == "lower in 3 of 3, interval excludes 0"


def test_format_p():
    assert [format_p(p) for p in (0.0025, 0.05234, 0.2474, 0.000534, 1.0, 3e-6, None)] == \
        ["0.0025", "0.052", "0.25", "0.00053", "1", "< 0.0001", "-"]


def test_comparisons():
    methods = {"CE", "CE+DRS", "CE+DRS+GIT", "CE+DRS+Oracle", "LDAM-DRW", "LDAM-DRW+GIT", "Focal+GIT"}
    assert comparisons(methods) == [("CE+DRS", "CE"), ("CE+DRS+GIT", "CE+DRS"), ("CE+DRS+Oracle", "CE+DRS"),
                                    ("CE+DRS+Oracle", "CE+DRS+GIT"), ("LDAM-DRW+GIT", "LDAM-DRW")]
    assert comparisons({"CE+DRS+Oracle", "CE+DRS+GIT"}) == [("CE+DRS+Oracle", "CE+DRS+GIT")]
    assert comparisons({"CE+DRS+GIT", "CE"}) == []  # two components apart: not a comparison
    # GIT against the other components added to the same base; each with GIT against its parent
    grid = {"CE+DRS", "CE+DRS+GIT", "CE+DRS+RandAugment", "CE+DRS+RandAugment+GIT", "CE+DRS+GIT+Filter"}
    assert comparisons(grid) == [("CE+DRS+GIT", "CE+DRS"), ("CE+DRS+GIT", "CE+DRS+RandAugment"),
                                 ("CE+DRS+GIT+Filter", "CE+DRS+GIT"), ("CE+DRS+RandAugment", "CE+DRS"),
                                 ("CE+DRS+RandAugment+GIT", "CE+DRS+RandAugment")]


def run(root, name, method, instance, error, ekld=None, draws=10, seed=0):
    path = root / name
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({
        "dataset": "fmnist-dil-lt", "method": method, "seed": seed, "instance": instance, "test_error": error,
        "test_balanced_accuracy": 100 - error, "many_shot_accuracy": 90.0, "medium_shot_accuracy": 60.0,
        "few_shot_accuracy": None, "train_class_counts": [100, 10], "per_class_accuracy": [90.0, 50.0],
        "selected_weights": {"which": "last", "epoch": 1}, "wall_time_s": 60, "device": "cpu"}))
    if ekld is not None:
        (path / "invariance.json").write_text(json.dumps({
            "transform": "dil", "draws": draws, "images_per_class": 5, "spearman_rho": -0.5, "spearman_p": 0.1,
            "mean_ekld_smallest_third": ekld, "per_class": [
                {"class": 0, "class_size": 100, "ekld": 0.01, "consistency": 1.0},
                {"class": 1, "class_size": 10, "ekld": ekld, "consistency": 0.5}]}))


def test_report_prints_every_figure(tmp_path):
    """Hand-built runs with known differences through `invtransfer report`: report.md and report.json."""
    runs = tmp_path / "runs"
    for i in range(3):
        # GIT - CE+DRS: error [-1, -2, -3]; eKLD [-0.1, -0.2, -0.3] on instances 0, 1 only (2 of 3 pairs)
        run(runs, f"base{i}", "CE+DRS", i, 25.0, ekld=0.5 if i < 2 else None)
        run(runs, f"git{i}", "CE+DRS+GIT", i, 25.0 - (i + 1), ekld=0.5 - 0.1 * (i + 1) if i < 2 else None)
        run(runs, f"ce{i}", "CE", i, 25.0)  # identical error to CE+DRS: CE+DRS - CE is 0 in every pair
    run(runs, "oracle0", "CE+DRS+Oracle", 0, 20.0, ekld=0.2)  # one instance: n = 1
    run(runs, "oracle_s7", "CE+DRS+Oracle", 0, 21.0, seed=7)  # no partner on seed 7
    out = tmp_path / "rep"
    assert cli.main(["report", str(runs), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    rows = [line for line in text.splitlines() if " − " in line and line.startswith("| fmnist-dil-lt")]
    assert rows == [
        "| fmnist-dil-lt | CE+DRS − CE | error % (points) | 3 (0,1,2 / 0) | +0.00 ± 0.00 | [+0.00, +0.00] | 1 | "
        "not detected: lower in 0 of 3, interval includes 0 |",
        "| fmnist-dil-lt | CE+DRS − CE | bal. acc % (points) | 3 (0,1,2 / 0) | +0.00 ± 0.00 | [+0.00, +0.00] | 1 | "
        "not detected: lower in 0 of 3, interval includes 0 |",
        "| fmnist-dil-lt | CE+DRS − CE | eKLD smallest third | 0 of 3 | - | - | - | not measured |",
        "| fmnist-dil-lt | CE+DRS+GIT − CE+DRS | error % (points) | 3 (0,1,2 / 0) | -2.00 ± 0.58 | [-4.48, +0.48] | "
        "0.074 | not detected: lower in 3 of 3, interval includes 0 |",
        "| fmnist-dil-lt | CE+DRS+GIT − CE+DRS | bal. acc % (points) | 3 (0,1,2 / 0) | +2.00 ± 0.58 | [-0.48, +4.48] | "
        "0.074 | not detected: higher in 3 of 3, interval includes 0 |",
        # differences -0.1, -0.2: mean -0.15, s.e. 0.05, t(1) 97.5 % = 12.706, p = 2 * atan(1/3) / pi = 0.205
        "| fmnist-dil-lt | CE+DRS+GIT − CE+DRS | eKLD smallest third | 2 of 3 (0,1 / 0) | -0.150 ± 0.050 | "
        "[-0.785, +0.485] | 0.2 | not detected: lower in 2 of 2, interval includes 0 |",
        "| fmnist-dil-lt | CE+DRS+Oracle − CE+DRS | error % (points) | 1 (0 / 0) | -5.00 | - | - | n = 1: no interval |",
        "| fmnist-dil-lt | CE+DRS+Oracle − CE+DRS | bal. acc % (points) | 1 (0 / 0) | +5.00 | - | - | "
        "n = 1: no interval |",
        "| fmnist-dil-lt | CE+DRS+Oracle − CE+DRS | eKLD smallest third | 1 (0 / 0) | -0.300 | - | - | "
        "n = 1: no interval |",
        "| fmnist-dil-lt | CE+DRS+Oracle − CE+DRS+GIT | error % (points) | 1 (0 / 0) | -4.00 | - | - | "
        "n = 1: no interval |",
        "| fmnist-dil-lt | CE+DRS+Oracle − CE+DRS+GIT | bal. acc % (points) | 1 (0 / 0) | +4.00 | - | - | "
        "n = 1: no interval |",
        "| fmnist-dil-lt | CE+DRS+Oracle − CE+DRS+GIT | eKLD smallest third | 1 (0 / 0) | -0.200 | - | - | "
        "n = 1: no interval |"]
    assert "- fmnist-dil-lt CE+DRS+Oracle: 1 run(s) without a CE+DRS run on the same instance and seed, not in " \
           "the pairs: `../runs/oracle_s7` (instance 0, seed 7)" in text
    # report.json: the same statistics, unrounded
    data = json.loads((out / "report.json").read_text())
    git = next(p for p in data["paired"] if p["comparison"] == "CE+DRS+GIT − CE+DRS")
    err = git["metrics"]["test_error"]
    se = 1 / math.sqrt(3)
    assert (err["n"], err["lower"], err["instances"], err["seeds"]) == (3, 3, [0, 1, 2], [0])
    assert err["mean"] == pytest.approx(-2.0) and err["se"] == pytest.approx(se)
    assert err["ci95"] == pytest.approx([-2 - T975_DF2 * se, -2 + T975_DF2 * se])
    assert err["p"] == pytest.approx(p_df2(2 / se))
    ekld = git["metrics"]["mean_ekld_smallest_third"]
    assert ekld["n"] == 2 and ekld["p"] == pytest.approx(2 * math.atan(1 / 3) / math.pi)
    assert ekld["ci95"] == pytest.approx([-0.15 - 12.7062 * 0.05, -0.15 + 12.7062 * 0.05], abs=1e-5)
    same = next(p for p in data["paired"] if p["comparison"] == "CE+DRS − CE")
    assert same["metrics"]["test_error"]["p"] == 1.0 and same["metrics"]["mean_ekld_smallest_third"] is None
    oracle = next(p for p in data["paired"] if p["comparison"] == "CE+DRS+Oracle − CE+DRS")
    assert oracle["unpaired"] == ["../runs/oracle_s7"] and oracle["metrics"]["test_error"]["ci95"] is None
    group = next(g for g in data["groups"] if g["method"] == "CE+DRS+GIT")
    assert group["test_error"] == {"mean": pytest.approx(23.0), "se": pytest.approx(se), "n": 3}
    assert len(data["runs"]) == 11


def test_pairs_with_different_ekld_settings_are_not_averaged(tmp_path):
    runs = tmp_path / "runs"
    for i, draws in enumerate([10, 100]):
        run(runs, f"base{i}", "CE+DRS", i, 25.0, ekld=0.5, draws=draws)
        run(runs, f"git{i}", "CE+DRS+GIT", i, 24.0, ekld=0.4, draws=draws)
    (row,) = paired_rows(find_results([str(runs)]))
    assert row["metrics"]["mean_ekld_smallest_third"] == "mixed settings"
    assert cli.main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    assert "| eKLD smallest third | 2 | mixed settings (see every run) | - | - | - |" in \
        (tmp_path / "rep" / "report.md").read_text()
