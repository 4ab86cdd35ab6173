"""Experiment drivers: the paper's protocols as resumable lists of ``invtransfer`` commands.

    python experiments/protocols.py synthetic --base fmnist --transforms bg dil --instances 0 1 2
    python experiments/protocols.py synthetic --methods ce_drs ce_drs_git \
        --generator-config configs/generator/fmnist_munit_small.yaml --jobs 2   # the CPU-sized generator
    python experiments/protocols.py synthetic --base fmnist --transforms rot --methods ce ce_drs
    python experiments/protocols.py cifar --dataset cifar10-lt
    python experiments/protocols.py cifar --generator-config configs/generator/cifar10_munit_small.yaml  # cheaper GIT
    python experiments/protocols.py synthetic ... --dry-run        # print the commands only
    python experiments/protocols.py cifar --jobs 4                 # 4 runs at a time (submitit)
    python experiments/protocols.py cifar --executor slurm --jobs 8 --slurm-partition gpu
    python experiments/protocols.py archive --out runs/protocols --to results/runs/protocols  # for git
    python experiments/protocols.py park    # unfinished runs' checkpoints -> results/parked/ (for git)

Every run has a fixed name under ``--out`` (default ``$INVTRANSFER_RUNS/protocols``, with
``INVTRANSFER_RUNS`` defaulting to ``runs``: point it outside the checkout so that a new checkout
finds the runs). A run whose
``results.json`` (classifier) or ``generator.pt`` (generator) exists is skipped; one with a
checkpoint is resumed (``resume=true``); anything else starts fresh. So the same command can be
re-run after an interruption and continues where it stopped. After a classifier finishes, its
invariance is measured into its ``invariance.json``: under the true transform on synthetic data;
on CIFAR-LT and GTSRB-LT, where no true nuisance exists, under the protocol's generator, for the
GIT run and (a "measure" job once both have finished) its plain twin; each also with the weights
its ``select`` policy did not keep (``invariance --weights other``, into
``invariance_best_val.json`` or ``invariance_last.json``). A run whose measurement
was interrupted counts as unfinished: the next invocation measures it without retraining. Finally a report of
everything under ``--out`` is written to ``--out/report``.

Dispatch (``--executor``): through submitit (``pip install 'invtransfer[sweep]'``): ``local``
runs ``--jobs`` runs at a time as local processes (GPUs handed out round robin), ``slurm``
submits SLURM job arrays (``--jobs`` = array parallelism; a preempted or timed-out job stops
its run cleanly, which saves a checkpoint, and requeues itself to resume it), ``auto`` (the
default) picks slurm where ``sbatch`` exists, else local. Each job goes out as soon as what it
needs exists: a GIT run waits for its generator and for the checkpoint it starts from (below).
``sequential``, or no submitit installed, runs the jobs one after another in this process. Job
logs: ``--out/submitit/``.

Synthetic protocol (docs/design.md#datasets, #git): per transform and dataset instance, one generator (BG and DIL;
ROT only with ``--git-on-rot``), then CE, CE+DRS, CE+DRS+GIT (where a generator exists) and the
oracle; ``--variant theta|splice`` runs the same on SPEC's control sets (runs named
``<set>-theta__...``, ``<set>-splice<R>__...``), and a method ``<preset>+<arm>`` adds one
component (:data:`ARMS`: randaugment, mixup, sam; on GIT presets filter, consistency). CIFAR-LT table: one generator, then CE, CE+DRS, CE+DRS+GIT, LDAM-DRW, LDAM-DRW+GIT and
balanced softmax+DRS+GIT.

GIT runs start from their plain twin (CE+DRS+GIT from CE+DRS, LDAM-DRW+GIT from LDAM-DRW, ...)
at GIT's first epoch, E1 + 1, where the two are still identical (:func:`link_forks`), so those
epochs are trained once; ``--no-fork`` trains every GIT run from scratch (same weights on CPU).

Parking (``parking.py``): ``park`` copies what continues each run into ``results/parked/``
(committed), for when the machine and its runs root are lost; the protocol commands restore a
run from there when its folder lacks it, and remove a parked copy once the run and every job that
needs it have finished.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import parking

CONFIG_DIRS = {"fmnist": "configs/fmnist_lt", "k49": "configs/k49_lt", "cifar10-lt": "configs/cifar10_lt",
               "cifar100-lt": "configs/cifar100_lt", "gtsrb-lt": "configs/gtsrb_lt"}
GENERATOR_CONFIGS = {"fmnist": "configs/generator/fmnist_munit.yaml", "k49": "configs/generator/fmnist_munit.yaml",
                     "cifar10-lt": "configs/generator/cifar10_munit.yaml",
                     "cifar100-lt": "configs/generator/cifar10_munit.yaml",
                     "gtsrb-lt": "configs/generator/gtsrb_munit.yaml"}
# eKLD under a paper-architecture generator (CIFAR/GTSRB protocol): 40 test images per class x 20
# draws instead of the synthetic protocol's 100 draws. Each draw is a MUNIT decode (about 30-90
# images/s on a CPU), and GTSRB has 43 classes: 100 draws would be 172k decodes, hours of a core.
GENERATOR_EKLD = ["--images-per-class", "40", "--draws", "20"]


@dataclass
class Job:
    """One ``invtransfer`` command with a fixed run directory."""

    kind: str  # "classifier", "generator" or "measure" (a command on finished runs, no run of its own)
    name: str
    args: list[str]
    after: list[list[str]] = field(default_factory=list)  # commands run once the job has finished
    needs: str | list[str] | None = None  # name(s) of the jobs that must have finished first
    fork: tuple[str, int] | None = None  # (job, epoch): start from that job's checkpoint after `epoch` epochs
    marker: str | None = None  # "measure" jobs: the file, relative to --out, whose existence means done
    after_marker: str = "invariance.json"  # file, relative to the run directory, that `after` writes

    @property
    def needed(self) -> list[str]:
        return [] if self.needs is None else [self.needs] if isinstance(self.needs, str) else list(self.needs)

    def run_dir(self, out: str) -> str:
        return os.path.join(out, self.name)

    def fork_checkpoint(self, out: str) -> str | None:
        return os.path.join(out, self.fork[0], f"checkpoint_e{self.fork[1]}.pt") if self.fork else None

    def ready(self, out: str, by_name: dict, active: set) -> bool:
        """Whether the job can start now: what it needs has finished and, when it starts from
        another run's checkpoint, that checkpoint exists or will never exist (that run finished,
        failed, or passed the epoch without keeping it); then it trains from scratch."""
        if not all(n in by_name and by_name[n].trained(out) and n not in active for n in self.needed):
            return False  # (a job still running may have written its marker but not yet all it writes)
        if not self.fork or os.path.isfile(self.fork_checkpoint(out)) or self.fork[0] not in active:
            return True
        return _logged_epochs(os.path.join(out, self.fork[0])) >= self.fork[1]

    def trained(self, out: str) -> bool:
        """Whether the run itself has finished (what other jobs need), its `after` commands aside."""
        if self.kind == "measure":
            return os.path.isfile(os.path.join(out, self.marker))
        marker = "results.json" if self.kind == "classifier" else "generator.pt"
        return os.path.isfile(os.path.join(self.run_dir(out), marker))

    def done(self, out: str) -> bool:
        """Trained and, when it has `after` commands, their output written: a run whose measurement
        was interrupted is not skipped; the next invocation runs only the measurement."""
        if not self.trained(out):
            return False
        return not self.after or os.path.isfile(os.path.join(self.run_dir(out), self.after_marker))

    def run(self, out: str, exe: list[str], popen=subprocess.Popen) -> int:
        """Train (resuming or starting as :meth:`command` decides) unless trained already, then run
        the `after` commands. Returns the training's exit status (0 when it was trained before)."""
        if not self.trained(out):
            cmd = self.command(out, exe)
            print("[run] " + " ".join(cmd), flush=True)
            rc = popen(cmd).wait()
            if rc != 0:
                return rc
        for after in self.after:
            subprocess.run(exe + after)
        return 0

    def command(self, out: str, exe: list[str]) -> list[str]:
        if self.kind == "measure":
            return exe + self.args
        ck = "checkpoint.pt" if self.kind == "classifier" else "state.pt"
        resume = os.path.isfile(os.path.join(self.run_dir(out), ck))
        extra = [f"out_dir={out}", f"name={self.name}", "quiet=true",
                 "resume=true" if resume else "overwrite=true"]
        if not resume and self.fork and os.path.isfile(self.fork_checkpoint(out)):
            extra.append(f"init_from={self.fork_checkpoint(out)}")
        return exe + self.args + extra


def _logged_epochs(run_dir: str) -> int:
    """The last epoch in a classifier run's ``metrics.jsonl`` (0 when there is none)."""
    import json

    last = 0
    try:
        with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as fh:
            for ln in fh:
                try:
                    last = max(last, int(json.loads(ln)["epoch"]))
                except (ValueError, KeyError, TypeError):
                    continue
    except OSError:
        pass
    return last


def link_forks(jobs: list[Job]) -> None:
    """Let each GIT run start from its plain twin's checkpoint at GIT's first epoch.

    ``X_git`` and ``X`` (same dataset, instance or seed) differ only in ``git.*`` keys, and every
    random draw of a run derives from (seed, epoch, step), so the two are identical until GIT's
    first epoch (E1 + 1): the plain run keeps its checkpoint there (``keep_checkpoints``) and the
    GIT run continues from it (``init_from``), which gives the same weights as training it from
    scratch (tested) and saves E1 + 1 epochs of its training (160 of 200 on CIFAR). The configs
    are compared here; a pair that differs elsewhere is left alone.
    """
    from invtransfer.config import diff_configs, load_config, to_dict
    from invtransfer.train.classifier import TrainConfig

    def fork_epoch(git_yaml: str, git_args: list[str], plain: Job) -> int | None:
        try:
            cfg = load_config(TrainConfig, git_yaml, git_args)
            twin_cfg = load_config(TrainConfig, plain.args[1], plain.args[2:])
        except Exception:  # noqa: BLE001 - a config the run itself will reject with its own message
            return None
        differ = diff_configs(to_dict(cfg), to_dict(twin_cfg))
        # keep_checkpoints: what the twin keeps for an earlier GIT run of this list, not how it trains
        if cfg.git_start is None or any(not k.startswith(("git.", "method", "keep_checkpoints")) for k in differ):
            return None
        return cfg.git_start

    by_name = {j.name: j for j in jobs}
    for job in jobs:
        if job.kind != "classifier" or len(job.args) < 2 or not job.args[1].endswith("_git.yaml"):
            continue
        m = os.path.basename(job.args[1])[:-len(".yaml")]
        twin_name = job.name.replace(f"__{m}", f"__{m[:-len('_git')]}")
        # X_git+arm forks from X+arm, or from X when the arm only changes GIT (filter, consistency)
        twin = by_name.get(twin_name) or by_name.get(twin_name.split("+")[0])
        if twin is None or twin.args[1] != job.args[1].replace("_git.yaml", ".yaml"):
            continue
        start = fork_epoch(job.args[1], job.args[2:], twin)
        if start is not None:
            job.fork = (twin.name, start)
            if f"keep_checkpoints=[{start}]" not in twin.args:  # several GIT arms may fork from one twin
                twin.args = twin.args + [f"keep_checkpoints=[{start}]"]
    # A plain run whose GIT preset exists but is not in this call still keeps the checkpoint a GIT
    # run would start from, so that GIT can be trained later (a separate call) without those epochs.
    for job in jobs:
        if job.kind != "classifier" or len(job.args) < 2 or job.args[1].endswith("_git.yaml") or any(
                a.startswith("keep_checkpoints=") for a in job.args):
            continue
        git_yaml = job.args[1][:-len(".yaml")] + "_git.yaml"
        if os.path.isfile(git_yaml):
            start = fork_epoch(git_yaml, job.args[2:] + ["git.generator=generator.pt"], job)
            if start is not None:
                job.args = job.args + [f"keep_checkpoints=[{start}]"]


#: Arms: a method preset plus one component, asked for as ``<preset>+<arm>`` (``ce_drs+randaugment``,
#: ``ce_drs_git+filter``); adding one is an entry here. ``args``: overrides of the classifier run;
#: ``git_only``: the arm changes only what GIT feeds the batch, so it needs a ``*_git`` preset and
#: its run forks from the preset's plain twin (without the arm). ``filter`` judges generated samples
#: with the plain twin's finished classifier (same data, no GIT; ``git.filter=top1``, the
#: threshold-free rule); ``consistency`` trains a second generator per instance with the
#: class-consistency term (``class_consistency_weight``, judged by the same plain twin) and feeds
#: GIT from it. mixup's alpha 1 is the usual choice of the long-tail literature's CIFAR recipes;
#: SAM's rho 0.05 is Foret et al.'s default (Rangwani et al.'s larger values belong to their
#: LDAM-DRW / CE+DRW schedules on CIFAR, see invtransfer.train.sam).
ARMS = {
    "randaugment": {"args": ["augment.policy=randaugment"]},
    "mixup": {"args": ["augment.mixup=1.0"]},
    "sam": {"args": ["optim.sam_rho=0.05"]},
    "filter": {"git_only": True, "args": ["git.filter=top1"]},
    "consistency": {"git_only": True, "args": []},
}
CONSISTENCY_WEIGHT = 1.0


def method_name(yaml: str, overrides: list[str]) -> str:
    """The label a run of this preset and these overrides reports (``method_label``)."""
    from invtransfer.config import load_config
    from invtransfer.train.classifier import TrainConfig
    from invtransfer.train.configs import method_label

    return method_label(load_config(TrainConfig, yaml, [o for o in overrides if not o.startswith("git.generator=")]
                                    + ["git.generator=generator.pt"]))


def select_policy(yaml: str, overrides: list[str]) -> str:
    """The ``select`` policy of a preset with these overrides (``val`` or ``last``)."""
    from invtransfer.config import load_config
    from invtransfer.train.classifier import TrainConfig

    return load_config(TrainConfig, yaml, overrides).select


def split_method(m: str) -> tuple[str, str | None]:
    """``ce_drs_git+filter`` -> (``ce_drs_git``, ``filter``); refuses an unknown arm or a GIT-only
    arm on a preset without GIT."""
    preset, _, arm = m.partition("+")
    if not arm:
        return preset, None
    if arm not in ARMS:
        raise SystemExit(f"method {m!r}: unknown arm {arm!r}; expected one of {', '.join(ARMS)} "
                         f"(written <preset>+<arm>, e.g. ce_drs+randaugment)")
    if ARMS[arm].get("git_only") and not preset.endswith("_git"):
        raise SystemExit(f"method {m!r}: the arm {arm!r} changes GIT's samples, so it needs a GIT preset "
                         f"(e.g. {preset}_git+{arm})")
    return preset, arm


def synthetic_jobs(base: str, transforms: list[str], instances: list[int], methods: list[str], out: str,
                   git_on_rot: bool, extra: list[str], gen_extra: list[str] = (),
                   gen_config: str | None = None, fork: bool = True, variant: str = "standard",
                   splice_rank: int = 0) -> list[Job]:
    cdir = CONFIG_DIRS[base]
    jobs = []
    # a variant's runs are named like its results.json's dataset label (LTDataset.label), so they
    # sit beside the standard protocol's runs in one folder without being mistaken for them
    variant_data = {"standard": [], "theta": ["data.variant=theta"],
                    "splice": ["data.variant=splice", f"data.splice_rank={splice_rank}"]}[variant]
    suffix = {"standard": "", "theta": "-theta", "splice": f"-splice{splice_rank}"}[variant]
    split = [split_method(m) for m in methods]
    for t in transforms:
        dataset = f"{base}-{t}-lt"
        for i in instances:
            data = [f"data.name={dataset}", f"data.instance={i}", *variant_data]
            gen_name = f"gen__{dataset}{suffix}__i{i}"
            with_gen = t != "rot" or git_on_rot
            if with_gen and any(p.endswith("_git") and a != "consistency" for p, a in split):
                jobs.append(Job("generator", gen_name, ["train-generator", gen_config or GENERATOR_CONFIGS[base], *data,
                                                        *gen_extra]))
            for m, (preset, arm) in zip(methods, split):
                git = preset.endswith("_git")
                if git and not with_gen:
                    continue
                name = f"{dataset}{suffix}__i{i}__{m}"
                plain = f"{dataset}{suffix}__i{i}__{preset[:-len('_git')]}"  # the twin a GIT-only arm needs
                arm_args = ARMS[arm]["args"] if arm and not ARMS[arm].get("git_only") else []
                args = ["train", f"{cdir}/{preset}.yaml", *data, *arm_args, *extra]  # the caller's overrides win
                needs = []
                if arm == "consistency":
                    cgen = f"{gen_name}__consistency"
                    if not any(j.name == cgen for j in jobs):
                        jobs.append(Job("generator", cgen, [
                            "train-generator", gen_config or GENERATOR_CONFIGS[base], *data, *gen_extra,
                            f"class_consistency_weight={CONSISTENCY_WEIGHT}", f"classifier={os.path.join(out, plain)}"],
                            needs=plain))
                    # the label says which generator fed GIT: results.json's config only names its folder
                    args += [f"git.generator={os.path.join(out, cgen)}",
                             f"method={method_name(args[1], args[2:])}+ConsistencyGenerator"]
                    needs.append(cgen)
                elif git:
                    args.append(f"git.generator={os.path.join(out, gen_name)}")
                    needs.append(gen_name)
                if arm == "filter":
                    args += [*ARMS[arm]["args"], f"git.filter_classifier={os.path.join(out, plain)}"]
                    needs.append(plain)
                inv = ["invariance", os.path.join(out, name), "--transform", t]
                # both selection policies' weights; invariance.json (the selected ones) last, as it marks done
                jobs.append(Job("classifier", name, args, after=[[*inv, "--weights", "other"], inv],
                                needs=None if not needs else needs[0] if len(needs) == 1 else needs))
    if fork:
        link_forks(jobs)
    return jobs


def cifar_jobs(dataset: str, methods: list[str], seeds: list[int], out: str, extra: list[str],
               gen_extra: list[str] = (), gen_config: str | None = None, fork: bool = True) -> list[Job]:
    cdir = CONFIG_DIRS[dataset]
    gen_name = f"gen__{dataset}"
    jobs = []
    if any(m.endswith("_git") for m in methods):
        jobs.append(Job("generator", gen_name, ["train-generator", gen_config or GENERATOR_CONFIGS[dataset],
                                                f"data.name={dataset}", *gen_extra]))
    gen_dir = os.path.join(out, gen_name)

    def ekld(run: str) -> list[str]:  # eKLD under the protocol's generator, the only nuisance model here
        return ["invariance", os.path.join(out, run), "--transform", f"generator:{gen_dir}", *GENERATOR_EKLD]

    for s in seeds:
        for m in methods:
            name, args = f"{dataset}__{m}__s{s}", ["train", f"{cdir}/{m}.yaml", f"seed={s}", *extra]
            if not m.endswith("_git"):
                jobs.append(Job("classifier", name, args))
                continue
            # both selection policies' weights; invariance.json (the selected ones) last, as it marks done
            jobs.append(Job("classifier", name, [*args, f"git.generator={gen_dir}"],
                            after=[[*ekld(name), "--weights", "other"], ekld(name)], needs=gen_name))
            plain = f"{dataset}__{m[:-len('_git')]}__s{s}"
            if m[:-len("_git")] in methods:  # the plain twin measured the same way, once both have finished
                jobs.append(Job("measure", f"{plain}__ekld", ekld(plain), needs=[gen_name, plain],
                                marker=os.path.join(plain, "invariance.json")))
                # and with the weights its select policy did not keep (the CLI skips it, writing nothing,
                # where both policies keep the last epoch; then this job runs again, at no cost, next time)
                other = "best_val" if select_policy(f"{cdir}/{m[:-len('_git')]}.yaml", args[2:]) == "last" else "last"
                jobs.append(Job("measure", f"{plain}__ekld_{other}", [*ekld(plain), "--weights", "other"],
                                needs=[gen_name, plain], marker=os.path.join(plain, f"invariance_{other}.json")))
    if fork:
        link_forks(jobs)
    return jobs


def restore_parked(jobs: list[Job], out: str, dest: str = parking.PARKED) -> list[str]:
    """Bring back each run whose folder under ``out`` lacks what its parked copy holds."""
    return [j.name for j in jobs if j.kind != "measure" and parking.restore(
        j.name, j.run_dir(out), "checkpoint.pt" if j.kind == "classifier" else "state.pt", dest)]


def unpark_finished(jobs: list[Job], out: str, dest: str = parking.PARKED) -> list[str]:
    """Remove the parked copy of each run that has finished when every job of this list that
    needs it (its generator, the checkpoint it forks from, a measurement) has finished too. A run
    whose parked copy holds a fork checkpoint stays parked until a job here has started from it
    and finished (a GIT twin outside this call may still need it)."""
    removed = []
    for job in jobs:
        if job.kind == "measure" or not os.path.isdir(os.path.join(dest, job.name)) or not job.done(out):
            continue
        dependants = [j for j in jobs if job.name in j.needed or (j.fork and j.fork[0] == job.name)]
        forks = [j for j in dependants if j.fork and j.fork[0] == job.name]
        holds_fork = any(f.startswith("checkpoint_e") for f in os.listdir(os.path.join(dest, job.name)))
        if all(d.done(out) for d in dependants) and (forks or not holds_fork) and parking.unpark(job.name, dest):
            removed.append(job.name)
    return removed


def run_jobs(jobs: list[Job], out: str, exe: list[str], dry_run: bool) -> int:
    failures = 0
    for job in jobs:
        if job.done(out):
            print(f"[skip] {job.name} (finished)", flush=True)
            continue
        if dry_run:
            print("[run] " + " ".join(job.command(out, exe)), flush=True)
            continue
        if job.run(out, exe) != 0:
            print(f"[fail] {job.name}; re-run this driver to resume it", flush=True)
            failures += 1
    if not dry_run:
        write_report(jobs, out, exe)
    return 1 if failures else 0


def write_report(jobs: list[Job], out: str, exe: list[str]) -> None:
    if any(j.trained(out) and j.kind == "classifier" for j in jobs):
        subprocess.run(exe + ["report", out, "--out", os.path.join(out, "report")])


class JobRunner:
    """One job as a picklable callable for submitit (runs in the job's process, local or on a node).

    The command is decided when the job starts (resume if a checkpoint exists), so a requeued job
    resumes. On preemption or timeout submitit calls :meth:`checkpoint`: the run gets SIGTERM,
    saves its checkpoint and exits, and the job is requeued.
    """

    def __init__(self, job: Job, out: str, exe: list[str]):
        self.job, self.out, self.exe = job, out, exe
        self._proc: subprocess.Popen | None = None

    def __call__(self) -> str:
        if self.job.done(self.out):
            return "finished before"

        def popen(cmd):
            self._proc = subprocess.Popen(cmd)
            return self._proc

        rc = self.job.run(self.out, self.exe, popen)
        self._proc = None
        if rc != 0:
            raise RuntimeError(f"{self.job.name}: {' '.join(self.job.command(self.out, self.exe))} exited with "
                               f"status {rc}")
        return "finished"

    def checkpoint(self, *args, **kwargs):  # noqa: ARG002 - submitit's requeue hook
        import submitit

        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the run saves a checkpoint and exits
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
        return submitit.helpers.DelayedSubmission(JobRunner(self.job, self.out, self.exe))

    def __getstate__(self) -> dict:
        return {"job": self.job, "out": self.out, "exe": self.exe, "_proc": None}


def dispatch(jobs: list[Job], out: str, exe: list[str], *, executor: str = "auto", parallel: int = 1,
             timeout_min: int = 3 * 24 * 60, gpus_per_job: int | None = None, cpus_per_job: int = 4,
             slurm_partition: str | None = None, poll_s: float = 2.0, report: bool = True) -> int:
    """Run the unfinished jobs through submitit, ``parallel`` at a time, each as soon as what it
    needs is there (its generator; the checkpoint it starts from).

    Returns 0 when every job has finished (now or before), else 1.
    """
    import cloudpickle
    import submitit

    if __name__ != "__main__":  # imported (e.g. by tests): ship this module's code with the jobs
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ex = submitit.AutoExecutor(folder=os.path.join(out, "submitit"), cluster=None if executor == "auto" else executor)
    n_gpus = 0
    if gpus_per_job is None:
        import torch

        n_gpus = torch.cuda.device_count()
        gpus_per_job = 1 if n_gpus else 0
    params = {"timeout_min": timeout_min, "gpus_per_node": gpus_per_job, "cpus_per_task": cpus_per_job,
              "name": "invtransfer"}
    if ex.cluster == "slurm":
        params["slurm_array_parallelism"] = parallel
        if slurm_partition:
            params["slurm_partition"] = slurm_partition
    ex.update_parameters(**params)
    print(f"[dispatch] submitit {ex.cluster} executor, {parallel} job(s) at a time, logs in "
          f"{os.path.join(out, 'submitit')}", flush=True)
    by_name = {j.name: j for j in jobs}
    pending, running, failed = [], [], set()
    for job in jobs:
        if job.done(out):
            print(f"[skip] {job.name} (finished)", flush=True)
        else:
            pending.append(job)
    next_gpu = 0
    while pending or running:
        active = {j.name for j in pending} | {j.name for j, _ in running}
        for job in pending:
            lost = [n for n in job.needed if not (n in by_name and by_name[n].trained(out))
                    and (n in failed or n not in active)]
            if lost:
                print(f"[fail] {job.name}: it needs {', '.join(lost)}, which did not finish", flush=True)
                failed.add(job.name)
        pending = [j for j in pending if j.name not in failed]
        ready = [j for j in pending if j.ready(out, by_name, active)]
        if ex.cluster == "slurm" and ready:  # one job array per batch of ready jobs
            with ex.batch():
                subs = [(job, ex.submit(JobRunner(job, out, exe))) for job in ready]
            for job, sub in subs:
                print(f"[submit] {job.name} (slurm job {sub.job_id})", flush=True)
            running += subs
            pending = [j for j in pending if j not in ready]
        elif ex.cluster != "slurm":
            for job in ready[:max(0, parallel - len(running))]:
                if n_gpus > 1:  # local: hand the GPUs out round robin
                    ex.update_parameters(local_visible_gpus=(next_gpu % n_gpus,))
                    next_gpu += 1
                sub = ex.submit(JobRunner(job, out, exe))
                print(f"[submit] {job.name} (local job {sub.job_id})", flush=True)
                running.append((job, sub))
                pending.remove(job)
        if not running:
            if pending and not ready:  # cannot happen with a consistent job list; never spin
                for job in pending:
                    print(f"[fail] {job.name}: waits for something that no job makes", flush=True)
                    failed.add(job.name)
                pending = []
            continue
        time.sleep(poll_s)
        still = []
        for job, sub in running:
            if not sub.done():
                still.append((job, sub))
                continue
            err = sub.exception()
            if err is None and job.done(out):
                print(f"[done] {job.name}", flush=True)
            else:
                print(f"[fail] {job.name}: {str(err).strip().splitlines()[-1] if err else 'no result files'}; "
                      f"log {sub.paths.stdout}, {sub.paths.stderr}; re-run this driver to resume it", flush=True)
                failed.add(job.name)
        running = still
    if report:
        write_report(jobs, out, exe)
    return 1 if failed else 0


ARCHIVED = {"results.json": "classifier", "invariance.json": None, "invariance_best_val.json": None,
            "invariance_last.json": None, "summary.json": "generator", "config.yaml": None, "metrics.jsonl": None}


def archive(out: str, dest: str) -> list[str]:
    """Copy the small outputs of every finished run under ``out`` (results, invariance, generator
    summary, resolved config, per-epoch log; no checkpoints, weights or images) to ``dest/<run>/``,
    for committing: ``invtransfer report dest`` then rebuilds the tables without the run folders.
    A run counts as finished when its ``results.json`` (classifier) or ``summary.json``
    (generator) exists; an unfinished run is left out. Returns the runs copied."""
    from invtransfer.data.datasets import atomic_write_bytes

    done = []
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        src = os.path.join(out, name)
        if not any(kind and os.path.isfile(os.path.join(src, f)) for f, kind in ARCHIVED.items()):
            continue
        os.makedirs(os.path.join(dest, name), exist_ok=True)
        for f in ARCHIVED:
            if os.path.isfile(os.path.join(src, f)):
                with open(os.path.join(src, f), "rb") as fh:
                    atomic_write_bytes(os.path.join(dest, name, f), fh.read())
        done.append(name)
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = os.path.join(parking.runs_root(), "protocols")
    sub = p.add_subparsers(dest="protocol", required=True)
    s = sub.add_parser("synthetic", help="K49-style synthetic nuisance protocol (Fashion-MNIST or K49)")
    s.add_argument("--base", choices=("fmnist", "k49"), default="fmnist")
    s.add_argument("--transforms", nargs="+", choices=("rot", "bg", "dil"), default=["bg", "dil"])
    s.add_argument("--instances", nargs="+", type=int, default=[0, 1, 2])
    s.add_argument("--methods", nargs="+", default=["ce", "ce_drs", "ce_drs_git", "oracle"])
    s.add_argument("--git-on-rot", action="store_true", help="also train a generator and GIT on ROT")
    s.add_argument("--variant", choices=("standard", "theta", "splice"), default="standard",
                   help="theta: 5 base images per class, Zipf number of transformed copies; splice: only the "
                        "class of rank --splice-rank carries the nuisance (SPEC's controls; runs named <set>-theta, "
                        "<set>-spliceR)")
    s.add_argument("--splice-rank", type=int, default=0, help="rank (0 = largest) transformed in --variant splice")
    c = sub.add_parser("cifar", help="the CIFAR-LT table")
    c.add_argument("--dataset", choices=("cifar10-lt", "cifar100-lt", "gtsrb-lt"), default="cifar10-lt")
    c.add_argument("--methods", nargs="+", default=["ce", "ce_drs", "ce_drs_git", "ldam_drw", "ldam_drw_git",
                                                    "balanced_softmax_drs_git"])
    c.add_argument("--seeds", nargs="+", type=int, default=[0])
    for q in (s, c):
        q.add_argument("--out", default=default_out, help="run folder (default: $INVTRANSFER_RUNS/protocols)")
        q.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="extra overrides of every classifier run (e.g. optim.epochs=10)")
        q.add_argument("--generator-config", default=None, metavar="YAML",
                       help="generator preset instead of the paper architecture (e.g. the CPU-sized "
                            "configs/generator/fmnist_munit_small.yaml or cifar10_munit_small.yaml)")
        q.add_argument("--set-generator", nargs="*", default=[], metavar="KEY=VALUE",
                       help="extra overrides of every generator run (e.g. iterations=2000)")
        q.add_argument("--dry-run", action="store_true")
        q.add_argument("--no-fork", action="store_true",
                       help="train GIT runs from scratch instead of from their plain twin's checkpoint at GIT's "
                            "first epoch (identical result; see link_forks)")
        q.add_argument("--executor", choices=("auto", "local", "slurm", "sequential"), default="auto",
                       help="submitit executor (auto: slurm if available, else local); sequential: one after "
                            "another in this process")
        q.add_argument("--jobs", type=int, default=1, help="runs at a time (SLURM: array parallelism)")
        q.add_argument("--timeout-min", type=int, default=3 * 24 * 60, help="time limit of one job, minutes")
        q.add_argument("--gpus-per-job", type=int, default=None, help="default: 1 if this machine has a GPU")
        q.add_argument("--cpus-per-job", type=int, default=4)
        q.add_argument("--slurm-partition", default=None)
    r = sub.add_parser("archive", help="copy finished runs' small outputs (JSON, config, log) for committing")
    r.add_argument("--out", default=default_out, help="the drivers' run folder")
    r.add_argument("--to", default="results/runs/protocols", help="destination (committed)")
    k = sub.add_parser("park", help="copy what continues each unfinished run into results/parked/ (for committing)")
    k.add_argument("--out", default=default_out, help="the drivers' run folder")
    k.add_argument("--to", default=parking.PARKED, help="destination (committed)")
    k.add_argument("--min-minutes", type=float, default=30.0,
                   help="park only runs whose redo would cost more than this many (one-thread) minutes")
    k.add_argument("--generator-dtype", choices=("auto", "float16", "float32"), default="auto",
                   help="auto: float16 when that moves decodes by at most a tenth of the sampling noise")
    a = p.parse_args(argv)
    if a.protocol == "archive":
        names = archive(a.out, a.to)
        print(f"archived {len(names)} finished runs from {a.out} to {a.to}")
        return 0
    if a.protocol == "park":
        if a.min_minutes < 0:
            p.error(f"--min-minutes must be >= 0, got {a.min_minutes}")
        names = parking.park(a.out, a.to, min_minutes=a.min_minutes, generator_dtype=a.generator_dtype)
        print(f"parked {len(names)} runs from {a.out} in {a.to}; commit that folder")
        return 0
    if a.protocol == "synthetic":
        jobs = synthetic_jobs(a.base, a.transforms, a.instances, a.methods, a.out, a.git_on_rot, a.set,
                              a.set_generator, a.generator_config, fork=not a.no_fork, variant=a.variant,
                              splice_rank=a.splice_rank)
    else:
        jobs = cifar_jobs(a.dataset, a.methods, a.seeds, a.out, a.set, a.set_generator, a.generator_config,
                          fork=not a.no_fork)
    exe = [sys.executable, "-m", "invtransfer"]
    if a.dry_run:
        return run_jobs(jobs, a.out, exe, a.dry_run)
    restore_parked(jobs, a.out)
    if a.executor == "sequential":
        rc = run_jobs(jobs, a.out, exe, a.dry_run)
    else:
        try:
            import submitit  # noqa: F401
        except ImportError:
            print("[dispatch] submitit is not installed (pip install 'invtransfer[sweep]'), so the jobs run one after "
                  "another in this process; --jobs and --executor are ignored.", flush=True)
            rc = run_jobs(jobs, a.out, exe, a.dry_run)
        else:
            rc = dispatch(jobs, a.out, exe, executor=a.executor, parallel=max(1, a.jobs), timeout_min=a.timeout_min,
                          gpus_per_job=a.gpus_per_job, cpus_per_job=a.cpus_per_job, slurm_partition=a.slurm_partition)
    unpark_finished(jobs, a.out)
    return rc


def cli(argv: list[str] | None = None) -> int:
    """:func:`main` with a bad input's or a full folder's error as one message, not a traceback."""
    from invtransfer.errors import InvTransferError

    try:
        return main(argv)
    except InvTransferError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(cli())
