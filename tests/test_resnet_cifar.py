"""Tests for invtransfer.models.resnet_cifar: sizes, shapes, cosine head, memory format, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from invtransfer.errors import InvTransferError
from invtransfer.models.resnet_cifar import MODELS, CifarResNet, build_model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, expected", [
    ("resnet20", 269_722), ("resnet32", 464_154), ("resnet44", 658_586),
    ("resnet56", 853_018), ("resnet110", 1_727_962),
])
def test_parameter_counts(name: str, expected: int) -> None:
    assert n_params(build_model(name, 10)) == expected
    # The cosine head drops the 10 bias terms.
    assert n_params(build_model(name, 10, cosine_head=True)) == expected - 10


def test_attributes_and_block_counts() -> None:
    for name in MODELS:
        m = build_model(name, 7, in_channels=1)
        assert isinstance(m, CifarResNet)
        assert m.depth == int(name[6:]) and m.num_classes == 7 and m.in_channels == 1
        assert not m.cosine_head
        assert len(m.layer1) == len(m.layer2) == len(m.layer3) == (m.depth - 2) // 6


def test_shortcuts_have_no_parameters() -> None:
    m = build_model("resnet20", 10)
    for block in (m.layer2[0], m.layer3[0]):
        assert sum(p.numel() for p in block.shortcut.parameters()) == 0


@pytest.mark.parametrize("shape, classes", [((2, 1, 28, 28), 49), ((2, 3, 32, 32), 10), ((2, 5, 17, 9), 3)])
def test_output_shapes(shape: tuple[int, ...], classes: int) -> None:
    m = build_model("resnet20", classes, in_channels=shape[1])
    x = torch.randn(shape)
    assert m(x).shape == (2, classes)
    assert m.features(x).shape == (2, 64)


def test_cosine_head_is_cosine_similarity() -> None:
    torch.manual_seed(0)
    m = build_model("resnet20", 6, cosine_head=True).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = m(x)
        feats = m.features(x)
    w = m.fc.weight.detach()
    by_hand = torch.tensor([[float(feats[i] @ w[j] / (feats[i].norm() * w[j].norm())) for j in range(6)]
                            for i in range(3)])
    assert out.abs().max() <= 1.0 + 1e-6
    assert torch.allclose(out, by_hand, atol=1e-5)
    assert getattr(m.fc, "bias", None) is None


def test_channels_last_matches_contiguous() -> None:
    torch.manual_seed(0)
    m = build_model("resnet20", 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        m_cl = m.to(memory_format=torch.channels_last)
        out = m_cl(x.to(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-4)


def test_unknown_name_suggests() -> None:
    with pytest.raises(InvTransferError, match="resnet32"):
        build_model("resnet23", 10)
    with pytest.raises(InvTransferError):
        CifarResNet(21, 10)


def test_kaiming_init_and_backward() -> None:
    torch.manual_seed(0)
    m = build_model("resnet20", 4, in_channels=1, cosine_head=True)
    # Kaiming normal (fan_in, gain sqrt 2): std of the stem conv is sqrt(2 / 9).
    big = build_model("resnet20", 4, in_channels=64)
    assert abs(float(big.conv1.weight.detach().std()) - (2 / (64 * 9)) ** 0.5) < 0.01
    x = torch.randn(4, 1, 28, 28)
    loss = F.cross_entropy(30 * m(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert m.conv1.weight.grad.abs().sum() > 0
