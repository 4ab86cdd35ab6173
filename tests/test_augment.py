"""Strong batch augmentation (data/augment.py) and the losses on mixed targets."""

import math

import pytest
import torch
import torch.nn.functional as F

from invtransfer.data import augment, batches
from invtransfer.errors import InvTransferError
from invtransfer.train import losses

POLICIES = [p for p in augment.POLICIES if p != "none"]


def _images(n=24, c=3, size=12, seed=0):
    return torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(seed)).float() / 255


@pytest.mark.parametrize("name", POLICIES)
def test_policy_is_fixed_by_its_seed_and_leaves_the_global_generator(name):
    policy = augment.Policy(name, group=4)
    x = _images()
    torch.manual_seed(7)
    state = torch.get_rng_state()
    a = policy(x, 11)
    assert torch.equal(torch.get_rng_state(), state)  # kornia's draws do not leak into training's RNG
    torch.rand(100)  # another global state: the same seed still gives the same images
    assert torch.equal(policy(x, 11), a)
    assert a.shape == x.shape and a.dtype == torch.float32 and 0 <= float(a.min()) and float(a.max()) <= 1
    # Other seeds give other images (with 6 groups of 4 some operation changes something).
    assert any(not torch.equal(policy(x, s), a) for s in (12, 13, 14))


@pytest.mark.parametrize("name", POLICIES)
def test_policy_groups_draw_independently(name):
    """Each group of rows is one kornia call with its own draw; a row's output depends on its
    group's seed and content only, so the same group content at the same position reproduces."""
    policy = augment.Policy(name, group=4)
    x = _images(8)
    out = policy(x, 3)
    y = x.clone()
    y[4:] = _images(4, seed=9)  # change the second group only
    assert torch.equal(policy(y, 3)[:4], out[:4])
    # Identical groups at different positions get different draws (per-group seeds).
    twin = torch.cat([x[:4]] * 6)
    res = policy(twin, 5)
    assert any(not torch.equal(res[:4], res[i:i + 4]) for i in range(4, 24, 4))


def test_grey_images_stay_grey_and_every_operation_runs():
    """Fashion-MNIST-like 1-channel images: kornia's colour operations need RGB; the policy runs
    them on three equal channels and returns one."""
    x = _images(32, c=1, size=10)
    for name in POLICIES:
        policy = augment.Policy(name, group=1)  # 32 draws: most operations of each policy
        out = policy(x, 0)
        assert out.shape == x.shape


def test_policy_errors_name_the_value():
    with pytest.raises(InvTransferError, match="rotate"):
        augment.Policy("rotate")
    with pytest.raises(InvTransferError, match="cifar100"):
        augment.Policy("autoaugment", autoaugment_policy="cifar100")
    with pytest.raises(InvTransferError, match="2 channels|channels"):
        augment.Policy("trivialaugment")(torch.rand(2, 2, 8, 8), 0)


def test_no_mixing_without_alpha():
    g = torch.Generator().manual_seed(0)
    assert augment.draw_mix(8, 4, 4, 0.0, 0.0, g) is None
    with pytest.raises(InvTransferError, match="augment.mixup"):
        augment.draw_mix(8, 4, 4, -1.0, 0.0, g)


def test_mixup_images_and_targets():
    x = torch.randn(16, 3, 5, 5)
    labels = torch.arange(16) % 4
    d = augment.draw_mix(16, 5, 5, 0.4, 0.0, batches.step_generator(0, 2, 3, stream=augment.STREAM))
    assert d.kind == "mixup" and 0 <= d.lam <= 1
    assert sorted(d.partner.tolist()) == list(range(16))  # a permutation of the batch
    mixed = d.images(x)
    assert torch.allclose(mixed, d.lam * x + (1 - d.lam) * x[d.partner])
    t = d.targets(labels)
    assert torch.equal(t.a, labels) and torch.equal(t.b, labels[d.partner])
    soft = t.soft(4)
    assert torch.allclose(soft.sum(1), torch.ones(16))  # mixed targets sum to one
    assert torch.allclose(soft, d.lam * F.one_hot(labels, 4) + (1 - d.lam) * F.one_hot(labels[d.partner], 4))
    # Rows of a shard are the same rows of the whole batch (several processes).
    assert torch.equal(d.images(x, (5, 11)), mixed[5:11])
    assert torch.equal(d.targets(labels, (5, 11)).b, t.b[5:11])
    # The same step draws the same; another step draws another.
    again = augment.draw_mix(16, 5, 5, 0.4, 0.0, batches.step_generator(0, 2, 3, stream=augment.STREAM))
    assert again.lam == d.lam and torch.equal(again.partner, d.partner)
    other = augment.draw_mix(16, 5, 5, 0.4, 0.0, batches.step_generator(0, 2, 4, stream=augment.STREAM))
    assert other.lam != d.lam


def test_cutmix_lam_is_the_share_of_own_pixels():
    x = torch.zeros(12, 1, 9, 7)
    x[:, 0] = torch.arange(12).view(12, 1, 1).float()  # row i holds value i everywhere
    labels = torch.arange(12)
    for step in range(20):
        d = augment.draw_mix(12, 9, 7, 0.0, 1.0, batches.step_generator(1, 0, step, stream=augment.STREAM))
        assert d.kind == "cutmix"
        out = d.images(x)
        own = (out == x).float().mean(dim=(1, 2, 3))
        moved = d.partner != torch.arange(12)
        assert torch.allclose(own[moved], torch.full((int(moved.sum()),), d.lam, dtype=torch.float32))
        soft = d.targets(labels).soft(12)
        assert torch.allclose(soft.sum(1), torch.ones(12))


def test_both_alphas_alternate_between_mixup_and_cutmix():
    kinds = {augment.draw_mix(8, 4, 4, 1.0, 1.0, batches.step_generator(0, 0, s, stream=3)).kind for s in range(30)}
    assert kinds == {"mixup", "cutmix"}


def test_batch_augment_policy_sees_8bit_pixels_and_returns_the_normalisation():
    norm = batches.Normalizer([0.3, 0.4, 0.5], [0.2, 0.25, 0.3])
    u8 = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8)
    x = norm(u8)
    seen = {}

    class Spy:
        def __call__(self, pixels, seed):
            seen["pixels"] = pixels
            return pixels

    aug = augment.BatchAugment(Spy())
    draw = aug.draw(8, 6, 6, torch.Generator().manual_seed(0))
    out = aug.images(x, draw, norm)
    assert torch.equal(seen["pixels"] * 255, u8.float())  # exactly the 8-bit images
    assert torch.allclose(out, x, atol=1e-5)
    assert aug.targets(torch.arange(8), draw) is not None


def _loss(name, counts=(50, 20, 5, 2)):
    return losses.build_loss(name, list(counts))


@pytest.mark.parametrize("name", list(losses.LOSSES))
def test_every_loss_takes_mixed_targets(name):
    fn = _loss(name)
    logits = torch.randn(10, 4)
    if fn.needs_cosine_head:
        logits = logits.tanh()
    a, b = torch.randint(0, 4, (10,)), torch.randint(0, 4, (10,))
    w = torch.tensor([0.2, 0.5, 1.3, 2.0])
    for weight in (None, w):
        lam = 0.3
        mixed = fn(logits, augment.MixedTargets(a, b, lam), class_weight=weight)
        assert torch.allclose(mixed, lam * fn(logits, a, weight) + (1 - lam) * fn(logits, b, weight))
        assert torch.equal(fn(logits, augment.MixedTargets(a, b, 1.0), weight), fn(logits, a, weight))


def test_mixed_cross_entropy_and_balanced_softmax_are_soft_target_cross_entropy():
    counts = [50, 20, 5, 2]
    logits = torch.randn(10, 4)
    t = augment.MixedTargets(torch.randint(0, 4, (10,)), torch.randint(0, 4, (10,)), 0.35)
    soft = t.soft(4)
    assert torch.allclose(_loss("ce")(logits, t), F.cross_entropy(logits, soft))
    prior = torch.log(torch.tensor(counts, dtype=torch.float32))
    assert torch.allclose(_loss("balanced_softmax")(logits, t), F.cross_entropy(logits + prior, soft))
    assert torch.allclose(_loss("logit_adjust")(logits, t), F.cross_entropy(logits + prior, soft), atol=1e-6)


def test_mixed_ldam_applies_each_labels_own_margin():
    counts = [50, 20, 5, 2]
    fn = _loss("ldam", counts)
    z = torch.randn(6, 4).tanh()
    a = torch.tensor([0, 0, 1, 2, 3, 3])
    b = torch.tensor([3, 2, 3, 0, 1, 3])
    lam = 0.6
    m = fn.margins
    ref = (lam * F.cross_entropy(30 * (z - F.one_hot(a, 4) * m), a)
           + (1 - lam) * F.cross_entropy(30 * (z - F.one_hot(b, 4) * m), b))
    assert torch.allclose(fn(z, augment.MixedTargets(a, b, lam)), ref)
    # Not the loss of one soft target with mixed margins.
    blended = 30 * (z - lam * F.one_hot(a, 4) * m - (1 - lam) * F.one_hot(b, 4) * m)
    assert not torch.allclose(ref, F.cross_entropy(blended, augment.MixedTargets(a, b, lam).soft(4)))
    assert math.isfinite(float(ref))
