"""Markdown reports and plots from run directories.

``invtransfer report RUN_DIR ... [--out DIR]`` reads each run's ``results.json`` (a folder
that holds several runs is searched recursively), groups runs that share dataset preset and
method (seeds and dataset instances are the repeats), and writes ``report.md`` with one row per
group: mean ± standard error (n = number of runs) of test error, balanced accuracy and
many/medium/few-shot accuracy, the mean eKLD of the smallest third of classes and the Spearman
correlation of per-class eKLD with class size (from the run's ``invariance.json``, written by
``invtransfer invariance``), the published number beside it where the paper has one
(docs/design.md#published-numbers); then one row per run (the spread behind each mean), and per dataset a per-class accuracy against class size
plot, an eKLD against class size plot (every run's classes as points, one colour per method, the
line through the mean eKLD of each class size) and the sample grid of every generator a GIT run
used; for GIT runs with a class filter (``git.filter``), a table of the generated slots it accepted
and, per dataset, their acceptance rate per class against class size (from each run's
``metrics.jsonl``, summed over the GIT epochs). Between the summary and the runs, a paired table (see :func:`comparisons`) gives for each
comparison and metric n, the mean difference ± its standard error, the 95 % t-interval, the
paired t-test's p-value and a reading in words (:func:`reading`). Where runs record
``other_selection`` (the test metrics of the weights their ``select`` policy did not keep), a last
section repeats the summary, paired and per-run tables with those weights
(:func:`other_selection_view`), so that every comparison is seen under both policies.
``report.json`` beside ``report.md`` holds the same statistics for scripts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import defaultdict

import numpy as np
from scipy import stats

from invtransfer.data.datasets import atomic_write_bytes
from invtransfer.errors import InvTransferError
from invtransfer.plots import plot_against_class_size

#: Published top-1 errors (%), ResNet-32, rho = 100 (docs/design.md#published-numbers):
#: (dataset, method) -> (error, source).
PUBLISHED = {
    ("cifar10-lt", "CE"): (29.64, "Cao et al. 2019"),
    ("cifar100-lt", "CE"): (61.68, "Cao et al. 2019"),
    ("cifar10-lt", "LDAM-DRW"): (22.97, "Cao et al. 2019"),
    ("cifar100-lt", "LDAM-DRW"): (57.96, "Cao et al. 2019"),
    ("cifar10-lt", "CE+DRS+GIT"): (21.24, "GIT paper"),
    ("cifar100-lt", "CE+DRS+GIT"): (55.65, "GIT paper"),
}

COLUMNS = (("test_error", "error %"), ("test_balanced_accuracy", "bal. acc %"),
           ("many_shot_accuracy", "many %"), ("medium_shot_accuracy", "medium %"),
           ("few_shot_accuracy", "few %"))


def find_results(paths: list[str]) -> list[dict]:
    """Every results.json under the given run directories (or folders of runs), each run once.

    A run reached twice (passed twice, or inside a folder also passed) is one run: its identity is
    its real path, and a copy of a run elsewhere (the same results.json bytes) is the same run too.
    Two different runs of one dataset, method, instance and seed are refused: every table would
    count that repeat as another seed, and the paired table could not tell which to pair.
    """
    found = []
    seen: dict[str, str] = {}  # real path, and digest of results.json -> the run's path
    for p in paths:
        if os.path.isfile(p) and p.endswith(".json"):
            files = [p]
        elif os.path.isdir(p):
            files = sorted(os.path.join(d, "results.json") for d, _, names in os.walk(p) if "results.json" in names)
        else:
            raise InvTransferError(f"{p} is neither a run directory nor a results.json file.")
        if not files:
            raise InvTransferError(f"{p} holds no results.json (is the run finished?).")
        for f in files:
            try:
                with open(f, "rb") as fh:
                    raw = fh.read()
                r = json.loads(raw)
            except (OSError, ValueError) as e:
                raise InvTransferError(f"{f} is not readable JSON ({e}).") from None
            if not isinstance(r, dict) or "test_error" not in r or "method" not in r:
                raise InvTransferError(f"{f} is not an invtransfer results.json (no test_error/method).")
            # A run is named by its directory; a results file under another name (several can share a
            # folder, e.g. results/last_epoch/*.results.json) by itself, and is identified by the file,
            # not its folder, so that the others in that folder are not taken for the same run.
            in_run_dir = os.path.basename(f) == "results.json"
            r["_path"] = os.path.dirname(os.path.abspath(f)) if in_run_dir else os.path.abspath(f)
            ids = (os.path.realpath(f), hashlib.sha256(raw).hexdigest())
            if any(i in seen for i in ids):
                continue  # the same run again
            seen.update(dict.fromkeys(ids, r["_path"]))
            # written by `invtransfer invariance` into the run directory
            inv = os.path.join(os.path.dirname(os.path.abspath(f)), "invariance.json")
            if "invariance" not in r and in_run_dir and os.path.isfile(inv):
                try:
                    with open(inv, encoding="utf-8") as fh:
                        r["invariance"] = json.load(fh)
                except (OSError, ValueError) as e:
                    raise InvTransferError(f"{inv} is not readable JSON ({e}).") from None
            # the other selection policy's weights (``invariance --weights other``), where they differ
            other = r.get("other_selection") or {}
            inv = os.path.join(os.path.dirname(os.path.abspath(f)), f"invariance_{other.get('which')}.json")
            if other and "other_invariance" not in r and in_run_dir and os.path.isfile(inv):
                try:
                    with open(inv, encoding="utf-8") as fh:
                        r["other_invariance"] = json.load(fh)
                except (OSError, ValueError) as e:
                    raise InvTransferError(f"{inv} is not readable JSON ({e}).") from None
            if in_run_dir and "git_filter_counts" not in r:
                counts = filter_counts(os.path.join(os.path.dirname(os.path.abspath(f)), "metrics.jsonl"))
                if counts is not None:
                    r["git_filter_counts"] = counts
            found.append(r)
    by_key: dict[tuple, str] = {}
    for r in found:
        key = (r.get("dataset"), r["method"], r.get("instance", 0), r.get("seed"))
        if key in by_key:
            raise InvTransferError(
                f"{by_key[key]} and {r['_path']} are two different runs of {key[0]} {key[1]} with seed {key[3]} on "
                f"dataset instance {key[2]}: a report would count the repeat as another run and could not tell "
                f"which to pair. Pass one of them (e.g. its run directory instead of the folder).")
        by_key[key] = r["_path"]
    return found


def filter_counts(metrics_path: str) -> dict | None:
    """GIT's class-filter counts of a run's ``metrics.jsonl``: per class, the generated slots the
    filter judged (``proposed``) and accepted, summed over the epochs that record them; None when
    the file is missing or records none (a run without ``git.filter``)."""
    if not os.path.isfile(metrics_path):
        return None
    proposed: list[int] | None = None
    accepted: list[int] | None = None
    epochs = 0
    try:
        with open(metrics_path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                rec = json.loads(line)
                if "git_filter_proposed" not in rec:
                    continue
                p, a = [int(v) for v in rec["git_filter_proposed"]], [int(v) for v in rec["git_filter_accepted"]]
                proposed = p if proposed is None else [x + y for x, y in zip(proposed, p)]
                accepted = a if accepted is None else [x + y for x, y in zip(accepted, a)]
                epochs += 1
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvTransferError(f"{metrics_path} has unreadable class-filter counts ({type(e).__name__}: "
                               f"{e}).") from None
    if proposed is None:
        return None
    return {"proposed": proposed, "accepted": accepted, "epochs": epochs}


def mean_se(values: list[float | None]) -> tuple[float, float, int] | None:
    """Mean, standard error (sample std / sqrt(n); 0 for n = 1) and n of the non-null values."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return None
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return float(v.mean()), se, len(v)


def _fmt(stat: tuple[float, float, int] | None, digits: int = 2, of: int | None = None) -> str:
    """``mean ± se``; ``(k of n)`` after it when the mean comes from k of the group's n runs."""
    if stat is None:
        return "empty"
    m, se, n = stat
    text = f"{m:.{digits}f}" if n == 1 else f"{m:.{digits}f} ± {se:.{digits}f}"
    return text if of is None or n == of else f"{text} ({n} of {of})"


def _invariance_setting(r: dict) -> tuple:
    inv = r["invariance"]
    return inv.get("transform"), inv.get("draws"), inv.get("images_per_class"), inv.get("split")


def group_runs(results: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["dataset"], r["method"])].append(r)
    return dict(sorted(groups.items()))


def summary_rows(results: list[dict]) -> list[dict]:
    """One row per (dataset, method): statistics of every metric column."""
    rows = []
    for (dataset, method), runs in group_runs(results).items():
        row = {"dataset": dataset, "method": method, "n": len(runs),
               "seeds": sorted({r["seed"] for r in runs}), "instances": sorted({r.get("instance", 0) for r in runs})}
        for key, _ in COLUMNS:
            row[key] = mean_se([r.get(key) for r in runs])
        measured = [r for r in runs if r.get("invariance")]
        settings = sorted({_invariance_setting(r) for r in measured}, key=str)
        # eKLD under different transforms or draws is not one quantity: no mean across them
        row["invariance_settings"] = settings
        mixed = len(settings) > 1
        eklds = [r["invariance"]["mean_ekld_smallest_third"] for r in measured]
        row["mean_ekld_smallest_third"] = mean_se(eklds) if eklds and not mixed else None
        rhos = [r["invariance"]["spearman_rho"] for r in measured]
        row["spearman_rho"] = mean_se(rhos) if rhos and not mixed else None
        row["published"] = PUBLISHED.get((dataset, method))
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    with_ekld = any(r["mean_ekld_smallest_third"] is not None or len(r.get("invariance_settings", ())) > 1
                    for r in rows)
    head = ["dataset", "method", "runs (seeds / instances)"] + [h for _, h in COLUMNS]
    if with_ekld:
        head += ["eKLD smallest third", "Spearman ρ (eKLD, size)"]
    head.append("published error %")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["dataset"], r["method"], f"{r['n']} ({','.join(map(str, r['seeds']))} / "
                                            f"{','.join(map(str, r['instances']))})"]
        cells += [_fmt(r[k], of=r["n"]) for k, _ in COLUMNS]
        if with_ekld:
            mixed = len(r.get("invariance_settings", ())) > 1
            cells += ["mixed settings (see every run)" if mixed else _fmt(r[k], d, of=r["n"]) if r[k] else "-"
                      for k, d in (("mean_ekld_smallest_third", 3), ("spearman_rho", 2))]
        cells.append(f"{r['published'][0]:.2f} ({r['published'][1]})" if r["published"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: Metrics of the paired table: key in results.json (the tail eKLD: in invariance.json), label, digits.
PAIRED_METRICS = (("test_error", "error % (points)", 2), ("test_balanced_accuracy", "bal. acc % (points)", 2),
                  ("mean_ekld_smallest_third", "eKLD smallest third", 3))


def comparisons(methods: set[str]) -> list[tuple[str, str]]:
    """The method pairs ``(A, B)`` a report compares as A − B within one dataset.

    Each method against the method it adds one ``+component`` to (``CE+DRS+GIT − CE+DRS``,
    ``CE+DRS+Oracle − CE+DRS``, ``CE+DRS − CE``, ``LDAM-DRW+GIT − LDAM-DRW``), and an oracle
    against GIT on the same base (``CE+DRS+Oracle − CE+DRS+GIT``: how far GIT is from training with
    the true nuisance), and GIT against each other component added to the same base
    (``CE+DRS+GIT − CE+DRS+RandAugment``: does a generated nuisance beat that augmentation?). Only
    methods present in ``methods`` are paired.
    """
    out = []
    for m in sorted(methods):
        parent = m.rsplit("+", 1)[0]
        if "+" in m and parent in methods:
            out.append((m, parent))
        if m.endswith("+Oracle") and m[:-len("+Oracle")] + "+GIT" in methods:
            out.append((m, m[:-len("+Oracle")] + "+GIT"))
        if m.endswith("+GIT"):
            out += [(m, n) for n in sorted(methods) if n != m and "+" in n and n.rsplit("+", 1)[0] == parent
                    and not n.endswith("+Oracle")]
    return out


def paired_stats(diffs: list[float]) -> dict:
    """n, mean difference, standard error, 95 % t-interval and two-sided paired t-test p-value.

    ``diffs`` are per-pair differences A − B (runs on the same dataset instance and seed). The
    standard error is the sample standard deviation (ddof 1) / √n; the interval is mean ± t ·
    s.e. with t the 97.5 % quantile of Student's t with n − 1 degrees of freedom; p is the
    two-sided p-value of mean / s.e. under that t distribution (scipy's ``ttest_rel`` of the
    paired values). With n = 1 there is no standard error, interval or p (None). When every
    difference is the same, the standard error is 0 and the interval is that value alone; p is then
    1 if the value is 0 (nothing differs) and 0 otherwise (t is infinite), where scipy gives nan.
    ``lower`` and ``higher`` count the pairs with a negative and a positive difference.
    """
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n == 0:
        raise ValueError("paired_stats needs at least one difference")
    out = {"n": n, "mean": float(d.mean()), "se": None, "ci95": None, "p": None,
           "lower": int((d < 0).sum()), "higher": int((d > 0).sum())}
    if n > 1:
        se = float(d.std(ddof=1) / math.sqrt(n))
        half = float(stats.t.ppf(0.975, n - 1)) * se
        if se > 0:
            p = float(2 * stats.t.sf(abs(out["mean"]) / se, n - 1))
        else:
            p = 1.0 if out["mean"] == 0 else 0.0
        out.update(se=se, ci95=[out["mean"] - half, out["mean"] + half], p=p)
    out["reading"] = reading(out)
    return out


def reading(s: dict) -> str:
    """The words for a paired difference (``paired_stats``' result), as RESULTS.md uses them.

    - n = 1: ``"n = 1: no interval"``.
    - The 95 % interval excludes 0 (both bounds below 0, or both above): ``"lower in k of n,
      interval excludes 0"`` when the mean difference is negative, ``"higher in k of n, interval
      excludes 0"`` when it is positive, k the pairs whose difference has that sign (A lower,
      resp. higher, than B).
    - The interval includes 0 (a bound at exactly 0 counts as including it): ``"not detected:
      lower in k of n, interval includes 0"``, with "higher" and the positive pairs instead when
      the mean is positive. A difference of the same sign in every pair is still not detected if
      the interval includes 0; identical runs read "not detected: lower in 0 of n".

    "Lower" and "higher" are the sign of A − B, not better or worse: lower error and higher
    balanced accuracy are both better.
    """
    n = s["n"]
    if s["ci95"] is None:
        return f"n = {n}: no interval"
    word, k = ("higher", s["higher"]) if s["mean"] > 0 else ("lower", s["lower"])
    lo, hi = s["ci95"]
    if lo > 0 or hi < 0:
        return f"{word} in {k} of {n}, interval excludes 0"
    return f"not detected: {word} in {k} of {n}, interval includes 0"


def _tail_ekld(r: dict) -> float | None:
    return r["invariance"]["mean_ekld_smallest_third"] if r.get("invariance") else None


def paired_rows(results: list[dict]) -> list[dict]:
    """Each comparison of :func:`comparisons`: runs of A and B on the same dataset, instance and seed.

    Pairs remove the spread between dataset instances (and seeds) that both runs share. Per metric
    of ``PAIRED_METRICS`` the differences A − B of the pairs that have the value on both sides get
    :func:`paired_stats` (with the instances and seeds they come from), or None where no pair has
    it, or ``"mixed settings"`` where the pairs' eKLD was measured with different transforms,
    draws, images or split (not one quantity). ``unpaired`` holds the runs of A with no B run on
    their instance and seed.
    """
    by_key = {(r["dataset"], r["method"], r.get("instance", 0), r["seed"]): r for r in results}
    methods: dict[str, set[str]] = defaultdict(set)
    for dataset, method, _, _ in by_key:
        methods[dataset].add(method)
    rows = []
    for dataset in sorted(methods):
        for a, b in comparisons(methods[dataset]):
            pairs, unpaired = [], []
            for (ds, method, instance, seed), r in sorted(by_key.items(), key=lambda kv: str(kv[0])):
                if ds == dataset and method == a:
                    partner = by_key.get((dataset, b, instance, seed))
                    if partner is None:
                        unpaired.append(r)
                    else:
                        pairs.append((r, partner))
            if not pairs:
                continue
            row = {"dataset": dataset, "method": a, "base": b, "comparison": f"{a} − {b}", "n": len(pairs),
                   "metrics": {}, "unpaired": unpaired}
            for key, _, _ in PAIRED_METRICS:
                get = _tail_ekld if key == "mean_ekld_smallest_third" else (lambda r, k=key: r.get(k))
                both = [(x, y) for x, y in pairs if get(x) is not None and get(y) is not None]
                if key == "mean_ekld_smallest_third" and len({_invariance_setting(r) for p in both for r in p}) > 1:
                    row["metrics"][key] = "mixed settings"
                elif both:
                    st = paired_stats([get(x) - get(y) for x, y in both])
                    st.update(instances=sorted({x.get("instance", 0) for x, _ in both}),
                              seeds=sorted({x["seed"] for x, _ in both}))
                    row["metrics"][key] = st
                else:
                    row["metrics"][key] = None
            rows.append(row)
    return rows


def unpaired_note(rows: list[dict], out_dir: str) -> str:
    """The runs a comparison leaves out (no run of the other method on their instance and seed), named."""
    lines = []
    for r in rows:
        if r["unpaired"]:
            runs = ", ".join(f"`{os.path.relpath(u['_path'], out_dir)}` (instance {u.get('instance', 0)}, seed "
                             f"{u['seed']})" for u in r["unpaired"])
            lines.append(f"- {r['dataset']} {r['method']}: {len(r['unpaired'])} run(s) without a {r['base']} run on "
                         f"the same instance and seed, not in the pairs: {runs}\n")
    return "\n" + "".join(lines) if lines else ""


def format_p(p: float | None) -> str:
    """Two significant digits (0.0025, 0.052, 0.25); below 0.0001 as '< 0.0001'."""
    if p is None:
        return "-"
    return "< 0.0001" if p < 1e-4 else f"{p:.2g}"


def paired_table(rows: list[dict], with_ekld: bool = True) -> str:
    """One row per comparison and metric; no eKLD rows when ``with_ekld`` is false (no run has one)."""
    head = ["dataset", "comparison (A − B)", "metric", "pairs (instances / seeds)", "mean Δ ± s.e.",
            "95 % interval", "p (paired t)", "reading"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        for key, label, d in PAIRED_METRICS:
            if key == "mean_ekld_smallest_third" and not with_ekld:
                continue
            s = r["metrics"][key]
            cells = [r["dataset"], r["comparison"], label]
            if s is None:
                cells += [f"0 of {r['n']}", "-", "-", "-", "not measured"]
            elif s == "mixed settings":
                cells += [str(r["n"]), "mixed settings (see every run)", "-", "-", "-"]
            else:
                count = str(s["n"]) if s["n"] == r["n"] else f"{s['n']} of {r['n']}"
                cells.append(f"{count} ({','.join(map(str, s['instances']))} / {','.join(map(str, s['seeds']))})")
                cells.append(f"{s['mean']:+.{d}f}" + ("" if s["se"] is None else f" ± {s['se']:.{d}f}"))
                cells.append("-" if s["ci95"] is None else f"[{s['ci95'][0]:+.{d}f}, {s['ci95'][1]:+.{d}f}]")
                cells += [format_p(s["p"]), s["reading"]]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_table(results: list[dict], out_dir: str) -> str:
    """One row per run: the values behind each mean of the summary table."""
    with_ekld = any(r.get("invariance") for r in results)
    head = ["run", "method", "seed", "instance", "error %", "bal. acc %"]
    if with_ekld:
        head += ["eKLD smallest third", "Spearman ρ", "transform, draws"]
    head += ["selected weights", "wall time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(results, key=lambda r: (r["dataset"], r["method"], r.get("instance", 0), r["seed"])):
        cells = [f"`{os.path.relpath(r['_path'], out_dir)}`", r["method"], str(r["seed"]), str(r.get("instance", 0)),
                 f"{r['test_error']:.2f}", f"{r['test_balanced_accuracy']:.2f}"]
        if with_ekld:
            inv = r.get("invariance")
            cells += ([f"{inv['mean_ekld_smallest_third']:.4f}",
                       "-" if inv["spearman_rho"] is None else f"{inv['spearman_rho']:+.2f}",
                       f"{inv['transform']}, {inv['draws']}"] if inv else ["-", "-", "-"])
        sel = r["selected_weights"]
        wall = f"{r['wall_time_s'] / 60:.1f} min on {r['device']}"
        start = r.get("started_from")
        if start:  # init_from: the epochs it started from were trained (and timed) by another run
            wall += f" from epoch {start['epoch']} of {os.path.basename(os.path.dirname(start['checkpoint']))}"
        cells += [f"{sel['which']} (epoch {sel['epoch']})", wall]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def filter_table(results: list[dict], out_dir: str) -> str:
    """One row per run with class-filter counts: rule, reference classifier, generated slots accepted."""
    head = ["run", "method", "seed", "instance", "rule", "reference classifier", "accepted of generated",
            "acceptance %", "GIT epochs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(results, key=lambda r: (r["dataset"], r["method"], r.get("instance", 0), r["seed"])):
        counts = r.get("git_filter_counts")
        if counts is None:
            continue
        used = r.get("git_filter") or {}
        rule = used.get("rule", "?") + (f" >= {used['min_prob']}" if used.get("min_prob") is not None else "")
        ref = (used.get("classifier") or {}).get("path")
        acc, prop = sum(counts["accepted"]), sum(counts["proposed"])
        cells = [f"`{os.path.relpath(r['_path'], out_dir)}`", r["method"], str(r["seed"]), str(r.get("instance", 0)),
                 rule, f"`{ref}`" if ref else "-", f"{acc} of {prop}", f"{100.0 * acc / prop:.1f}" if prop else "-",
                 str(counts["epochs"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_filter_groups(runs: list[dict], path: str, title: str) -> None:
    """Per-class acceptance rate of GIT's class filter (summed over the GIT epochs) against class
    size: points per class of each run (classes with generated slots), a mean line per method."""
    def points(r: dict) -> list[tuple[float, float]]:
        c = r["git_filter_counts"]
        return [(n, 100.0 * a / p) for n, a, p in zip(r["train_class_counts"], c["accepted"], c["proposed"]) if p]

    plot_against_class_size(_series_by_method(runs, points), path, ylabel="generated slots accepted (%)",
                            mean_line=True, title=f"{title}: class-filter acceptance")


def _series_by_method(runs: list[dict], points, extra=lambda runs: "") -> dict[str, list]:
    """Label ``method (n runs[extra])`` -> the points of all its runs."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        groups[r["method"]].append(r)
    return {f"{m} ({len(rs)} run{'s' if len(rs) > 1 else ''}{extra(rs)})": [p for r in rs for p in points(r)]
            for m, rs in sorted(groups.items())}


def plot_ekld_groups(runs: list[dict], path: str, title: str) -> None:
    """Per-class eKLD against class size of many runs: points per class, a mean line per method."""
    def rho(rs: list[dict]) -> str:
        stat = mean_se([r["invariance"]["spearman_rho"] for r in rs])
        return f", Spearman {stat[0]:+.2f}" if stat else ""

    series = _series_by_method(runs, lambda r: [(p["class_size"], p["ekld"]) for p in r["invariance"]["per_class"]],
                               rho)
    inv = runs[0]["invariance"]
    plot_against_class_size(series, path, ylabel="eKLD (nats)", mean_line=True,
                            title=f"{title} ({transform_tag(inv['transform'])}, {inv['draws']} draws)")


def transform_tag(transform: str) -> str:
    """``rot``, ``bg``, ``dil``, or ``generator_<its run folder>``: not the whole path (which
    differs per machine), for file names and titles."""
    if transform.startswith("generator:"):
        return f"generator_{os.path.basename(os.path.normpath(transform.split(':', 1)[1]))}"
    return transform


def plot_accuracy_groups(runs: list[dict], path: str, title: str) -> None:
    """Per-class test accuracy against class size of many runs: points, a mean line per method."""
    series = _series_by_method(runs, lambda r: list(zip(r["train_class_counts"], r["per_class_accuracy"])))
    plot_against_class_size(series, path, ylabel="test accuracy (%)", mean_line=True,
                            title=f"{title}: per-class accuracy")


def generator_grids(results: list[dict]) -> dict[str, str]:
    """Generator run directory -> its final sample grid, for every generator a GIT run used."""
    grids = {}
    for r in results:
        gen = ((r.get("config") or {}).get("git") or {}).get("generator")
        if not gen:
            continue
        gen_dir = gen if os.path.isdir(gen) else os.path.dirname(gen)
        png = os.path.join(gen_dir, "samples_final.png")
        if os.path.isfile(png):
            grids[os.path.normpath(gen_dir)] = png
    return dict(sorted(grids.items()))


def grid_file_names(gen_dirs: list[str]) -> dict[str, str]:
    """Report file name of each generator's sample grid: from the run directory's name (stable as
    runs are added), with a short hash of its full path where two generators share a name."""
    base = {d: os.path.basename(os.path.normpath(d)) for d in gen_dirs}
    count = defaultdict(int)
    for b in base.values():
        count[b] += 1
    out = {}
    for d, b in base.items():
        tag = b if count[b] == 1 else f"{b}_{hashlib.sha1(os.path.abspath(d).encode()).hexdigest()[:8]}"
        out[d] = f"generator_samples_{tag}.png"
    return out


#: What results.json's ``other_selection`` replaces in a run's view under the other policy.
OTHER_KEYS = ("test_error", "test_balanced_accuracy", "many_shot_accuracy", "medium_shot_accuracy",
              "few_shot_accuracy", "per_class_accuracy")


def other_selection_view(results: list[dict]) -> list[dict]:
    """Each run as the selection policy it did not use would report it: test metrics from
    results.json's ``other_selection`` and eKLD from ``invariance_<best_val|last>.json``
    (``invariance --weights other``; none where not measured). A run whose ``other_selection`` is
    null keeps the same weights under both policies and appears as it is; a results.json from
    before ``other_selection`` existed is left out (its other weights were never evaluated)."""
    view = []
    for r in results:
        if "other_selection" not in r:
            continue
        o = r["other_selection"]
        if o is None:
            view.append(r)
            continue
        v = {k: val for k, val in r.items() if k not in ("invariance", "other_invariance")}
        v.update({k: o.get(k) for k in OTHER_KEYS}, selected_weights={"which": o["which"], "epoch": o["epoch"]})
        if r.get("other_invariance"):
            v["invariance"] = r["other_invariance"]
        view.append(v)
    return view


def report_json(title: str, rows: list[dict], pairs: list[dict], results: list[dict], out_dir: str) -> dict:
    """The statistics of report.md for scripts: groups (mean, s.e., n per metric), paired comparisons
    (``paired_stats`` per metric, the runs left unpaired) and every run's path, relative to out_dir."""
    stat_keys = {k for k, _ in COLUMNS} | {"mean_ekld_smallest_third", "spearman_rho"}

    def rel(r):
        return os.path.relpath(r["_path"], out_dir)

    groups = [{k: dict(zip(("mean", "se", "n"), v)) if k in stat_keys and v is not None else v
               for k, v in r.items()} for r in rows]
    paired = [dict(p, unpaired=[rel(u) for u in p["unpaired"]]) for p in pairs]
    runs = [{"run": rel(r), "dataset": r["dataset"], "method": r["method"], "instance": r.get("instance", 0),
             "seed": r["seed"], **({"git_filter_counts": r["git_filter_counts"]} if "git_filter_counts" in r else {})}
            for r in results]
    return {"title": title, "groups": groups, "paired": paired, "runs": runs}


def paired_intro(results: list[dict]) -> str:
    return ("Paired: A − B over the runs of A and B on the same dataset instance and seed, for each "
            "method against the method it adds one component to, an oracle against GIT on the same base, and GIT "
            "against each other component on the same base. Per metric: n pairs, the mean difference ± its "
            "standard error, the 95 % t-interval (n − 1 degrees of freedom), the two-sided paired t-test's p-value, "
            "and the reading: \"lower (higher) in k of n, interval excludes 0\" where the interval excludes 0, "
            "\"not detected\" where it includes 0 (k: the pairs in which A is lower, or higher). Negative error and "
            "eKLD differences, positive balanced-accuracy differences favour A.\n\n")


def write_report(paths: list[str], out_dir: str, title: str = "invtransfer report") -> str:
    """Write ``out_dir/report.md`` and ``report.json`` (+ plots) for the runs under ``paths``; returns
    the path of report.md."""
    results = find_results(paths)
    os.makedirs(out_dir, exist_ok=True)
    rows = summary_rows(results)
    parts = [f"# {title}\n", "Mean ± standard error over runs (seeds and dataset instances) sharing dataset "
             "and method; test metrics of the selected weights (see each run's results.json). \"(k of n)\": "
             "the mean comes from the k runs of the group that have the value. eKLD: "
             "`invtransfer invariance` of each run (its invariance.json), smallest third of classes by "
             "training size; Spearman ρ: rank correlation of per-class eKLD with class size.\n\n",
             markdown_table(rows)]
    pairs = paired_rows(results)
    if pairs:
        parts += ["\n" + paired_intro(results), paired_table(pairs, with_ekld=any(r.get("invariance") for r in results)),
                  unpaired_note(pairs, out_dir)]
    parts += ["\nEvery run:\n\n", run_table(results, out_dir)]
    if any("git_filter_counts" in r for r in results):
        parts += ["\nClass filter (`git.filter`): generated slots the reference classifier accepted (the others "
                  "kept their real image and label), summed over the GIT epochs of each run's metrics.jsonl.\n\n",
                  filter_table(results, out_dir)]
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_dataset[r["dataset"]].append(r)
    for dataset, runs in sorted(by_dataset.items()):
        png = f"per_class_accuracy_{dataset}.png"
        plot_accuracy_groups(runs, os.path.join(out_dir, png), dataset)
        parts.append(f"\n![per-class accuracy on {dataset}]({png})\n")
        with_inv = [r for r in runs if r.get("invariance")]
        used: set[str] = set()
        for transform in sorted({r["invariance"]["transform"] for r in with_inv}):
            group = [r for r in with_inv if r["invariance"]["transform"] == transform]
            png = f"ekld_vs_class_size_{dataset}_{transform_tag(transform)}.png"
            png = png if png not in used else f"{png[:-4]}_{len(used)}.png"
            used.add(png)
            plot_ekld_groups(group, os.path.join(out_dir, png), dataset)
            parts.append(f"\n![eKLD against class size on {dataset}, {transform}]({png})\n")
        filtered = [r for r in runs if "git_filter_counts" in r]
        if filtered:
            png = f"git_filter_acceptance_{dataset}.png"
            plot_filter_groups(filtered, os.path.join(out_dir, png), dataset)
            parts.append(f"\n![class-filter acceptance against class size on {dataset}]({png})\n")
    grids = generator_grids(results)
    names = grid_file_names(list(grids))
    if grids:
        parts.append("\nGenerators used by GIT runs (per row: a held-out image, its reconstruction, random styles):\n")
    for gen_dir, png in grids.items():
        shutil.copyfile(png, os.path.join(out_dir, names[gen_dir]))
        parts.append(f"\n`{gen_dir}`:\n\n![samples of {gen_dir}]({names[gen_dir]})\n")
    # last, after this policy's plots: the same tables with the weights the other policy keeps
    other = other_selection_view(results)
    last: list[str] = []
    other_rows, other_pairs = summary_rows(other), paired_rows(other)
    if any(r.get("other_selection") for r in results):
        last += ["\n## Under the other selection policy\n\nThe same runs with the weights their `select` policy "
                 "did not keep (best validation epoch for `select=last` runs, last epoch for `select=val` runs; "
                 "each run's weights and epoch in its row below): test metrics from results.json's "
                 "`other_selection`, eKLD from `invariance --weights other` (\"-\" where not measured). Runs whose "
                 "best validation epoch is the last keep one set of weights and appear as above; runs from before "
                 "`other_selection` existed are left out.\n\n", markdown_table(other_rows)]
        if other_pairs:
            last += ["\n" + paired_intro(other), paired_table(other_pairs, with_ekld=any(r.get("invariance")
                                                                                        for r in other))]
        last += ["\nEvery run, other selection:\n\n", run_table(other, out_dir)]
    parts += last
    # Grids of generators no longer used by these runs (an earlier report into the same folder) go.
    for f in os.listdir(out_dir):
        if f.startswith("generator_samples_") and f.endswith(".png") and f not in names.values():
            os.remove(os.path.join(out_dir, f))
    path = os.path.join(out_dir, "report.md")
    atomic_write_bytes(path, "".join(parts).encode())
    js = report_json(title, rows, pairs, results, out_dir)
    if any(r.get("other_selection") for r in results):
        js["other_selection"] = {k: v for k, v in report_json(title, other_rows, other_pairs, other, out_dir).items()
                                 if k != "title"}
    atomic_write_bytes(os.path.join(out_dir, "report.json"), (json.dumps(js, indent=1, ensure_ascii=False)
                                                              + "\n").encode())
    return path
