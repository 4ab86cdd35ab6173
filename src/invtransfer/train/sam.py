"""Sharpness-aware minimisation (SAM) around an optimiser's step, and its tail-class variant.

SAM (Foret et al., ICLR 2021) minimises ``max_{||e|| <= rho} L(w + e)`` with the first-order
solution of the inner maximisation. One step on a batch ``B``:

    g   = grad L_B(w)                      (first forward/backward, at the weights)
    e   = rho * g / (||g||_2 + 1e-12)      (||.||_2 over all parameters together)
    g'  = grad L_B(w + e)                  (second forward/backward, at the perturbed weights)
    w  <- w, restored exactly (a copy, not w + e - e)
    w  <- SGD step with g'                 (momentum and weight decay act at w, as before)

so a step costs two forward/backward passes. ``L`` is the training loss as the rule makes it
(class weights of DRW included); weight decay is not part of ``g``: it is the optimiser's, applied
at ``w``. Batch-norm running statistics are updated by the first pass only (the weights'
statistics, not the perturbed weights'); the second pass restores them.

Tail-class SAM (``optim.sam_classes=tail``): the perturbation comes from the loss of the tail
classes' examples only, the descent from the whole loss:

    g_T = grad L_B^T(w),   L_B^T = the batch loss restricted to examples of classes with n_c <= K
    e_T = rho * g_T / (||g_T||_2 + 1e-12)
    g'  = grad L_B(w + e_T)

Only the direction of ``g_T`` matters, so the normalisation of ``L_B^T`` (a mean over the tail
examples, with their class weights) does not. A batch with no tail example has ``e_T = 0``: its
step is a plain SGD step (one pass). Rangwani et al. (NeurIPS 2022), as we read them, observe
that re-weighted and margin losses converge to saddle points of the *tail* classes' loss and
that SAM with a large ``rho`` escapes them; their method applies SAM to the whole (LDAM-DRW)
loss, which is ``optim.sam_classes=all`` here (their CIFAR-10-LT scripts, as far as we have seen
them, use rho 0.8 with LDAM-DRW and 0.5 with CE+DRW, constant over the run; check before quoting). The tail-only perturbation is our variant
motivated by that observation -- closest to ImbSAM (Zhou et al., ICCV 2023), which however
evaluates the head classes' loss at ``w`` and only the tail classes' at ``w + e_T``; here the
whole loss is evaluated at ``w + e_T``, which keeps the two-pass structure of SAM.

Several processes (DDP): both backward passes all-reduce the gradients, so ``g`` is the global
batch's gradient and every process perturbs identically: the result equals the single
process's, at the cost of one more all-reduce per step. The per-process perturbation of Foret et
al.'s multi-accelerator implementation (``no_sync`` in the first pass, "m-sharpness" with m the
per-process batch) would save that all-reduce but make the run depend on the number of processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from invtransfer.errors import InvTransferError

SAM_CLASSES = ("all", "tail")


class SharpnessAware:
    """SAM's perturbation of a set of parameters (module docstring).

    :meth:`gradient` leaves SAM's gradient in the parameters' ``.grad`` and the parameters as
    they were; the caller then steps its optimiser. ``rho = 0`` gives the plain gradient, bit for
    bit.
    """

    def __init__(self, params: Iterable[nn.Parameter], rho: float, eps: float = 1e-12) -> None:
        if not rho >= 0:
            raise InvTransferError(f"config key 'optim.sam_rho' must be >= 0, got {rho}.")
        self.params = [p for p in params if p.requires_grad]
        self.rho, self.eps = float(rho), float(eps)
        self._saved: list[Tensor] | None = None  # made once, reused every step
        self.perturbed = False

    @torch.no_grad()
    def perturb(self) -> None:
        """``w <- w + rho * g / ||g||`` from the gradients in ``.grad``; remembers ``w``."""
        if self.perturbed:
            raise RuntimeError("SharpnessAware.perturb called twice without restore")
        if self._saved is None:
            self._saved = [torch.empty_like(p) for p in self.params]
        for saved, p in zip(self._saved, self.params):
            saved.copy_(p)
        grads = [p.grad for p in self.params if p.grad is not None]
        self.perturbed = True
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
        scale = self.rho / (norm + self.eps)  # on the device: no host synchronisation
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad * scale.to(p.grad.dtype))

    @torch.no_grad()
    def restore(self) -> None:
        """The weights as they were before :meth:`perturb`, exactly."""
        if self.perturbed:
            for saved, p in zip(self._saved, self.params):
                p.copy_(saved)
            self.perturbed = False

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def gradient(self, ascent: Callable[[], Tensor], descent: Callable[[], Tensor], model: nn.Module) -> None:
        """SAM's gradient in ``.grad``: ``descent()``'s at ``w + e``, with ``e`` from ``ascent()``'s at ``w``.

        ``ascent`` and ``descent`` run a forward pass of ``model`` and return a scalar loss (they
        may keep what else they need, e.g. the first pass's logits). The weights are restored
        also when the second pass raises, and batch-norm running statistics keep the first
        pass's update only.
        """
        self.zero_grad()
        ascent().backward()
        self.perturb()
        try:
            self.zero_grad()
            with frozen_running_stats(model):
                descent().backward()
        finally:
            self.restore()


@contextlib.contextmanager
def frozen_running_stats(model: nn.Module):
    """Batch-norm running statistics (and batch counters) as they were before the block."""
    saved = [(b, b.detach().clone()) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def tail_classes(class_counts: Sequence[int], threshold: int) -> Tensor:
    """(C,) bool: the classes with at most ``threshold`` training images (tail-class SAM's)."""
    counts = torch.tensor([int(c) for c in class_counts])
    tail = counts <= threshold
    if not bool(tail.any()):
        raise InvTransferError(f"config key 'optim.sam_tail_threshold'={threshold} selects no class: the smallest "
                               f"class has {int(counts.min())} training images (class sizes {counts.tolist()}). "
                               f"Tail classes are those with at most this many images; use a value >= "
                               f"{int(counts.min())}.")
    return tail
