"""The experiment driver dispatching a tiny sweep through submitit's local executor."""

import json
import os
import sys

import numpy as np
import pytest

from conftest import make_images, tiny_data_overrides
from invtransfer.config import dump_yaml, from_dict, to_dict
from invtransfer.train import classifier, generator

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import protocols  # noqa: E402

pytest.importorskip("submitit")


def write_configs(tmp_path):
    x, y = make_images(30, size=16, seed=1)
    xt, yt = make_images(5, size=16, seed=2)
    npz = tmp_path / "tiny16.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=xt, y_test=yt)
    data = tiny_data_overrides(npz, counts=[24, 12, 6, 3])
    cls = {"data": data, "model": "resnet20", "augment": "none", "rule": "drs", "eval_batch_size": 64,
           "optim": {"epochs": 2, "batch_size": 16, "warmup_epochs": 0, "decay1_epoch": 0, "decay2_epoch": 1}}
    gen = {"data": data, "arch": {"width": 8, "n_res": 1, "mlp_dim": 16, "disc_width": 8}, "iterations": 2,
           "batch_size": 4, "sample_every": 100}
    (tmp_path / "cls.yaml").write_text(dump_yaml(to_dict(from_dict(classifier.TrainConfig, cls))))
    (tmp_path / "gen.yaml").write_text(dump_yaml(to_dict(from_dict(generator.GeneratorTrainConfig, gen))))
    return str(tmp_path / "cls.yaml"), str(tmp_path / "gen.yaml")


def test_local_executor_runs_a_sweep_then_skips_it(tmp_path, capsys):
    cls, gen = write_configs(tmp_path)
    out = str(tmp_path / "sweep")
    jobs = [protocols.Job("generator", "gen", ["train-generator", gen]),
            protocols.Job("classifier", "plain", ["train", cls]),
            protocols.Job("classifier", "git", ["train", cls, f"git.generator={os.path.join(out, 'gen')}"],
                          needs="gen")]
    exe = [sys.executable, "-m", "invtransfer"]
    kw = {"executor": "local", "parallel": 2, "gpus_per_job": 0, "timeout_min": 10, "poll_s": 0.5, "report": False}
    assert protocols.dispatch(jobs, out, exe, **kw) == 0
    log = capsys.readouterr().out
    assert all(os.path.isfile(os.path.join(out, name, f)) for name, f in
               (("gen", "generator.pt"), ("plain", "results.json"), ("git", "results.json")))
    # the GIT run waited for its generator and used it
    assert log.index("[done] gen") < log.index("[submit] git")
    git = json.loads(open(os.path.join(out, "git", "results.json")).read())
    assert git["method"] == "CE+DRS+GIT"
    assert os.path.isdir(os.path.join(out, "submitit"))  # the jobs' logs
    mtimes = {n: os.path.getmtime(os.path.join(out, n)) for n in ("gen", "plain", "git")}

    # a second invocation finds every result and submits nothing
    assert protocols.dispatch(jobs, out, exe, **kw) == 0
    log = capsys.readouterr().out
    assert log.count("[skip]") == 3 and "[submit]" not in log
    assert mtimes == {n: os.path.getmtime(os.path.join(out, n)) for n in ("gen", "plain", "git")}


def test_git_run_starts_from_its_plain_twins_checkpoint(tmp_path, capsys):
    cls, gen = write_configs(tmp_path)
    (tmp_path / "cls_git.yaml").write_text("base: cls.yaml\ngit: {gen_frac: 0.5}\n")
    out = str(tmp_path / "sweep")
    git_args = ["train", str(tmp_path / "cls_git.yaml"), f"git.generator={os.path.join(out, 'gen')}"]
    measure = ["invariance", os.path.join(out, "d__cls"), "--transform", f"generator:{os.path.join(out, 'gen')}",
               "--images-per-class", "2", "--draws", "2"]
    jobs = [protocols.Job("measure", "d__cls__ekld", measure, needs=["gen", "d__cls"],  # first: must wait for both
                          marker=os.path.join("d__cls", "invariance.json")),
            protocols.Job("generator", "gen", ["train-generator", gen]),
            protocols.Job("classifier", "d__cls_git", git_args, needs="gen"),  # listed first: must still wait
            protocols.Job("classifier", "d__cls", ["train", cls])]
    protocols.link_forks(jobs)
    assert jobs[2].fork == ("d__cls", 1)  # E1 = 0, GIT from epoch 1
    assert jobs[3].args[-1] == "keep_checkpoints=[1]"
    kw = {"executor": "local", "parallel": 3, "gpus_per_job": 0, "timeout_min": 10, "poll_s": 0.5, "report": False}
    assert protocols.dispatch(jobs, out, [sys.executable, "-m", "invtransfer"], **kw) == 0
    log = capsys.readouterr().out
    assert log.index("[submit] d__cls ") < log.index("[submit] d__cls_git")
    # the plain run's eKLD under the generator, measured once the generator and the run had finished
    assert log.index("[done] gen") < log.index("[submit] d__cls__ekld")
    assert log.index("[done] d__cls\n") < log.index("[submit] d__cls__ekld")
    inv = json.loads(open(os.path.join(out, "d__cls", "invariance.json")).read())
    assert "generator" in json.dumps(inv)
    res = json.loads(open(os.path.join(out, "d__cls_git", "results.json")).read())
    assert res["method"] == "CE+DRS+GIT"
    assert res["started_from"]["epoch"] == 1
    assert res["started_from"]["checkpoint"] == os.path.abspath(os.path.join(out, "d__cls", "checkpoint_e1.pt"))
    # a pair whose configs differ outside git.* is left alone
    other = [protocols.Job("classifier", "d__cls_git", git_args + ["optim.lr=0.05"], needs="gen"),
             protocols.Job("classifier", "d__cls", ["train", cls])]
    protocols.link_forks(other)
    assert other[0].fork is None
    # ... though the plain run still keeps the checkpoint its own GIT preset (cls_git.yaml) would start from
    assert other[1].args == ["train", cls, "keep_checkpoints=[1]"]


def test_failed_generator_blocks_its_git_runs(tmp_path, capsys):
    cls, _ = write_configs(tmp_path)
    out = str(tmp_path / "sweep")
    jobs = [protocols.Job("generator", "gen", ["train-generator", "no_such_config.yaml"]),
            protocols.Job("classifier", "git", ["train", cls, f"git.generator={os.path.join(out, 'gen')}"],
                          needs="gen")]
    rc = protocols.dispatch(jobs, out, [sys.executable, "-m", "invtransfer"], executor="local", parallel=2,
                            gpus_per_job=0, timeout_min=5, poll_s=0.5, report=False)
    log = capsys.readouterr().out
    assert rc == 1 and "[fail] gen" in log and "[fail] git: it needs gen, which did not finish" in log
    assert not os.path.exists(os.path.join(out, "git"))


def test_without_submitit_the_driver_runs_sequentially(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    calls = []
    monkeypatch.setattr(protocols, "run_jobs", lambda jobs, out, exe, dry: calls.append(len(jobs)) or 0)
    assert protocols.main(["cifar", "--methods", "ce", "ce_drs", "--out", str(tmp_path), "--jobs", "4"]) == 0
    assert calls == [2] and "submitit is not installed" in capsys.readouterr().out


def test_synthetic_protocol_job_list():
    jobs = protocols.synthetic_jobs("fmnist", ["rot", "dil"], [0, 2], ["ce_drs", "ce_drs_git"], "out", False, [],
                                    gen_config="configs/generator/fmnist_munit_small.yaml")
    names = [j.name for j in jobs]
    # ROT has no generator (without --git-on-rot), so no GIT run there; DIL: one generator per instance
    assert names == ["fmnist-rot-lt__i0__ce_drs", "fmnist-rot-lt__i2__ce_drs",
                     "gen__fmnist-dil-lt__i0", "fmnist-dil-lt__i0__ce_drs", "fmnist-dil-lt__i0__ce_drs_git",
                     "gen__fmnist-dil-lt__i2", "fmnist-dil-lt__i2__ce_drs", "fmnist-dil-lt__i2__ce_drs_git"]
    gen = jobs[5]
    assert gen.args[:2] == ["train-generator", "configs/generator/fmnist_munit_small.yaml"]
    assert "data.instance=2" in gen.args
    git = jobs[7]
    assert git.needs == "gen__fmnist-dil-lt__i2" and f"git.generator={os.path.join('out', gen.name)}" in git.args
    inv = ["invariance", os.path.join("out", git.name), "--transform", "dil"]
    assert git.after == [[*inv, "--weights", "other"], inv]  # both selections; invariance.json, the marker, last
    assert git.fork == ("fmnist-dil-lt__i2__ce_drs", 31)  # the presets' E1 = 30
    assert jobs[6].args[-1] == "keep_checkpoints=[31]"
    default = protocols.synthetic_jobs("fmnist", ["bg"], [0], ["ce_drs_git"], "out", False, [])
    assert default[0].args[1] == protocols.GENERATOR_CONFIGS["fmnist"]



def test_synthetic_controls_are_named_apart_from_the_protocol_runs():
    theta = protocols.synthetic_jobs("fmnist", ["dil"], [1], ["ce_drs", "ce_rw"], "out", False, [], variant="theta")
    assert [j.name for j in theta] == ["fmnist-dil-lt-theta__i1__ce_drs", "fmnist-dil-lt-theta__i1__ce_rw"]
    assert "data.variant=theta" in theta[0].args and "data.instance=1" in theta[0].args
    assert theta[1].args[1] == "configs/fmnist_lt/ce_rw.yaml"
    assert os.path.isfile(os.path.join(os.path.dirname(__file__), "..", theta[1].args[1]))
    splice = protocols.synthetic_jobs("fmnist", ["bg"], [0], ["ce_drs_git"], "out", False, [], variant="splice",
                                      splice_rank=9)
    assert [j.name for j in splice] == ["gen__fmnist-bg-lt-splice9__i0", "fmnist-bg-lt-splice9__i0__ce_drs_git"]
    assert {"data.variant=splice", "data.splice_rank=9"} <= set(splice[0].args) & set(splice[1].args)


def test_arms_add_one_component_and_fork_from_the_right_twin():
    methods = ["ce_drs", "ce_drs_git", "ce_drs_git+filter", "ce_drs_git+consistency", "ce_drs+randaugment",
               "ce_drs_git+randaugment"]
    jobs = {j.name: j for j in protocols.synthetic_jobs("fmnist", ["dil"], [3], methods, "out", False, ["seed=1"])}
    run = lambda m: jobs[f"fmnist-dil-lt__i3__{m}"]  # noqa: E731
    plain = "fmnist-dil-lt__i3__ce_drs"
    # GIT-only arms fork from the plain run and, with the plain run's final weights, judge or train
    filt = run("ce_drs_git+filter")
    assert filt.fork == (plain, 31) and set(filt.needs) == {"gen__fmnist-dil-lt__i3", plain}
    assert {"git.filter=top1", f"git.filter_classifier={os.path.join('out', plain)}"} <= set(filt.args)
    cgen = jobs["gen__fmnist-dil-lt__i3__consistency"]
    assert cgen.needs == plain and f"classifier={os.path.join('out', plain)}" in cgen.args
    assert "class_consistency_weight=1.0" in cgen.args
    cons = run("ce_drs_git+consistency")
    assert cons.fork == (plain, 31) and cons.needs == cgen.name
    assert "method=CE+DRS+GIT+ConsistencyGenerator" in cons.args
    # an arm that changes training is in both runs of its pair; the caller's overrides come last
    aug, aug_git = run("ce_drs+randaugment"), run("ce_drs_git+randaugment")
    assert aug_git.fork == (aug.name, 31) and "augment.policy=randaugment" in aug.args
    assert aug.args.index("augment.policy=randaugment") < aug.args.index("seed=1")
    assert run("ce_drs").args.count("keep_checkpoints=[31]") == 1  # three GIT runs fork from it
    with pytest.raises(SystemExit, match="unknown arm 'dropout'"):
        protocols.synthetic_jobs("fmnist", ["dil"], [0], ["ce_drs+dropout"], "out", False, [])
    with pytest.raises(SystemExit, match="needs a GIT preset"):
        protocols.synthetic_jobs("fmnist", ["dil"], [0], ["ce_drs+filter"], "out", False, [])


def test_cifar_protocol_job_list():
    jobs = protocols.cifar_jobs("gtsrb-lt", ["ce_drs", "ce_drs_git"], [0], "out", [])
    assert [j.name for j in jobs] == ["gen__gtsrb-lt", "gtsrb-lt__ce_drs__s0", "gtsrb-lt__ce_drs_git__s0",
                                      "gtsrb-lt__ce_drs__s0__ekld", "gtsrb-lt__ce_drs__s0__ekld_best_val"]
    gen, plain, git, measure, measure_other = jobs
    assert git.fork == (plain.name, 161) and "keep_checkpoints=[161]" in plain.args
    inv = ["invariance", os.path.join("out", git.name), "--transform", "generator:out/gen__gtsrb-lt",
           *protocols.GENERATOR_EKLD]
    assert git.after == [[*inv, "--weights", "other"], inv]  # both selections; invariance.json last
    # GTSRB-LT's presets select the last epoch: the other policy's weights are the best validation epoch's
    assert measure_other.args == [*measure.args, "--weights", "other"] and measure_other.needed == measure.needed
    assert measure_other.marker == os.path.join(plain.name, "invariance_best_val.json")
    assert protocols.cifar_jobs("cifar10-lt", ["ce_drs", "ce_drs_git"], [0], "out", [])[-1].name.endswith("_ekld_last")
    # the plain run is measured under the same generator, with the same settings, once both finished
    assert measure.kind == "measure" and measure.needed == [gen.name, plain.name]
    assert measure.args == ["invariance", os.path.join("out", plain.name), "--transform",
                            "generator:out/gen__gtsrb-lt", *protocols.GENERATOR_EKLD]
    assert not measure.done("out") and measure.command("out", ["x"]) == ["x", *measure.args]
    # the plain run alone (GIT trained later, in another call) still keeps GIT's starting checkpoint
    alone = protocols.cifar_jobs("gtsrb-lt", ["ce_drs"], [0], "out", [])
    assert [j.name for j in alone] == ["gtsrb-lt__ce_drs__s0"] and alone[0].args == plain.args
    # a method without a GIT preset keeps nothing extra
    ce = protocols.cifar_jobs("cifar10-lt", ["ce"], [0], "out", [])
    assert not any(a.startswith("keep_checkpoints") for a in ce[0].args)


def test_reproduction_script_lists_the_issues_runs_in_priority_order(tmp_path):
    import subprocess

    root = os.path.join(os.path.dirname(__file__), "..")
    env = dict(os.environ, DRY_RUN="1", OUT=str(tmp_path), PYTHON=sys.executable, CIFAR_GEN_ITERATIONS="3000",
               GEN_CHECKPOINT_EVERY="40")
    out = subprocess.run(["bash", os.path.join(root, "experiments", "reproduce_paper.sh")], env=env, cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    runs = [ln.split(" name=")[1].split()[0] for ln in out.stdout.splitlines()
            if ln.startswith("[run]") and " name=" in ln]
    for t in ("dil", "bg"):
        for i in range(3):
            assert {f"gen__fmnist-{t}-lt__i{i}", f"fmnist-{t}-lt__i{i}__ce_drs", f"fmnist-{t}-lt__i{i}__ce_drs_git",
                    f"fmnist-{t}-lt__i{i}__oracle"} <= set(runs)
    assert {f"fmnist-rot-lt__i{i}__{m}" for i in range(3) for m in ("ce", "ce_drs")} <= set(runs)
    assert "fmnist-rot-lt__i0__ce_drs_git" in runs and "fmnist-rot-lt__i1__ce_drs_git" not in runs
    assert runs.index("fmnist-dil-lt__i0__ce_drs") < runs.index("cifar10-lt__ce_drs__s0") < runs.index(
        "gtsrb-lt__ce_drs__s0")
    lines = {}
    for ln in out.stdout.splitlines():
        if ln.startswith("[run]") and " name=" in ln:  # a real run skips the later listing of a finished run
            lines.setdefault(ln.split(" name=")[1].split()[0], ln)
    assert "keep_checkpoints=[161]" in lines["cifar10-lt__ce_drs__s0"]  # the CIFAR schedule's E1 = 160
    assert "keep_checkpoints=[31]" in lines["fmnist-rot-lt__i0__ce_drs"]  # first listed with its GIT twin
    measures = [ln for ln in out.stdout.splitlines() if ln.startswith("[run]") and " invariance " in ln]
    assert [ln.split(" invariance ")[1].split()[0] for ln in measures] == [  # selected weights, then the others
        os.path.join(str(tmp_path), f"{ds}-lt__ce_drs__s0") for ds in ("cifar10", "cifar10", "gtsrb", "gtsrb")]
    assert [ln.endswith("--weights other") for ln in measures] == [False, True, False, True]
    gtsrb_gen = lines["gen__gtsrb-lt"]
    assert "configs/generator/gtsrb_munit.yaml" in gtsrb_gen and "iterations=3000" in gtsrb_gen
    assert "checkpoint_every=40" in gtsrb_gen and "checkpoint_every=40" in lines["gen__cifar10-lt"]
    assert "checkpoint_every" not in lines["gen__fmnist-dil-lt__i0"]  # the CIFAR-sized generators only


def test_archive_copies_finished_runs_small_outputs_only(tmp_path):
    from test_report_demo import fake_run

    out = tmp_path / "runs"
    fake_run(out / "a__ce", "CE", 0, 30.0)
    (out / "a__ce" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (out / "a__ce" / "checkpoint.pt").write_bytes(b"big")
    (out / "gen").mkdir()
    (out / "gen" / "summary.json").write_text('{"iterations": 2}')
    (out / "gen" / "generator.pt").write_bytes(b"big")
    (out / "running").mkdir()  # no results.json yet: left out
    (out / "running" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    dest = tmp_path / "results" / "runs"
    assert protocols.main(["archive", "--out", str(out), "--to", str(dest)]) == 0
    assert sorted(os.listdir(dest)) == ["a__ce", "gen"]
    assert sorted(os.listdir(dest / "a__ce")) == ["metrics.jsonl", "results.json"]
    assert os.listdir(dest / "gen") == ["summary.json"]
    assert (dest / "a__ce" / "results.json").read_bytes() == (out / "a__ce" / "results.json").read_bytes()
    # the archive alone rebuilds the report's tables
    from invtransfer.report import find_results, summary_rows
    rows = summary_rows(find_results([str(dest)]))
    assert [(r["method"], r["test_error"][0]) for r in rows] == [("CE", 30.0)]


def test_an_interrupted_measurement_is_run_again_without_retraining(tmp_path, capsys):
    """A classifier whose training finished but whose `after` measurement (eKLD) was cut off must
    not count as finished: the next invocation runs the measurement only, then skips the job."""
    out, calls = tmp_path / "out", tmp_path / "calls.txt"
    fake = tmp_path / "fake_invtransfer.py"  # records each command; `invariance RUN` writes RUN/invariance.json
    fake.write_text("import os, sys\n"
                    f"open({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                    "if sys.argv[1] == 'invariance':\n"
                    "    open(os.path.join(sys.argv[2], 'invariance.json'), 'w').write('{}')\n")
    exe = [sys.executable, str(fake)]
    jobs = protocols.cifar_jobs("gtsrb-lt", ["ce_drs", "ce_drs_git"], [0], str(out), [])
    jobs.pop()  # the plain run's eKLD with its other weights: a job like `measure`, not needed here
    gen, plain, git, measure = jobs
    for job in (gen, plain, git):  # all three trained; the GIT run's eKLD was interrupted
        os.makedirs(job.run_dir(str(out)))
        open(os.path.join(job.run_dir(str(out)), "generator.pt" if job is gen else "results.json"), "w").close()
    open(os.path.join(plain.run_dir(str(out)), "invariance.json"), "w").close()  # the plain twin's was measured
    assert git.trained(str(out)) and not git.done(str(out)) and measure.done(str(out))
    assert git.ready(str(out), {j.name: j for j in jobs}, set())

    assert protocols.run_jobs(jobs, str(out), exe, False) == 0
    lines = calls.read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["invariance", "invariance", "report"]  # no training command
    assert lines[0].endswith("--weights other") and not lines[1].endswith("--weights other")  # both selections
    assert lines[0].split()[1] == lines[1].split()[1] == git.run_dir(str(out)) and git.done(str(out))
    log = capsys.readouterr().out
    assert log.count("[skip]") == 3 and "[run]" not in log

    # the submitit job body behaves the same: measured now, so nothing to do
    calls.unlink()
    os.remove(os.path.join(git.run_dir(str(out)), "invariance.json"))
    assert protocols.JobRunner(git, str(out), exe)() == "finished"
    assert [ln.split()[0] for ln in calls.read_text().splitlines()] == ["invariance", "invariance"]
    assert protocols.JobRunner(git, str(out), exe)() == "finished before"
    assert protocols.run_jobs(jobs, str(out), exe, False) == 0 and "[skip]" in capsys.readouterr().out


def test_a_run_with_a_checkpoint_is_resumed_not_overwritten(tmp_path):
    out = str(tmp_path)
    cls = protocols.Job("classifier", "c", ["train", "c.yaml"], fork=("plain", 3))
    gen = protocols.Job("generator", "g", ["train-generator", "g.yaml"])
    os.makedirs(os.path.join(out, "plain"))
    open(os.path.join(out, "plain", "checkpoint_e3.pt"), "w").close()  # the fork point exists
    for job in (cls, gen):
        os.makedirs(job.run_dir(out))
    # nothing of their own yet: a fresh start (the classifier from its fork point)
    assert cls.command(out, ["x"])[-2:] == ["overwrite=true", f"init_from={cls.fork_checkpoint(out)}"]
    assert gen.command(out, ["x"])[-1] == "overwrite=true"
    # the other kind's checkpoint file does not count
    open(os.path.join(cls.run_dir(out), "state.pt"), "w").close()
    open(os.path.join(gen.run_dir(out), "checkpoint.pt"), "w").close()
    assert "overwrite=true" in cls.command(out, ["x"]) and "overwrite=true" in gen.command(out, ["x"])
    # their own checkpoint: resumed, never overwritten, and no longer started from the fork point
    open(os.path.join(cls.run_dir(out), "checkpoint.pt"), "w").close()
    open(os.path.join(gen.run_dir(out), "state.pt"), "w").close()
    for job in (cls, gen):
        cmd = job.command(out, ["x"])
        assert cmd == ["x", *job.args, f"out_dir={out}", f"name={job.name}", "quiet=true", "resume=true"], cmd


def test_parallel_jobs_run_at_the_same_time_and_resume_their_checkpoints(tmp_path, capsys):
    """Two jobs with --jobs 2: both are submitted before either finishes and their processes
    overlap (each waits, up to 60 s, until the other has started); each resumes its checkpoint."""
    out = tmp_path / "out"
    fake = tmp_path / "fake_invtransfer.py"  # records its command and start/end times, writes the job's marker
    fake.write_text(
        "import json, os, sys, time\n"
        "kw = dict(a.split('=', 1) for a in sys.argv[2:] if '=' in a)\n"
        "run = os.path.join(kw['out_dir'], kw['name'])\n"
        "os.makedirs(run, exist_ok=True)\n"
        "start = time.time()\n"
        "open(os.path.join(kw['out_dir'], kw['name'] + '.started'), 'w').close()\n"
        "started = lambda: [f for f in os.listdir(kw['out_dir']) if f.endswith('.started')]\n"
        "while len(started()) < 2 and time.time() < start + 60:\n"
        "    time.sleep(0.05)\n"
        "with open(os.path.join(kw['out_dir'], kw['name'] + '.json'), 'w') as fh:\n"
        "    json.dump({'argv': sys.argv[1:], 'start': start, 'end': time.time()}, fh)\n"
        "open(os.path.join(run, 'generator.pt' if sys.argv[1] == 'train-generator' else 'results.json'), 'w')\n")
    jobs = [protocols.Job("generator", "g", ["train-generator", "g.yaml"]),
            protocols.Job("classifier", "c", ["train", "c.yaml"])]
    for job, ck in zip(jobs, ("state.pt", "checkpoint.pt")):  # both were interrupted before
        os.makedirs(job.run_dir(str(out)))
        open(os.path.join(job.run_dir(str(out)), ck), "w").close()
    kw = {"executor": "local", "parallel": 2, "gpus_per_job": 0, "timeout_min": 5, "poll_s": 0.2, "report": False}
    assert protocols.dispatch(jobs, str(out), [sys.executable, str(fake)], **kw) == 0
    log = capsys.readouterr().out
    first_done = log.index("[done] ")
    assert log.index("[submit] g ") < first_done and log.index("[submit] c ") < first_done
    runs = {n: json.loads((out / f"{n}.json").read_text()) for n in ("g", "c")}
    assert runs["g"]["start"] < runs["c"]["end"] and runs["c"]["start"] < runs["g"]["end"]  # they overlapped
    assert max(r["end"] - r["start"] for r in runs.values()) < 50  # neither waited for the other in vain
    for r in runs.values():
        assert "resume=true" in r["argv"] and "overwrite=true" not in r["argv"]
