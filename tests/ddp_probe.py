"""torchrun entry point of tests/test_distributed.py: ``invtransfer`` with probes in every process.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_probe.py RECORD_DIR WATCH_DIR \
        train cfg.yaml name=x ...

Each process records into ``RECORD_DIR/rank<RANK>.json``:

* ``forward_rows``: the rows of every training-mode forward of the classifier (``CifarResNet``);
* ``generated_rows``: the rows of every call of GIT's nuisance sampler;
* ``generator_rows``: the rows of every MUNIT training batch (``GeneratorRun.batch``, both streams);
* ``writes``: ``[event, path]`` for every file or folder under WATCH_DIR that the process opened
  for writing, created, renamed onto or removed, from Python's audit events (so every writer
  counts: ``open``, ``os.open``, ``os.replace``, ``shutil``, ..., and ``torch.save`` to a path,
  whose C++ writer raises no event);

then runs the command-line interface with the remaining arguments and exits with its status.
"""

import json
import os
import sys

import torch

from invtransfer.cli import main
from invtransfer.models.resnet_cifar import CifarResNet
from invtransfer.train.generator import GeneratorRun, NuisanceSampler

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# audit events that create, replace or remove a path -> the index of that path among their arguments
_PATH_ARG = {"os.rename": 1, "os.mkdir": 0, "os.remove": 0, "os.rmdir": 0, "os.link": 1, "os.symlink": 1,
             "shutil.rmtree": 0, "shutil.copyfile": 1, "shutil.move": 1}  # os.rename: also os.replace


def _path(p):
    if isinstance(p, int) or p is None:  # a file descriptor
        return None
    return os.path.realpath(os.fsdecode(p))


def run(record_dir: str, watch: str, argv: list[str]) -> int:
    watch = os.path.realpath(watch)
    rec = {"rank": int(os.environ.get("RANK", "0")), "forward_rows": [], "generated_rows": [], "generator_rows": [],
           "writes": []}
    on = [True]

    def note(event, path):
        path = _path(path)
        if path is not None and (path == watch or path.startswith(watch + os.sep)):
            rec["writes"].append([event, os.path.relpath(path, watch)])

    def audit(event, args):
        if not on[0]:
            return
        if event == "open":
            path, mode, flags = args
            if not (isinstance(mode, str) and any(c in mode for c in "wax+")) and not (
                    mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS):
                return
        elif event in _PATH_ARG:
            path = args[_PATH_ARG[event]]
        else:
            return
        note(event, path)

    def forward_pre_hook(module, args):
        if isinstance(module, CifarResNet) and module.training:
            rec["forward_rows"].append(int(args[0].shape[0]))

    real_call, real_batch, real_save = NuisanceSampler.__call__, GeneratorRun.batch, torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, bytes, os.PathLike)):
            note("torch.save", f)
        return real_save(obj, f, *args, **kwargs)

    def sampler_call(self, x, *args, **kwargs):
        rec["generated_rows"].append(int(x.shape[0]))
        return real_call(self, x, *args, **kwargs)

    def generator_batch(self, iteration):
        x, idx = real_batch(self, iteration)
        rec["generator_rows"].append(int(x.shape[0]))
        return x, idx

    NuisanceSampler.__call__ = sampler_call
    GeneratorRun.batch = generator_batch
    torch.save = save
    torch.nn.modules.module.register_module_forward_pre_hook(forward_pre_hook)
    sys.addaudithook(audit)
    try:
        return main(argv)
    finally:
        on[0] = False
        with open(os.path.join(record_dir, f"rank{rec['rank']}.json"), "w", encoding="utf-8") as fh:
            json.dump(rec, fh)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2], sys.argv[3:]))
