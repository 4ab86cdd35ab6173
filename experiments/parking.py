"""Parking: the least state that continues the protocols' runs, kept in git between machines.

Long runs live under a runs root outside the checkout (``$INVTRANSFER_RUNS``, default ``runs``),
so a new checkout on the same machine finds them. When the machine itself is not handed back,
``python experiments/protocols.py park`` has copied into ``results/parked/<run name>/`` what
continues each run whose redo would cost more than ``--min-minutes`` (default 30):

* an unfinished classifier: ``checkpoint.pt`` (model, optimiser, position, best weights; a few
  MB for a ResNet-32), the fork checkpoints it kept (``checkpoint_eN.pt``, where a GIT twin
  starts), ``config.yaml`` and ``metrics.jsonl`` (resume reads its logged time from it);
* a finished classifier that something may still need: ``model.pt`` (eKLD is measured from it),
  its fork checkpoints and its small outputs (``results.json``, ``invariance.json``, ...), so the
  drivers see it as finished instead of training it again;
* a finished generator: its frozen ``generator.pt`` in float16 when that changes generated images
  by less than a tenth of the generator's own sampling noise (measured at parking on real images
  of its dataset and recorded in ``PARKED.json``), else in float32.

An unfinished generator is not parked: its training state (generator, discriminator and two
Adam states, about 200 MB at the paper's width) is too large for git. Budgets are sized so that a
generator finishes inside one working stretch instead (README, "Reproducing the paper").

The drivers restore a parked run when its folder lacks it (:func:`restore`) and resume it; resume
from a parked checkpoint is exact (``tests/test_parking.py``). A parked copy is removed
(:func:`unpark_finished`) once its run is finished and every job that needs it has finished too,
so the commit that archives the run also drops its weights.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time

PARKED = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "results", "parked")
LIMIT_MB = 80.0  # results/parked/ is committed: keep the repository small
SMALL = ("config.yaml", "metrics.jsonl", "results.json", "invariance.json", "summary.json")
MANIFEST = "PARKED.json"
FP16_TOLERANCE = 0.1  # float16 weights may move decodes by at most this fraction of style-to-style change


def runs_root() -> str:
    """Where the drivers keep runs: ``$INVTRANSFER_RUNS`` or ``runs`` (relative to the checkout)."""
    return os.environ.get("INVTRANSFER_RUNS") or "runs"


def _copy(src: str, dst: str) -> None:
    from invtransfer.fileio import atomic_write_bytes

    with open(src, "rb") as fh:
        atomic_write_bytes(dst, fh.read())


def _redo_minutes(run_dir: str) -> float:
    """What training the run again would cost, in minutes of its own (one-thread) time: a
    generator's CPU time, else the wall time its checkpoint or results record."""
    import torch

    for fname, key in (("summary.json", "cpu_time_s"), ("results.json", "wall_time_s")):
        p = os.path.join(run_dir, fname)
        if os.path.isfile(p):
            with open(p, encoding="utf-8") as fh:
                value = json.load(fh).get(key)
            if value:
                return float(value) / 60
    ck = os.path.join(run_dir, "checkpoint.pt")
    if os.path.isfile(ck):
        return float(torch.load(ck, map_location="cpu", weights_only=True).get("wall_time_s", 0.0)) / 60
    return 0.0


def _kind(run_dir: str) -> str | None:
    """'classifier', 'generator', 'generator-unfinished' or None (nothing to continue)."""
    has = lambda f: os.path.isfile(os.path.join(run_dir, f))  # noqa: E731
    if has("generator.pt"):
        return "generator"
    if has("state.pt"):
        return "generator-unfinished"
    if has("checkpoint.pt") or has("model.pt") or glob.glob(os.path.join(run_dir, "checkpoint_e*.pt")):
        return "classifier"
    return None


def fp16_deviation(generator_pt: str, n_images: int = 64, seed: int = 0) -> dict:
    """How much rounding a generator's weights to float16 moves its decodes, next to how much a
    second style draw moves them: mean |G16(x, s) - G32(x, s)| and mean |G32(x, s') - G32(x, s)|
    over ``n_images`` training images of its dataset (pixels in [-1, 1], decoded in float32)."""
    import copy

    import numpy as np
    import torch

    from invtransfer.data.datasets import build_dataset
    from invtransfer.train.checkpoint import load_checkpoint
    from invtransfer.train.generator import load_generator

    gen32, _ = load_generator(generator_pt)
    ck = load_checkpoint(generator_pt, "generator")
    ds = build_dataset(ck["config"]["data"])
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ds.y_train), size=min(n_images, len(ds.y_train)), replace=False))
    x = torch.from_numpy(ds.x_train[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1
    gen16 = copy.deepcopy(gen32)
    with torch.no_grad():
        for p in gen16.state_dict().values():
            if p.is_floating_point():
                p.copy_(p.half().float())
        g = torch.Generator().manual_seed(seed)
        s1, s2 = gen32.sample_style(len(x), generator=g), gen32.sample_style(len(x), generator=g)
        c32, c16 = gen32.encode(x)[0], gen16.encode(x)[0]
        a, b, other = gen32.decode(c32, s1), gen16.decode(c16, s1), gen32.decode(c32, s2)
    rounding, noise = float((a - b).abs().mean()), float((other - a).abs().mean())
    return {"images": len(x), "rounding_l1": rounding, "style_noise_l1": noise, "ratio": rounding / noise}


def _park_generator(src: str, dst: str, dtype: str) -> dict:
    import torch

    from invtransfer.train.checkpoint import atomic_save, load_checkpoint

    info: dict = {"dtype": "float32"}
    if dtype in ("auto", "float16"):
        try:
            dev = fp16_deviation(src)
        except Exception as e:  # noqa: BLE001 - e.g. its dataset is not on this machine: keep float32
            if dtype == "float16":
                raise
            info["fp16_check"] = f"not measured ({type(e).__name__}: {str(e)[:200]}); kept float32"
        else:
            info["fp16_check"] = dev
            if dtype == "float16" or dev["ratio"] <= FP16_TOLERANCE:
                info["dtype"] = "float16"
    if info["dtype"] == "float32":
        _copy(src, dst)
        return info
    ck = load_checkpoint(src, "generator")
    # load_generator copies these into float32 parameters; decoding stays float32
    ck["generator"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["generator"].items()}
    atomic_save(ck, dst)
    return info


def park(out: str, dest: str = PARKED, *, min_minutes: float = 30.0, generator_dtype: str = "auto",
         limit_mb: float = LIMIT_MB) -> list[str]:
    """Copy into ``dest/<run>/`` what continues each run under ``out`` whose redo costs more than
    ``min_minutes``; returns the runs parked. An earlier parked copy of the same run is replaced."""
    from invtransfer.errors import InvTransferError

    parked = []
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        src = os.path.join(out, name)
        kind = _kind(src)
        if kind is None:
            continue
        minutes = _redo_minutes(src)
        if kind == "generator-unfinished":
            size = os.path.getsize(os.path.join(src, "state.pt")) / 2**20
            print(f"[park] {name}: unfinished generator, not parked (its training state is {size:.0f} MB); "
                  f"it restarts from scratch where this folder is lost ({minutes:.0f} min of CPU so far)", flush=True)
            continue
        if minutes < min_minutes:
            print(f"[park] {name}: skipped, redo costs {minutes:.1f} min < {min_minutes:g}", flush=True)
            continue
        finished = os.path.isfile(os.path.join(src, "results.json"))
        files = [f for f in SMALL if os.path.isfile(os.path.join(src, f))]
        if kind == "classifier":
            files += sorted(os.path.basename(p) for p in glob.glob(os.path.join(src, "checkpoint_e*.pt")))
            files.append("model.pt" if finished else "checkpoint.pt")
        tmp = os.path.join(dest, f".{name}.parking")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        manifest = {"run": name, "kind": kind, "finished": finished or kind == "generator", "redo_minutes": minutes,
                    "source": os.path.abspath(src), "parked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for f in files:
            _copy(os.path.join(src, f), os.path.join(tmp, f))
        if kind == "generator":
            manifest["generator"] = _park_generator(os.path.join(src, "generator.pt"), os.path.join(tmp, "generator.pt"),
                                                    generator_dtype)
            files.append("generator.pt")
        manifest["files"] = {f: os.path.getsize(os.path.join(tmp, f)) for f in files}
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2)
        final = os.path.join(dest, name)
        shutil.rmtree(final, ignore_errors=True)  # the new copy is complete before the old one goes
        os.replace(tmp, final)
        parked.append(name)
        print(f"[park] {name}: {', '.join(files)} ({sum(manifest['files'].values()) / 2**20:.1f} MB)", flush=True)
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(dest, "*", "*"))) / 2**20
    if total > limit_mb:
        raise InvTransferError(f"{dest} now holds {total:.1f} MB, more than the {limit_mb:g} MB it may hold in git; "
                               f"remove parked runs that are no longer needed, or park fewer (--min-minutes).")
    return parked


def restore(name: str, run_dir: str, checkpoint: str, dest: str = PARKED) -> bool:
    """Copy the parked files of run ``name`` into ``run_dir`` when that folder lacks its own
    ``checkpoint`` (or its generator): a lost folder continues from where it was parked."""
    src = os.path.join(dest, name)
    if not os.path.isfile(os.path.join(src, MANIFEST)):
        return False
    with open(os.path.join(src, MANIFEST), encoding="utf-8") as fh:
        manifest = json.load(fh)
    wanted = "generator.pt" if manifest["kind"] == "generator" else (
        "model.pt" if manifest["finished"] else checkpoint)
    if os.path.isfile(os.path.join(run_dir, wanted)) or os.path.isfile(os.path.join(run_dir, checkpoint)):
        return False
    os.makedirs(run_dir, exist_ok=True)
    for f in manifest["files"]:
        _copy(os.path.join(src, f), os.path.join(run_dir, f))
    print(f"[restore] {name} from {src} (parked {manifest['parked_at']})", flush=True)
    return True


def unpark(name: str, dest: str = PARKED) -> bool:
    """Remove run ``name``'s parked copy; returns whether there was one."""
    path = os.path.join(dest, name)
    if not os.path.isdir(path):
        return False
    shutil.rmtree(path)
    print(f"[unpark] {name}: finished, and nothing that needs it is left; its parked copy is removed", flush=True)
    return True
