"""Experiment drivers: the paper's protocols as resumable lists of ``invtransfer`` commands.

    python experiments/protocols.py synthetic --base fmnist --transforms bg dil --instances 0 1 2
    python experiments/protocols.py synthetic --base fmnist --transforms rot --methods ce ce_drs
    python experiments/protocols.py cifar --dataset cifar10-lt
    python experiments/protocols.py synthetic ... --dry-run        # print the commands only

Every run has a fixed name under ``--out`` (default ``runs/protocols``). A run whose
``results.json`` (classifier) or ``generator.pt`` (generator) exists is skipped; one with a
checkpoint is resumed (``resume=true``); anything else starts fresh. So the same command can be
re-run after an interruption and continues where it stopped. After a classifier finishes, its
invariance is measured (true transform on synthetic data) into its ``invariance.json``, and a
report of everything under ``--out`` is written to ``--out/report``.

Synthetic protocol (SPEC §2, §5): per transform and dataset instance, one generator (BG and DIL;
ROT only with ``--git-on-rot``), then CE, CE+DRS, CE+DRS+GIT (where a generator exists) and the
oracle. CIFAR-LT table: one generator, then CE, CE+DRS, CE+DRS+GIT, LDAM-DRW, LDAM-DRW+GIT and
balanced softmax+DRS+GIT.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass, field

CONFIG_DIRS = {"fmnist": "configs/fmnist_lt", "k49": "configs/k49_lt", "cifar10-lt": "configs/cifar10_lt",
               "cifar100-lt": "configs/cifar100_lt", "gtsrb-lt": "configs/gtsrb_lt"}
GENERATOR_CONFIGS = {"fmnist": "configs/generator/fmnist_munit.yaml", "k49": "configs/generator/fmnist_munit.yaml",
                     "cifar10-lt": "configs/generator/cifar10_munit.yaml",
                     "cifar100-lt": "configs/generator/cifar10_munit.yaml",
                     "gtsrb-lt": "configs/generator/cifar10_munit.yaml"}


@dataclass
class Job:
    """One ``invtransfer`` command with a fixed run directory."""

    kind: str  # "classifier" or "generator"
    name: str
    args: list[str]
    after: list[list[str]] = field(default_factory=list)  # commands run once the job has finished

    def run_dir(self, out: str) -> str:
        return os.path.join(out, self.name)

    def done(self, out: str) -> bool:
        marker = "results.json" if self.kind == "classifier" else "generator.pt"
        return os.path.isfile(os.path.join(self.run_dir(out), marker))

    def command(self, out: str, exe: list[str]) -> list[str]:
        ck = "checkpoint.pt" if self.kind == "classifier" else "state.pt"
        resume = os.path.isfile(os.path.join(self.run_dir(out), ck))
        extra = [f"out_dir={out}", f"name={self.name}", "quiet=true",
                 "resume=true" if resume else "overwrite=true"]
        return exe + self.args + extra


def synthetic_jobs(base: str, transforms: list[str], instances: list[int], methods: list[str], out: str,
                   git_on_rot: bool, extra: list[str], gen_extra: list[str] = ()) -> list[Job]:
    cdir = CONFIG_DIRS[base]
    jobs = []
    for t in transforms:
        dataset = f"{base}-{t}-lt"
        for i in instances:
            data = [f"data.name={dataset}", f"data.instance={i}"]
            gen_name = f"gen__{dataset}__i{i}"
            with_gen = t != "rot" or git_on_rot
            if with_gen and "ce_drs_git" in methods:
                jobs.append(Job("generator", gen_name, ["train-generator", GENERATOR_CONFIGS[base], *data,
                                                        *gen_extra]))
            for m in methods:
                if m == "ce_drs_git" and not with_gen:
                    continue
                name = f"{dataset}__i{i}__{m}"
                args = ["train", f"{cdir}/{m}.yaml", *data, *extra]
                if m == "ce_drs_git":
                    args.append(f"git.generator={os.path.join(out, gen_name)}")
                inv = ["invariance", os.path.join(out, name), "--transform", t]
                jobs.append(Job("classifier", name, args, after=[inv]))
    return jobs


def cifar_jobs(dataset: str, methods: list[str], seeds: list[int], out: str, extra: list[str],
               gen_extra: list[str] = ()) -> list[Job]:
    cdir = CONFIG_DIRS[dataset]
    gen_name = f"gen__{dataset}"
    jobs = []
    if any(m.endswith("_git") for m in methods):
        jobs.append(Job("generator", gen_name, ["train-generator", GENERATOR_CONFIGS[dataset],
                                                f"data.name={dataset}", *gen_extra]))
    for s in seeds:
        for m in methods:
            args = ["train", f"{cdir}/{m}.yaml", f"seed={s}", *extra]
            if m.endswith("_git"):
                args.append(f"git.generator={os.path.join(out, gen_name)}")
            after = [["invariance", os.path.join(out, f"{dataset}__{m}__s{s}"), "--transform",
                      f"generator:{os.path.join(out, gen_name)}"]] if m.endswith("_git") else []
            jobs.append(Job("classifier", f"{dataset}__{m}__s{s}", args, after=after))
    return jobs


def run_jobs(jobs: list[Job], out: str, exe: list[str], dry_run: bool) -> int:
    failures = 0
    for job in jobs:
        if job.done(out):
            print(f"[skip] {job.name} (finished)", flush=True)
            continue
        cmd = job.command(out, exe)
        print("[run] " + " ".join(cmd), flush=True)
        if dry_run:
            continue
        if subprocess.run(cmd).returncode != 0:
            print(f"[fail] {job.name}; re-run this driver to resume it", flush=True)
            failures += 1
            continue
        for after in job.after:
            subprocess.run(exe + after)
    if not dry_run and any(j.done(out) and j.kind == "classifier" for j in jobs):
        subprocess.run(exe + ["report", out, "--out", os.path.join(out, "report")])
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="protocol", required=True)
    s = sub.add_parser("synthetic", help="K49-style synthetic nuisance protocol (Fashion-MNIST or K49)")
    s.add_argument("--base", choices=("fmnist", "k49"), default="fmnist")
    s.add_argument("--transforms", nargs="+", choices=("rot", "bg", "dil"), default=["bg", "dil"])
    s.add_argument("--instances", nargs="+", type=int, default=[0, 1, 2])
    s.add_argument("--methods", nargs="+", default=["ce", "ce_drs", "ce_drs_git", "oracle"])
    s.add_argument("--git-on-rot", action="store_true", help="also train a generator and GIT on ROT")
    c = sub.add_parser("cifar", help="the CIFAR-LT table")
    c.add_argument("--dataset", choices=("cifar10-lt", "cifar100-lt", "gtsrb-lt"), default="cifar10-lt")
    c.add_argument("--methods", nargs="+", default=["ce", "ce_drs", "ce_drs_git", "ldam_drw", "ldam_drw_git",
                                                    "balanced_softmax_drs_git"])
    c.add_argument("--seeds", nargs="+", type=int, default=[0])
    for q in (s, c):
        q.add_argument("--out", default="runs/protocols")
        q.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="extra overrides of every classifier run (e.g. optim.epochs=10)")
        q.add_argument("--set-generator", nargs="*", default=[], metavar="KEY=VALUE",
                       help="extra overrides of every generator run (e.g. iterations=2000)")
        q.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    if a.protocol == "synthetic":
        jobs = synthetic_jobs(a.base, a.transforms, a.instances, a.methods, a.out, a.git_on_rot, a.set,
                              a.set_generator)
    else:
        jobs = cifar_jobs(a.dataset, a.methods, a.seeds, a.out, a.set, a.set_generator)
    exe = [sys.executable, "-m", "invtransfer"]
    return run_jobs(jobs, a.out, exe, a.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
