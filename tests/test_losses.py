"""Tests for invtransfer.train.losses against values computed independently with math/numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from invtransfer.errors import InvTransferError
from invtransfer.train.losses import LOSSES, LongTailLoss, build_loss, effective_number_weights

LOGITS = [[0.2, -0.5, 0.9], [-0.3, 0.1, 0.4], [0.7, 0.6, -0.8], [0.0, -0.2, 0.3]]
TARGETS = [0, 2, 1, 2]
COUNTS = [100, 10, 1]
WEIGHTS = [0.5, 1.0, 2.0]


def ref_ce_terms(z: np.ndarray, y: list[int]) -> np.ndarray:
    """Per-example -log softmax(z)[y], written out with exp/log."""
    return np.array([math.log(sum(math.exp(v) for v in row)) - row[t] for row, t in zip(z, y)])


def ref_reduce(terms: np.ndarray, y: list[int], w: list[float] | None) -> float:
    if w is None:
        return float(terms.mean())
    wy = np.array([w[t] for t in y])
    return float((wy * terms).sum() / wy.sum())


def run(loss: LongTailLoss, z: list[list[float]] = LOGITS, y: list[int] = TARGETS,
        w: list[float] | None = None) -> float:
    cw = None if w is None else torch.tensor(w)
    return float(loss(torch.tensor(z, dtype=torch.float64), torch.tensor(y), cw))


@pytest.mark.parametrize("w", [None, WEIGHTS])
def test_ce(w: list[float] | None) -> None:
    expected = ref_reduce(ref_ce_terms(np.array(LOGITS), TARGETS), TARGETS, w)
    assert run(build_loss("ce", COUNTS), w=w) == pytest.approx(expected, rel=1e-6)


def test_ce_literal() -> None:
    assert run(build_loss("ce", [3, 3]), [[0.0, 0.0]], [0]) == pytest.approx(math.log(2))


@pytest.mark.parametrize("w", [None, WEIGHTS])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_focal(w: list[float] | None, gamma: float) -> None:
    ce = ref_ce_terms(np.array(LOGITS), TARGETS)
    if w is not None:
        ce = ce * np.array([w[t] for t in TARGETS])  # the weight sits inside exp(-l)
    expected = float(np.mean([(1 - math.exp(-v)) ** gamma * v for v in ce]))
    assert run(build_loss("focal", COUNTS, focal_gamma=gamma), w=w) == pytest.approx(expected, rel=1e-6)


def test_focal_gamma_zero_is_ce() -> None:
    z, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    focal = build_loss("focal", [5] * 5, focal_gamma=0.0)
    assert torch.allclose(focal(z, y), F.cross_entropy(z, y))


def ldam_margins(counts: list[int], max_m: float) -> list[float]:
    raw = [n ** -0.25 for n in counts]
    return [m * max_m / max(raw) for m in raw]


@pytest.mark.parametrize("w", [None, WEIGHTS])
def test_ldam(w: list[float] | None) -> None:
    cos = np.clip(np.array(LOGITS), -1, 1)
    m = ldam_margins(COUNTS, 0.5)
    adjusted = cos.copy()
    for i, t in enumerate(TARGETS):
        adjusted[i, t] -= m[t]
    expected = ref_reduce(ref_ce_terms(30.0 * adjusted, TARGETS), TARGETS, w)
    loss = build_loss("ldam", COUNTS)
    assert loss.needs_cosine_head
    assert run(loss, cos.tolist(), w=w) == pytest.approx(expected, rel=1e-6)


def test_ldam_literal() -> None:
    # counts (1, 16): margins (0.5, 0.25); zero cosines, target 0 -> logits (-15, 0).
    assert run(build_loss("ldam", [1, 16]), [[0.0, 0.0]], [0]) == pytest.approx(15 + math.log1p(math.exp(-15)))


def test_ldam_margins() -> None:
    counts = [5000, 500, 50, 7]
    loss = build_loss("ldam", counts, ldam_max_margin=0.5)
    m = loss.margins.double()
    assert float(m.max()) == pytest.approx(0.5)
    for i in range(4):
        for j in range(4):
            assert float(m[i] / m[j]) == pytest.approx((counts[j] / counts[i]) ** 0.25, rel=1e-6)
    assert torch.allclose(m, torch.tensor(ldam_margins(counts, 0.5), dtype=torch.float64))


@pytest.mark.parametrize("w", [None, WEIGHTS])
def test_balanced_softmax(w: list[float] | None) -> None:
    z = np.array(LOGITS) + np.log(COUNTS)
    expected = ref_reduce(ref_ce_terms(z, TARGETS), TARGETS, w)
    assert run(build_loss("balanced_softmax", COUNTS), w=w) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("w", [None, WEIGHTS])
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_logit_adjust(w: list[float] | None, tau: float) -> None:
    prior = np.array(COUNTS) / sum(COUNTS)
    z = np.array(LOGITS) + tau * np.log(prior)
    expected = ref_reduce(ref_ce_terms(z, TARGETS), TARGETS, w)
    loss = build_loss("logit_adjust", COUNTS, logit_adjust_tau=tau)
    assert not loss.needs_cosine_head
    assert run(loss, w=w) == pytest.approx(expected, rel=1e-6)


def test_logit_adjust_tau1_equals_balanced_softmax() -> None:
    a = run(build_loss("logit_adjust", COUNTS), w=WEIGHTS)
    assert a == pytest.approx(run(build_loss("balanced_softmax", COUNTS), w=WEIGHTS), rel=1e-6)


def test_effective_number_weights() -> None:
    counts, beta = [5000, 300, 12, 1], 0.9999
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    expected = [r / sum(raw) * len(counts) for r in raw]
    w = effective_number_weights(counts, beta)
    assert w.shape == (4,)
    assert float(w.sum()) == pytest.approx(4.0, rel=1e-6)
    assert w.tolist() == pytest.approx(expected, rel=1e-6)
    assert effective_number_weights(counts, 0.0).tolist() == pytest.approx([1.0] * 4)
    assert effective_number_weights(counts, 1e-12).tolist() == pytest.approx([1.0] * 4)


def test_count_errors() -> None:
    with pytest.raises(InvTransferError, match="class"):
        effective_number_weights([10, 0, 3])
    with pytest.raises(InvTransferError):
        effective_number_weights([10, 3], beta=1.0)
    for name in ("ldam", "balanced_softmax", "logit_adjust"):
        with pytest.raises(InvTransferError, match=r"\[1\]"):
            build_loss(name, [10, 0, 3])
    build_loss("ce", [10, 0, 3])  # counts unused: a class with no images is fine
    with pytest.raises(InvTransferError):
        build_loss("ce", [10, -1])


def test_unknown_loss_suggests() -> None:
    with pytest.raises(InvTransferError, match="'focal'"):
        build_loss("focl", [1, 2])


def test_shape_errors() -> None:
    loss = build_loss("ce", [3, 3, 3])
    with pytest.raises(InvTransferError):
        loss(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(InvTransferError):
        loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.ones(2))


@pytest.mark.parametrize("name", LOSSES)
def test_gradient_flows_and_buffers(name: str) -> None:
    loss = build_loss(name, COUNTS)
    assert loss.num_classes == 3
    assert all(b.device.type == "cpu" for b in loss.buffers())
    assert dict(loss.named_buffers()).keys() >= {"class_counts"}
    z = (torch.tensor(LOGITS) * 0.9).requires_grad_()
    value = loss(z, torch.tensor(TARGETS), torch.tensor(WEIGHTS))
    value.backward()
    assert value.dim() == 0 and torch.isfinite(value)
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_the_registry_is_the_one_table_of_losses() -> None:
    """Every loss key of the config is a registered class with its own name, label and options,
    each option a key of LossConfig, and build_loss passes each loss its options only."""
    from invtransfer.train.configs import LossConfig

    fields = {f for f in LossConfig.__dataclass_fields__}
    assert tuple(LossConfig.__dataclass_fields__["name"].metadata["choices"]) == tuple(LOSSES)
    assert len({cls.label for cls in LOSSES.values()}) == len(LOSSES)
    for name, cls in LOSSES.items():
        assert cls.name == name and cls.label and set(cls.options) <= fields, name
    all_options = LossConfig(focal_gamma=2.0, ldam_max_margin=0.3, ldam_scale=10.0, logit_adjust_tau=0.5).options()
    assert build_loss("focal", COUNTS, **all_options).gamma == 2.0
    ldam = build_loss("ldam", COUNTS, **all_options)
    assert (ldam.max_margin, ldam.scale) == (0.3, 10.0)
    assert build_loss("logit_adjust", COUNTS, **all_options).tau == 0.5
    with pytest.raises(InvTransferError, match="unknown option.*focal_gama"):
        build_loss("ce", COUNTS, focal_gama=1.0)
    with pytest.raises(InvTransferError, match="logit_adjust_tau must be finite"):
        build_loss("logit_adjust", COUNTS, logit_adjust_tau=float("inf"))
