"""Multi-process training through ``torchrun``: process group, shards of global batches, rank 0's outputs.

::

    torchrun --standalone --nproc_per_node 2 -m invtransfer train configs/cifar10_lt/ce_drs.yaml sync_bn=true
    torchrun --standalone --nproc_per_node 2 -m invtransfer train-generator configs/generator/cifar10_munit.yaml

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``);
:func:`from_env` joins the process group they describe: NCCL when training on CUDA (process r on
``cuda:LOCAL_RANK``), gloo otherwise. Without those variables, or with ``WORLD_SIZE=1``, nothing
here does anything and training is the single-process code path.

What makes a run with W processes the run of one process with the same global batch:

* ``optim.batch_size`` (``batch_size`` of the generator) stays the GLOBAL batch. Every process
  computes the same seeded global epoch indices and the augmentation (and GIT) draws of the whole
  global batch, on the CPU, and builds only its rows ``[r * L // W, (r + 1) * L // W)`` of a
  batch of L (:meth:`Dist.shard`); the global batch size must be divisible by W, and the shorter
  last batch of an epoch is split as evenly as it goes.
* Losses are means over the global batch: a process scales its shard's loss so that the mean of
  the processes' losses (what DDP's gradient averaging computes) is the global batch's loss,
  also for unequal shards and class-weighted means (:meth:`Dist.loss_scale`).
* Batch-norm statistics are per process unless synchronised (``sync_bn=true``):
  :func:`convert_sync_batchnorm` uses ``torch.nn.SyncBatchNorm`` on GPUs and
  :class:`GlobalBatchNorm2d` elsewhere (torch's refuses CPU tensors).
* Process 0 alone writes run directories, checkpoints, logs, plots and results; the others wait
  for it (:meth:`Dist.on_main` turns its errors into the same error on every process). Stops on
  a signal and non-finite losses are agreed by all processes in the same step, so none is left
  waiting in a collective.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from invtransfer.errors import InvTransferError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where collectives' tensors live (NCCL: this GPU)
    owns_group: bool = False  # the process group was created here (and is destroyed by close())

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of a global batch of ``n`` that this process builds."""
        return self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size

    def check_batch_size(self, batch_size: int, key: str) -> None:
        if self.enabled and batch_size % self.world_size:
            raise InvTransferError(f"config key {key!r}={batch_size} is the global batch and must be divisible by "
                                   f"the number of processes ({self.world_size}).")

    def loss_scale(self, weights: torch.Tensor, rows: tuple[int, int]) -> float:
        """Factor that turns a shard's mean loss into its share of the global batch's mean loss.

        ``weights`` (CPU, one per global example) are the mean's weights: class weights of a
        weighted mean, else ones. Processes' losses are then averaged by DDP, hence the W.
        """
        if not self.enabled:
            return 1.0
        local = float(weights[rows[0]:rows[1]].double().sum())
        return self.world_size * local / float(weights.double().sum())

    def gather_rows(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """The global batch of ``n`` rows from every process's shard ``x`` (its rows :meth:`shard`),
        on every process: one all-gather, without gradient history. One process: ``x``."""
        if not self.enabled:
            return x
        sizes = [(r + 1) * n // self.world_size - r * n // self.world_size for r in range(self.world_size)]
        if x.shape[0] != sizes[self.rank]:
            raise RuntimeError(f"gather_rows: process {self.rank} has {x.shape[0]} rows, its shard {sizes[self.rank]}")
        padded = x.new_zeros((max(sizes), *x.shape[1:]))  # all_gather needs one shape (the last batch splits unevenly)
        padded[:x.shape[0]] = x.detach()
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, padded)
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])

    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                torch.distributed.barrier(device_ids=[self.device.index])
            else:
                torch.distributed.barrier()

    def gather_stats(self, stats: torch.Tensor) -> list[float]:
        """Sums over processes of ``stats[:-1]`` and the maximum of ``stats[-1]`` (one collective).

        The last entry carries a signal number (0: none), so every process learns that one
        process got a signal, and which, in the same step.
        """
        stats = stats.to(self.device)
        parts = [torch.empty_like(stats) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, stats)
        table = torch.stack(parts).cpu()
        return table[:, :-1].sum(0).tolist() + [float(table[:, -1].max())]

    def broadcast(self, obj: T) -> T:
        """Process 0's ``obj`` on every process (picklable objects)."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on process 0 and give every process its value; its error is raised everywhere."""
        if not self.enabled:
            return fn()
        outcome: tuple[str, Any]
        error: BaseException | None = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except BaseException as e:  # noqa: BLE001 - re-raised below, after the others were told
                error = e
                outcome = ("error", str(e) if isinstance(e, InvTransferError) else f"{type(e).__name__}: {e}")
        else:
            outcome = ("", None)
        outcome = self.broadcast(outcome)
        if error is not None:
            raise error
        if outcome[0] == "error":
            raise InvTransferError(f"process 0 failed: {outcome[1]}")
        return outcome[1]

    def close(self, wait: bool = False) -> None:
        """Leave the process group; with ``wait``, once every process got here (a process that
        left early could cut another's last message short), and in order: the other processes
        destroy their group first and say so through the store, process 0 (which may host the
        store) last, so that no process tears down its connections while another still has a
        collective in flight on them (once seen as an abort at exit, "terminate called without
        an active exception", with gloo on an oversubscribed CPU)."""
        if not (self.owns_group and torch.distributed.is_initialized()):
            return
        if not wait:
            torch.distributed.destroy_process_group()
            return
        self.barrier()
        store = _default_store()
        if store is None or self.world_size == 1:
            torch.distributed.destroy_process_group()
            return
        if self.rank:
            torch.distributed.destroy_process_group()
            store.set(f"invtransfer/closed/{self.rank}", "1")
        else:
            try:  # a process that died after the barrier must not hang process 0 for ever
                store.wait([f"invtransfer/closed/{r}" for r in range(1, self.world_size)], _CLOSE_TIMEOUT)
            except RuntimeError:  # the store says which key timed out; leaving is all that is left to do
                pass
            torch.distributed.destroy_process_group()


_CLOSE_TIMEOUT = datetime.timedelta(seconds=120)


def _default_store():
    """The default process group's key-value store (torchrun's or the one ``init_process_group``
    made), or None where this torch does not expose it."""
    try:
        return torch.distributed.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):
        return None


def from_env(device: torch.device) -> tuple[Dist, torch.device]:
    """The run described by torchrun's variables (or a single process), and this process's device.

    ``device`` is the resolved training device; on CUDA each process takes ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return Dist(), device
    if not torch.distributed.is_available():
        raise InvTransferError("WORLD_SIZE > 1 but this torch build has no torch.distributed.")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InvTransferError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are "
                                   f"visible; start at most that many processes per machine.")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not torch.distributed.is_initialized()
    if owns:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if torch.distributed.get_world_size() != world or torch.distributed.get_rank() != rank:
        raise InvTransferError(f"the process group ({torch.distributed.get_rank()} of "
                               f"{torch.distributed.get_world_size()}) disagrees with RANK={rank}, WORLD_SIZE={world}.")
    comm = device if device.type == "cuda" else torch.device("cpu")
    return Dist(rank, world, local_rank, comm, owns), device


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose backward sums the gradients over processes likewise."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        t = t.clone()
        torch.distributed.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` with the statistics of the global batch over all processes, on any backend.

    ``torch.nn.SyncBatchNorm`` accepts GPU tensors only; this one sums per-channel counts, sums
    and sums of squares (float64) over processes with a differentiable all-reduce, so gradients
    flow through the global statistics as in one process. Outside multi-process training, or in
    eval mode, it is ``BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.distributed.is_available() and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xd = x.double()
        local = torch.cat([xd.sum((0, 2, 3)), (xd * xd).sum((0, 2, 3)),
                           xd.new_tensor([x.numel() // max(c, 1)])])
        total = _SumOverProcesses.apply(local)
        n = total[2 * c]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * n / (n - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = (xd - mean.view(1, c, 1, 1)) * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Batch norms of ``module`` with global statistics (same state-dict keys as before)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        new = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats, device=module.weight.device if module.affine else None)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batchnorm(child, device))
    return module


def average_gradients(params: list[torch.nn.Parameter], dist: Dist) -> None:
    """Replace each gradient by its mean over processes (one flat all-reduce; what DDP computes)."""
    if not dist.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= dist.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


__all__ = ["Dist", "from_env", "GlobalBatchNorm2d", "convert_sync_batchnorm", "average_gradients"]
