"""Multi-process training (2 CPU processes, gloo) against one process with the same global batch.

What is compared, and the tolerances:

* The sharded batch itself is exact: every process's rows of a planned global batch (indices,
  crop offsets, flips, GIT's slots, sources and styles) are the rows of the single process's
  batch (``test_shards_rebuild_the_single_process_batch``).
* With ``sync_bn=true`` the two runs compute the same function (global batch-norm statistics,
  the global batch's mean loss) and differ only in the order of float32 sums, ~1e-7 relative per
  step. A ReLU network turns such a difference into a jump when an activation within ~1e-6 of
  zero changes side (one gradient entry changes by O(1/batch)). Zero padding makes such ties
  common: every padded position of a channel gets the same value, which sits near zero for
  channels whose mean is near zero, and thousands of activations switch together. So the
  end-to-end run uses crop_padding=0 (the crop's sharding is covered exactly by the test above)
  and continuous textures, and every process (the reference too) runs one thread, so all sum in
  the same order within a process; then the weights after 15 steps at lr 0.002 agree to ~4e-6
  (measured 4.1e-6; with padding 2 we measured 1.5e-4, with a two-thread reference 3e-4, all of
  it from such ties); 2e-3 is asserted, a margin of ~500x for BLAS builds that sum differently,
  yet below the 3e-3 of per-process batch norm (next item), so a run whose statistics are not
  synchronised fails it.
* Without sync_bn each process normalises its shard with the shard's own statistics: another
  forward pass, so only loose agreement of the parameters (within 2e-2; measured 3e-3) is
  asserted; the running statistics are process 0's shard statistics and are not compared.
* The MUNIT trainer has no batch-dependent layer: its two-process losses match to 1e-5 relative
  and its weights to 1e-5, except conv biases in front of instance norms, whose true gradient
  is zero: Adam turns the float noise there into steps of +-lr, so they may differ by 2 lr a step.
"""

import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from invtransfer.config import dump_yaml, from_dict, to_dict
from invtransfer.models.munit import MunitArch, MunitGenerator
from invtransfer.train import classifier, distributed, generator
from invtransfer.train.checkpoint import TrainingInterrupted, atomic_save, load_checkpoint

TIMEOUT = 240  # seconds for any multi-process run (a hang fails the test instead of blocking it)
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_probe.py")


@contextlib.contextmanager
def one_thread():
    """Run the one-process reference with one thread, like each of the processes it is compared
    with: another thread count sums in another order, and ReLU amplifies that (see above)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def textured_images(n_per_class, num_classes=4, size=16, seed=0):
    """Noise textures with a class-dependent bright band: continuous pixel values (few ReLU ties)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(num_classes):
        x = rng.integers(0, 256, (n_per_class, size, size, 1)).astype(np.float64) * 0.6
        x[:, 1 + 3 * c:4 + 3 * c, 2:size - 2] += 100
        xs.append(np.clip(x, 0, 255).astype(np.uint8))
        ys.append(np.full(n_per_class, c))
    x, y = np.concatenate(xs), np.concatenate(ys).astype(np.int64)
    order = rng.permutation(len(y))
    return x[order], y[order]


@pytest.fixture
def setup(tmp_path):
    return make_setup(tmp_path)


def make_setup(tmp_path, **overrides):
    x, y = textured_images(60, seed=1)
    xt, yt = textured_images(15, seed=2)
    npz = tmp_path / "tex.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=xt, y_test=yt)
    arch = MunitArch(channels=1, image_size=16, width=8, n_res=1, mlp_dim=16, disc_width=8)
    torch.manual_seed(0)
    gen_path = str(tmp_path / "gen.pt")
    atomic_save({"format": "invtransfer/generator", "state": "weights", "arch": to_dict(arch),
                 "generator": MunitGenerator(arch).state_dict(), "dataset": {"image_shape": [1, 16, 16]},
                 "iteration": 0, "images_seen": 0}, gen_path)
    data = {"name": "fmnist-dil-lt", "source": "npz", "npz_file": str(npz), "profile": "list",
            "counts": [40, 20, 6, 3], "class_order": "index"}  # 69 images: the last batch (5) splits 2 + 3
    cfg = {"data": data, "model": "resnet20", "augment": "crop_flip", "crop_padding": 0, "rule": "drs",
           "optim": {"epochs": 3, "batch_size": 16, "warmup_epochs": 1, "decay1_epoch": 1, "decay2_epoch": 2,
                     "lr": 0.002},
           # GIT in epoch 2 (E1 + 1); the untrained generator records no dataset: allowed on purpose
           "git": {"generator": gen_path, "allow_other_dataset": True},
           "select": "last", "out_dir": str(tmp_path / "runs"), "quiet": True, "checkpoint_every": 1}
    cfg.update(overrides)
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_yaml(to_dict(from_dict(classifier.TrainConfig, cfg))))
    return {"tmp": tmp_path, "cfg": cfg, "yaml": str(path), "npz": str(npz)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights(run_dir, name="model.pt"):
    return load_checkpoint(os.path.join(run_dir, name))["model"]


def max_diff(a, b, buffers=True):
    keys = [k for k in a if "num_batches" not in k and (buffers or "running" not in k)]
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys)


def torchrun(args, tmp_path, probe=None):
    """``invtransfer ARGS`` in 2 processes; with ``probe=(record_dir, watch_dir)`` under
    tests/ddp_probe.py, which records each process's forwarded rows and its writes under
    watch_dir (read them with :func:`probe_records`)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    entry = ["-m", "invtransfer"] if probe is None else [PROBE, *(str(p) for p in probe)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *entry, *args]
    if probe is not None:
        os.makedirs(probe[0], exist_ok=True)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def probe_records(record_dir):
    """What tests/ddp_probe.py recorded in process 0 and process 1."""
    return [json.loads((record_dir / f"rank{r}.json").read_text()) for r in range(2)]


def written(record: dict) -> set:
    """Names of the files and folders a process wrote (basenames)."""
    return {os.path.basename(path) for _, path in record["writes"]}


def _worker(rank, world, port, cfg, signal_rank_at, result_dir):
    """One process of a spawned run (optionally SIGTERM to process ``signal_rank_at[0]`` at its step n)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if signal_rank_at is not None and rank == signal_rank_at[0]:
        real, calls = classifier.ClassifierRun._train_step, {"n": 0}

        def step_then_signal(self, *a, **k):
            out = real(self, *a, **k)
            calls["n"] += 1
            if calls["n"] == signal_rank_at[1]:
                os.kill(os.getpid(), signal.SIGTERM)
            return out

        classifier.ClassifierRun._train_step = step_then_signal
    outcome = {"rank": rank}
    try:
        outcome["test_error"] = classifier.train(from_dict(classifier.TrainConfig, cfg))["test_error"]
    except TrainingInterrupted as e:
        outcome["interrupted"] = str(e)
    # what still holds the process group once train() returned (before any collection here)
    outcome["ddp_alive"] = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as fh:
        json.dump(outcome, fh)


def spawn_and_read(fn, world, args, result_dir):
    """``fn(rank, world, port, *args)`` in ``world`` spawned processes (a hang fails the test);
    then what each wrote to ``result_dir/rank<r>.json``."""
    ctx = mp.start_processes(fn, args=(world, free_port(), *args), nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("multi-process run timed out")
    return [json.loads((result_dir / f"rank{r}.json").read_text()) for r in range(world)]


def spawn(cfg, tmp_path, signal_rank_at=None):
    result_dir = tmp_path / f"results_{time.monotonic_ns()}"
    result_dir.mkdir()
    return spawn_and_read(_worker, 2, (cfg, signal_rank_at, str(result_dir)), result_dir)


def test_shards_and_loss_scale_recompose_the_global_batch():
    d = [distributed.Dist(rank=r, world_size=3) for r in range(3)]
    assert [x.shard(7) for x in d] == [(0, 2), (2, 4), (4, 7)]
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    # mean over processes of (scale_r * weighted mean of shard r) == weighted mean of the batch
    losses = torch.arange(7.0)
    per = [x.loss_scale(w, x.shard(7)) * float((w * losses)[slice(*x.shard(7))].sum() / w[slice(*x.shard(7))].sum())
           for x in d]
    assert sum(per) / 3 == pytest.approx(float((w * losses).sum() / w.sum()))
    with pytest.raises(Exception, match="divisible"):
        d[0].check_batch_size(16, "optim.batch_size")


def test_shards_rebuild_the_single_process_batch(setup):
    cfg = dict(setup["cfg"], name="plan", crop_padding=2, git=dict(setup["cfg"]["git"], gen_frac=0.75))
    run = classifier.ClassifierRun(from_dict(classifier.TrainConfig, cfg))
    bidx, bidx2 = torch.arange(13) * 5, torch.arange(13) * 3 + 1  # odd size: unequal shards
    plan = run.plan_batch(bidx, 2, 4, bidx2)
    assert plan.generated > 0
    x, y = run.materialize(plan)
    for world in (2, 3):
        parts = [run.materialize(plan, distributed.Dist(rank=r, world_size=world).shard(13)) for r in range(world)]
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
        real = torch.ones(13, dtype=torch.bool)
        real[plan.gen_slots] = False
        xs = torch.cat([p[0] for p in parts])
        assert torch.equal(xs[real], x[real])  # real slots: the same integer pixels, bit for bit
        assert torch.allclose(xs[~real], x[~real], atol=1e-5)  # generated: the generator on a sub-batch


def test_two_processes_match_one_process(setup):
    tmp, cfg = setup["tmp"], setup["cfg"]
    with one_thread():
        single = classifier.train(from_dict(classifier.TrainConfig, dict(cfg, name="single")))
    ref = weights(tmp / "runs" / "single")

    # torchrun, synchronised batch norm: the same function up to float sum order
    log = torchrun(["train", setup["yaml"], "name=ddp_sync", "sync_bn=true"], tmp,
                   probe=(tmp / "probe_sync", tmp / "runs"))
    sync_dir = tmp / "runs" / "ddp_sync"
    sync = weights(sync_dir)
    diff_sync = max_diff(ref, sync, buffers=False)
    # float32 sums in another order (gloo's gradient all-reduce, the gathered batch-norm
    # statistics), ~1e-7 relative per step, grow to ~4e-6 over the 15 steps at lr 0.002 (measured
    # 4.1e-6); 2e-3 is the docstring's margin, below per-process batch norm's 3e-3 (further down).
    assert diff_sync < 2e-3, diff_sync
    for k in ref:  # running statistics (activations up to ~10): the same to 1e-3 relative
        if "running" in k:
            assert torch.allclose(sync[k], ref[k], rtol=1e-3, atol=1e-4), k
    # process 0 alone wrote the outputs, once per epoch; the log counts the generated slots globally
    lines = [json.loads(x) for x in (sync_dir / "metrics.jsonl").read_text().splitlines()]
    single_lines = [json.loads(x) for x in (tmp / "runs" / "single" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert [r["generated"] for r in lines] == [r["generated"] for r in single_lines] and lines[2]["generated"] > 0
    assert [r["train_loss"] for r in lines] == pytest.approx([r["train_loss"] for r in single_lines], rel=1e-3)
    assert log.count("test error") == 1 and log.count("epoch 3/3") == 1
    probe = probe_records(tmp / "probe_sync")
    # each process forwarded its own rows of every global batch (69 images an epoch: 4 x 16 + 5,
    # split 8 + 8 and 2 + 3), never the whole batch ...
    assert probe[0]["forward_rows"] == [8, 8, 8, 8, 2] * 3 and probe[1]["forward_rows"] == [8, 8, 8, 8, 3] * 3
    # ... generated only the GIT slots among its rows (together: the one process's slots) ...
    assert sum(sum(p["generated_rows"]) for p in probe) == single_lines[2]["generated"]
    # ... and both shared the generating (GIT's candidate slots are spread over the batch, so a
    # contiguous shard is not all generated or all real)
    assert all(sum(p["generated_rows"]) > 0 for p in probe), [p["generated_rows"] for p in probe]
    # ... and process 1 wrote nothing into the run directory (the probe sees process 0's writes)
    assert probe[1]["writes"] == []
    assert {"ddp_sync", "config.yaml", "checkpoint.pt", "metrics.jsonl", "model.pt", "results.json"} \
        <= written(probe[0])
    results = json.loads((sync_dir / "results.json").read_text())
    assert results["config"]["sync_bn"] is True
    assert results["test_error"] == pytest.approx(single["test_error"], abs=2 * 100 / 60 + 1e-9)  # <= 2 images

    # per-process batch norm: another forward pass (shard statistics), so only loosely the same run
    outcome = spawn(dict(cfg, name="ddp_local_bn"), tmp)
    assert all("test_error" in o for o in outcome)
    # the finished run was freed in train(), and with it the process group DDP held: kept alive
    # until the interpreter's exit, gloo's threads once aborted a finished process there
    assert [o["ddp_alive"] for o in outcome] == [0, 0]
    diff_local = max_diff(ref, weights(tmp / "runs" / "ddp_local_bn"), buffers=False)
    assert diff_local < 0.02, diff_local
    print(f"max abs weight difference to one process: sync_bn {diff_sync:.2e}, per-process bn {diff_local:.2e}")

    # a signal to ONE process (after its 7th step's exchange) stops both after the next step,
    # naming the signal; the resumed run is the uninterrupted one
    cfg_int = dict(cfg, name="ddp_resume", sync_bn=True)
    outcome = spawn(cfg_int, tmp, signal_rank_at=(1, 7))
    assert all(f"signal {int(signal.SIGTERM)} at epoch 1 step 3" in o.get("interrupted", "") for o in outcome), outcome
    ck = load_checkpoint(str(tmp / "runs" / "ddp_resume" / "checkpoint.pt"))
    assert (ck["epoch"], ck["step"]) == (1, 3)
    outcome = spawn(dict(cfg_int, resume=True), tmp)
    assert all("test_error" in o for o in outcome)
    resumed, straight = weights(tmp / "runs" / "ddp_resume"), weights(sync_dir)
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


STRONG = {"augment": {"crop": "crop_flip", "policy": "trivialaugment", "policy_group": 4, "mixup": 0.4,
                      "cutmix": 1.0},
          "rule": "drw", "sync_bn": True}  # DRW: class-weighted means, one loss share per mixed term


def _strong_steps(run, steps=2):
    """``steps`` training steps of epoch 2 (GIT, DRW) on an odd global batch (unequal shards);
    returns each step's rows and this process's strongly augmented images, and the weights after
    the first step."""
    seen = []
    for step in range(steps):
        bidx, bidx2 = torch.arange(13) * 5 + step, torch.arange(13) * 3 + 1
        plan = run.plan_batch(bidx, 2, step, bidx2)
        rows = run.dist.shard(13)
        x, y = run.materialize(plan, rows)
        seen.append((rows, run.strong_augment(x, y, plan, rows, 2, step)[0].detach().clone()))
        run._train_step(bidx, 2, step, run.class_weight_for(2), bidx2)
        if step == 0:
            first = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    return seen, first


def _strong_worker(rank, world, port, cfg, result_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    run = classifier.ClassifierRun(from_dict(classifier.TrainConfig, cfg))
    seen, first = _strong_steps(run)
    torch.save({"model": run.model.state_dict(), "first": first, "seen": seen}, os.path.join(result_dir, f"rank{rank}.pt"))
    run.dist.close(wait=True)
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as fh:
        json.dump({"rank": rank}, fh)


@pytest.mark.parametrize("sam_rho", [0.0, 0.05])
def test_strong_augmentation_and_sam_steps_of_two_processes_are_one_processs(setup, sam_rho):
    """Policy groups and mixing partners cross the shards: each process gathers the global batch
    and gets exactly its rows of the one process's augmented batch (GIT's rows included). Mixed
    targets take one loss share per term, and SAM's first pass all-reduces (the perturbation is the
    global batch's), so a step gives the one process's weights up to float sum order (measured
    ~1e-7; 1e-5 asserted, while a wrong share or a per-process perturbation moves them by ~1e-3 at
    this lr). Only one step: from the second on, a ReLU activation within ~1e-7 of zero that
    changes side (common with the policies' tied pixel values: zero fill, posterize, equalize)
    turns float noise into gradient jumps of the layers below it, ~1e-3 of weight over a run,
    as one process with 1 and 2 threads differs (see the module docstring). SAM is checked without
    the policy and mixing: its second pass runs at weights moved by rho = 0.05, where the ~1e-5
    differences of the generated rows (spread over the batch by mixing) flip ReLUs; on an AVX-512
    EPYC that moved the weights by 1.8e-4 after one step (2.4e-7 without mixing), too close to the
    1e-3 of a wrong implementation to tell them apart."""
    cfg = dict(setup["cfg"], **STRONG, optim=dict(setup["cfg"]["optim"], lr=0.05, sam_rho=sam_rho))
    if sam_rho:  # SAM on its own: see the docstring
        cfg["augment"] = dict(cfg["augment"], policy="none", mixup=0.0, cutmix=0.0)
    with one_thread():
        single = classifier.ClassifierRun(from_dict(classifier.TrainConfig, dict(cfg, name=f"single_{sam_rho}")))
        seen, first = _strong_steps(single)
    result_dir = setup["tmp"] / f"strong_{sam_rho}"
    result_dir.mkdir()
    spawn_and_read(_strong_worker, 2, (dict(cfg, name=f"ddp_{sam_rho}"), str(result_dir)), result_dir)
    parts = [torch.load(result_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for step, (rows, full) in enumerate(seen):
        assert rows == (0, 13)
        for part in parts:
            (start, stop), mine = part["seen"][step]
            # generated rows: the generator on a sub-batch (1e-5, test_shards_rebuild...); mixing spreads them
            assert torch.allclose(mine, full[start:stop], atol=1e-4), step
    diff = max_diff(first, parts[0]["first"], buffers=False)
    assert diff < 1e-5, diff
    assert max_diff(parts[0]["model"], parts[1]["model"]) == 0.0  # the processes agree exactly
    print(f"sam_rho {sam_rho}: max abs weight difference to one process after a step {diff:.2e}")


def test_generator_two_processes_match_one_process(setup):
    tmp = setup["tmp"]
    cfg = {"data": {"name": "fmnist-dil-lt", "source": "npz", "npz_file": setup["npz"], "profile": "list",
                    "counts": [40, 20, 6, 3], "class_order": "index"},
           "arch": {"width": 8, "n_res": 1, "mlp_dim": 16, "disc_width": 8}, "iterations": 3, "batch_size": 4,
           "lr": 1e-4,  # the tolerances below are in units of lr (Adam's step on float noise)
           "out_dir": str(tmp / "gruns"), "quiet": True, "log_every": 1, "checkpoint_every": 1,
           "sample_every": 100}
    with one_thread():
        generator.train(from_dict(generator.GeneratorTrainConfig, dict(cfg, name="single")))
    path = tmp / "gen.yaml"
    path.write_text(dump_yaml(to_dict(from_dict(generator.GeneratorTrainConfig, cfg))))
    torchrun(["train-generator", str(path), "name=ddp"], tmp, probe=(tmp / "probe_gen", tmp / "gruns"))
    probe = probe_records(tmp / "probe_gen")
    # each process trained on its 2 of each stream's 4 images (2 + 2 rows) in each of the 3 iterations
    assert [p["generator_rows"] for p in probe] == [[4, 4, 4], [4, 4, 4]]
    # process 0 alone wrote the run directory: state, weights, log and summary
    assert probe[1]["writes"] == []
    assert {"ddp", "state.pt", "generator.pt", "metrics.jsonl", "summary.json"} <= written(probe[0])
    a = load_checkpoint(str(tmp / "gruns" / "single" / "generator.pt"))["generator"]
    b = load_checkpoint(str(tmp / "gruns" / "ddp" / "generator.pt"))["generator"]
    lr, iterations = 1e-4, 3
    for k in a:
        d = (a[k] - b[k]).abs().max().item()
        # a conv bias in front of an instance norm has a gradient of exactly zero in theory and
        # float noise in practice, and Adam turns noise of either sign into a step of +-lr
        assert d < 1e-5 or (k.endswith("bias") and d <= 2 * lr * iterations + 1e-7), (k, d)
    ours, theirs = [[json.loads(x) for x in (tmp / "gruns" / r / "metrics.jsonl").read_text().splitlines()]
                    for r in ("ddp", "single")]
    assert [r["iteration"] for r in ours] == [1, 2, 3]
    for r, q in zip(ours, theirs):
        assert [r[k] for k in generator.LOSS_KEYS if k in r] == pytest.approx(
            [q[k] for k in generator.LOSS_KEYS if k in q], rel=1e-5)


def _close_worker(rank, world, port, result_dir, slow_rank):
    """Join a process group, then leave it with close(wait=True), logging when each step happened;
    ``slow_rank`` dawdles before destroying its group, to show process 0 waits for it."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    dist, _ = distributed.from_env(torch.device("cpu"))
    real_destroy = torch.distributed.destroy_process_group
    log = {"rank": rank}

    def destroy(*a, **k):
        if rank == slow_rank:
            time.sleep(1.0)
        log["destroy_start"] = time.time()
        real_destroy(*a, **k)
        log["destroy_end"] = time.time()

    torch.distributed.destroy_process_group = destroy
    dist.close(wait=True)
    log["initialized_after"] = torch.distributed.is_initialized()
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as fh:
        json.dump(log, fh)


@pytest.mark.parametrize("slow_rank", [1, 2])
def test_processes_leave_the_group_in_order_process_0_last(tmp_path, slow_rank):
    """Leaving after a successful run: every other process destroys its group before process 0
    starts to (which may host the store), even when one of them is slow to do so."""
    logs = spawn_and_read(_close_worker, 3, (str(tmp_path), slow_rank), tmp_path)
    assert not any(log["initialized_after"] for log in logs)
    last_other = max(log["destroy_end"] for log in logs[1:])
    assert logs[0]["destroy_start"] >= last_other, logs
