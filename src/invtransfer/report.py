"""Markdown reports and plots from run directories.

``invtransfer report RUN_DIR ... [--out DIR]`` reads each run's ``results.json`` (a folder
that holds several runs is searched recursively), groups runs that share dataset preset and
method (seeds and dataset instances are the repeats), and writes ``report.md`` with one row per
group: mean ± standard error (n = number of runs) of test error, balanced accuracy and
many/medium/few-shot accuracy, the mean eKLD of the smallest third of classes and the Spearman
correlation of per-class eKLD with class size (from the run's ``invariance.json``, written by
``invtransfer invariance``), the published number beside it where SPEC §6 has one; then one row
per run (the spread behind each mean), and per dataset a per-class accuracy against class size
plot, an eKLD against class size plot (every run's classes as points, one colour per method, the
line through the mean eKLD of each class size) and the sample grid of every generator a GIT run
used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import defaultdict

import numpy as np

from invtransfer.data.datasets import atomic_write_bytes
from invtransfer.errors import InvTransferError
from invtransfer.plots import plot_against_class_size

#: Published top-1 errors (%), ResNet-32, rho = 100 (SPEC §6): (dataset, method) -> (error, source).
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
            r["_path"] = os.path.dirname(os.path.abspath(f))
            ids = (os.path.realpath(r["_path"]), hashlib.sha256(raw).hexdigest())
            if any(i in seen for i in ids):
                continue  # the same run again
            seen.update(dict.fromkeys(ids, r["_path"]))
            inv = os.path.join(r["_path"], "invariance.json")  # written by `invtransfer invariance`
            if "invariance" not in r and os.path.isfile(inv):
                try:
                    with open(inv, encoding="utf-8") as fh:
                        r["invariance"] = json.load(fh)
                except (OSError, ValueError) as e:
                    raise InvTransferError(f"{inv} is not readable JSON ({e}).") from None
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


def paired_rows(results: list[dict]) -> list[dict]:
    """Each ``X+GIT`` run against its ``X`` run on the same dataset, instance and seed.

    Pairs remove the spread between dataset instances (and seeds) that both runs share; the
    differences (GIT minus base) get mean ± standard error and a count of the pairs in which GIT
    is better.
    """
    by_key = {(r["dataset"], r["method"], r.get("instance", 0), r["seed"]): r for r in results}
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = defaultdict(list)
    unpaired: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for (dataset, method, instance, seed), r in sorted(by_key.items()):
        base = by_key.get((dataset, method[:-len("+GIT")], instance, seed)) if method.endswith("+GIT") else None
        if base is not None:
            groups[(dataset, method)].append((r, base))
        elif method.endswith("+GIT"):
            unpaired[(dataset, method)].append(r)
    rows = []
    for (dataset, method), pairs in groups.items():
        def diffs(get):
            return [get(g) - get(b) for g, b in pairs if get(g) is not None and get(b) is not None]

        def tail(r):
            return r["invariance"]["mean_ekld_smallest_third"] if r.get("invariance") else None

        d_err, d_bal, d_ekld = (diffs(lambda r: r["test_error"]), diffs(lambda r: r["test_balanced_accuracy"]),
                                diffs(tail))
        rows.append({"dataset": dataset, "method": method, "base": method[:-len("+GIT")], "n": len(pairs),
                     "instances": sorted({g.get("instance", 0) for g, _ in pairs}),
                     "d_error": mean_se(d_err), "d_balanced_accuracy": mean_se(d_bal),
                     "d_ekld_smallest_third": mean_se(d_ekld) if d_ekld else None,
                     "error_lower": sum(d < 0 for d in d_err), "ekld_lower": sum(d < 0 for d in d_ekld),
                     "n_ekld": len(d_ekld), "unpaired": unpaired.get((dataset, method), [])})
    return rows


def unpaired_note(rows: list[dict], out_dir: str) -> str:
    """The GIT runs a paired row leaves out (no base run on their instance and seed), named."""
    lines = []
    for r in rows:
        if r["unpaired"]:
            runs = ", ".join(f"`{os.path.relpath(u['_path'], out_dir)}` (instance {u.get('instance', 0)}, seed "
                             f"{u['seed']})" for u in r["unpaired"])
            lines.append(f"- {r['dataset']} {r['method']}: {len(r['unpaired'])} run(s) without a {r['base']} run on "
                         f"the same instance and seed, not in the pairs: {runs}\n")
    return "\n" + "".join(lines) if lines else ""


def paired_table(rows: list[dict]) -> str:
    head = ["dataset", "comparison", "pairs (instances)", "Δ error (points)", "Δ bal. acc (points)",
            "Δ eKLD smallest third", "GIT lower error", "GIT lower tail eKLD"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["dataset"], f"{r['method']} − {r['base']}", f"{r['n']} ({','.join(map(str, r['instances']))})",
            _fmt(r["d_error"]), _fmt(r["d_balanced_accuracy"]),
            _fmt(r["d_ekld_smallest_third"], 3) if r["d_ekld_smallest_third"] else "-",
            f"{r['error_lower']} of {r['n']}", f"{r['ekld_lower']} of {r['n_ekld']}" if r["n_ekld"] else "-"]) + " |")
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
                            title=f"{title} ({inv['transform']}, {inv['draws']} draws)")


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


def write_report(paths: list[str], out_dir: str, title: str = "invtransfer report") -> str:
    """Write ``out_dir/report.md`` (+ plots) for the runs under ``paths``; returns its path."""
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
        parts += ["\nPaired: each GIT run minus its base method's run on the same dataset instance and seed "
                  "(mean ± standard error of the differences; negative error and eKLD differences favour GIT).\n\n",
                  paired_table(pairs), unpaired_note(pairs, out_dir)]
    parts += ["\nEvery run:\n\n", run_table(results, out_dir)]
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_dataset[r["dataset"]].append(r)
    for dataset, runs in sorted(by_dataset.items()):
        png = f"per_class_accuracy_{dataset}.png"
        plot_accuracy_groups(runs, os.path.join(out_dir, png), dataset)
        parts.append(f"\n![per-class accuracy on {dataset}]({png})\n")
        with_inv = [r for r in runs if r.get("invariance")]
        for transform in sorted({r["invariance"]["transform"] for r in with_inv}):
            group = [r for r in with_inv if r["invariance"]["transform"] == transform]
            png = f"ekld_vs_class_size_{dataset}_{transform.replace(':', '_').replace(os.sep, '_')}.png"
            plot_ekld_groups(group, os.path.join(out_dir, png), dataset)
            parts.append(f"\n![eKLD against class size on {dataset}, {transform}]({png})\n")
    grids = generator_grids(results)
    names = grid_file_names(list(grids))
    if grids:
        parts.append("\nGenerators used by GIT runs (per row: a held-out image, its reconstruction, random styles):\n")
    for gen_dir, png in grids.items():
        shutil.copyfile(png, os.path.join(out_dir, names[gen_dir]))
        parts.append(f"\n`{gen_dir}`:\n\n![samples of {gen_dir}]({names[gen_dir]})\n")
    # Grids of generators no longer used by these runs (an earlier report into the same folder) go.
    for f in os.listdir(out_dir):
        if f.startswith("generator_samples_") and f.endswith(".png") and f not in names.values():
            os.remove(os.path.join(out_dir, f))
    path = os.path.join(out_dir, "report.md")
    atomic_write_bytes(path, "".join(parts).encode())
    return path
