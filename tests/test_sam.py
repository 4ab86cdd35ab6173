"""Sharpness-aware minimisation (train/sam.py)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invtransfer.errors import InvTransferError
from invtransfer.train import sam


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _batches(n=4):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def _sgd(net):
    return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


def test_rho_zero_is_sgd_bit_for_bit():
    """Two passes at w + 0 = w: the same gradient, batch-norm statistics updated once."""
    plain, sharp = _net(), _net()
    opt_p, opt_s = _sgd(plain), _sgd(sharp)
    s = sam.SharpnessAware(sharp.parameters(), rho=0.0)
    for x, y in _batches():
        opt_p.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        opt_p.step()
        s.gradient(lambda: F.cross_entropy(sharp(x), y), lambda: F.cross_entropy(sharp(x), y), sharp)
        opt_s.step()
    for (k, a), b in zip(plain.state_dict().items(), sharp.state_dict().values()):
        assert torch.equal(a, b), k  # weights, momentum-driven updates and BN buffers alike


def test_gradient_is_the_gradient_at_the_perturbed_weights_and_weights_are_restored():
    net = _net()
    x, y = _batches(1)[0]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rho = 0.05
    # Reference, written out: g at w, e = rho g / ||g||, gradient at w + e (BN in eval mode
    # would differ, so the reference runs the same train-mode forward on a copy).
    ref = _net()
    F.cross_entropy(ref(x), y).backward()
    g = [p.grad.clone() for p in ref.parameters()]
    norm = torch.sqrt(sum((t ** 2).sum() for t in g))
    with torch.no_grad():
        for p, t in zip(ref.parameters(), g):
            p.add_(rho * t / (norm + 1e-12))
    ref.zero_grad()
    F.cross_entropy(ref(x), y).backward()

    s = sam.SharpnessAware(net.parameters(), rho=rho)
    s.gradient(lambda: F.cross_entropy(net(x), y), lambda: F.cross_entropy(net(x), y), net)
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
        assert not torch.allclose(p.grad, torch.zeros_like(p.grad))
    after = net.state_dict()
    for k, v in before.items():
        if "running" in k or "num_batches" in k:
            continue  # one forward's update, checked below
        assert torch.equal(after[k], v), k  # the perturbation is gone, exactly
    # Running statistics: those of one forward at the unperturbed weights.
    once = _net()
    once(x)
    for k in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(after[k], once.state_dict()[k]), k


def test_perturbation_has_length_rho():
    net = _net()
    x, y = _batches(1)[0]
    s = sam.SharpnessAware(net.parameters(), rho=0.3)
    w = [p.detach().clone() for p in net.parameters()]
    F.cross_entropy(net(x), y).backward()
    s.perturb()
    e = torch.sqrt(sum(((p.detach() - q) ** 2).sum() for p, q in zip(net.parameters(), w)))
    assert abs(float(e) - 0.3) < 1e-4
    s.restore()
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), w))


def test_weights_are_restored_when_the_second_pass_fails():
    net = _net()
    x, y = _batches(1)[0]
    w = [p.detach().clone() for p in net.parameters()]
    s = sam.SharpnessAware(net.parameters(), rho=0.5)

    def boom():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        s.gradient(lambda: F.cross_entropy(net(x), y), boom, net)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), w))
    assert not s.perturbed


def test_tail_classes_and_errors():
    assert sam.tail_classes([500, 100, 20, 5], 20).tolist() == [False, False, True, True]
    with pytest.raises(InvTransferError, match="sam_tail_threshold'=4 selects no class"):
        sam.tail_classes([500, 100, 20, 5], 4)
    with pytest.raises(InvTransferError, match="sam_rho"):
        sam.SharpnessAware(_net().parameters(), rho=-1.0)
