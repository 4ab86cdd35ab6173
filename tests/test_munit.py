"""Tests for invtransfer.models.munit: shapes, AdaIN, input checks, parameter counts, layouts,
bf16 autocast and one optimisation step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from invtransfer.config import from_dict
from invtransfer.errors import InvTransferError
from invtransfer.models.munit import (
    ContentEncoder,
    Discriminator,
    MunitArch,
    MunitGenerator,
    StyleEncoder,
    check_input,
    count_parameters,
    init_munit_weights,
    lsgan_d_loss,
    lsgan_g_loss,
    pad2d,
)

# A narrow model for tests that need gradients or several passes.
SMALL = dict(width=8, mlp_dim=16, disc_width=8)


def _models(arch: MunitArch, seed: int = 0) -> tuple[MunitGenerator, Discriminator]:
    torch.manual_seed(seed)
    gen, disc = MunitGenerator(arch), Discriminator(arch)
    init_munit_weights(gen, disc)
    return gen, disc


def _images(arch: MunitArch, n: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, arch.channels, arch.image_size, arch.image_size, generator=g) * 2 - 1


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 64])
def test_shapes(channels: int, size: int) -> None:
    # Sizes do not depend on the widths, so a narrow model keeps this fast; the paper widths
    # are exercised in test_adain_uses_style_and_is_deterministic.
    arch = MunitArch(channels=channels, image_size=size, width=16, mlp_dim=32, disc_width=16)
    gen, disc = _models(arch)
    x = _images(arch, n=1)
    with torch.no_grad():
        content, style = gen.encode(x)
        y = gen.decode(content, style)
        d = disc(x)
    assert content.shape == (1, 64, size // 4, size // 4)
    assert style.shape == (1, gen.style_dim) == (1, 8)
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1
    side = {28: 1, 32: 2, 64: 4}[size]
    assert d.shape == (1, 1, side, side) and arch.disc_output_size == side


def test_adain_uses_style_and_is_deterministic() -> None:
    arch = MunitArch()  # paper widths, 3x32
    gen, _ = _models(arch)
    x = _images(arch, n=1)
    with torch.no_grad():
        content, style = gen.encode(x)
        s1 = gen.sample_style(1, generator=torch.Generator().manual_seed(5))
        s2 = gen.sample_style(1, generator=torch.Generator().manual_seed(6))
        a, b, a_again = gen.decode(content, s1), gen.decode(content, s2), gen.decode(content, s1)
        rec = gen(x)
        # A style as (N, D, 1, 1), the layout of the style encoder's last conv, decodes alike.
        a_4d = gen.decode(content, s1[:, :, None, None])
        rec_direct = gen.decode(content, style)
    assert content.shape == (1, 256, 8, 8) and style.shape == (1, 8)
    assert (a - b).abs().mean() > 1e-2
    assert torch.equal(a, a_again) and torch.equal(a, a_4d)
    assert torch.equal(rec, rec_direct)


def test_sample_style_is_seeded() -> None:
    gen, _ = _models(MunitArch(**SMALL))
    s = gen.sample_style(3, generator=torch.Generator().manual_seed(0))
    t = gen.sample_style(3, generator=torch.Generator().manual_seed(0))
    assert s.shape == (3, 8) and torch.equal(s, t)


def test_decode_rejects_bad_style() -> None:
    gen, _ = _models(MunitArch(**SMALL))
    content = torch.zeros(2, gen.arch.content_channels, 8, 8)
    for bad in (torch.zeros(2, 7), torch.zeros(3, 8), torch.zeros(2, 8, 2, 2), torch.zeros(8)):
        with pytest.raises(InvTransferError, match="style code has shape"):
            gen.decode(content, bad)


def test_architecture_options() -> None:
    base = dict(channels=1, image_size=28, width=16, n_res=2, style_dim=5, mlp_dim=24, disc_width=8)
    arch = MunitArch(**base)
    gen, disc = _models(arch)
    x = _images(arch, n=3)
    with torch.no_grad():
        content, style = gen.encode(x)
        y = gen.decode(content, gen.sample_style(3))
    assert content.shape == (3, 16 * 4, 7, 7) and style.shape == (3, 5) and y.shape == x.shape
    assert len(gen.content_encoder.net) == 3 + 3 * 2 + 2 and len(gen.decoder.res) == 2
    assert gen.decoder.mlp[0].in_features == 5 and gen.decoder.mlp[2].out_features == 24
    assert gen.decoder.num_adain_params == 2 * 4 * 64  # scale and shift of two AdaIN layers per block
    # a style code of the old default size (8) is refused, naming the expected one
    with pytest.raises(InvTransferError, match=r"style code has shape \(3, 8\); expected \(N, 5\)"):
        gen.decode(content, torch.zeros(3, 8))

    def counts(**change: int) -> tuple[int, int]:
        a = MunitArch(**dict(base, **change))
        return count_parameters(MunitGenerator(a)), count_parameters(Discriminator(a))

    n_gen, n_disc = counts()
    c, m, s, p = 64, 24, 5, 2 * 4 * 64
    # one more residual block: two 3x3 convs in the content encoder and in the decoder, and
    # 4 * c more AdaIN parameters out of the MLP's last layer
    assert counts(n_res=3) == (n_gen + 4 * _conv_params(c, c, 3) + (m + 1) * 4 * c, n_disc)
    # one more style dimension: the style encoder's 1x1 conv and the MLP's first layer grow
    assert counts(style_dim=6) == (n_gen + (c + 1) + m, n_disc)
    # one more MLP unit: a row/column of each of the MLP's three layers
    assert counts(mlp_dim=25) == (n_gen + (s + 1) + (2 * m + 1) + 1 + p, n_disc)
    # a wider generator grows every generator conv; the discriminator has its own width
    wider_gen, same_disc = counts(width=24)
    assert wider_gen > n_gen and same_disc == n_disc
    assert counts(disc_width=16)[1] > n_disc and counts(disc_width=16)[0] == n_gen


def test_check_input_errors() -> None:
    arch = MunitArch(channels=3, image_size=32)
    check_input(torch.zeros(2, 3, 32, 32), arch)
    for bad in (torch.zeros(2, 1, 32, 32), torch.zeros(2, 3, 28, 28), torch.zeros(3, 32, 32)):
        with pytest.raises(InvTransferError) as info:
            check_input(bad, arch)
        assert "(3, 32, 32)" in str(info.value) and str(tuple(bad.shape)) in str(info.value)
    with pytest.raises(InvTransferError, match="dtype"):
        check_input(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), arch)
    with pytest.raises(InvTransferError, match="tensor"):
        check_input([[0.0]], arch)  # type: ignore[arg-type]
    gen, disc = _models(MunitArch(**SMALL))
    for model in (gen, disc):
        with pytest.raises(InvTransferError, match=r"\(3, 32, 32\)"):
            model(torch.zeros(1, 1, 28, 28))


def test_arch_validation() -> None:
    MunitArch(image_size=28).validate()  # 28 -> 14 -> 7
    cases = [
        (dict(image_size=30, n_downsample=2), "not divisible"),
        (dict(image_size=28, n_downsample=3), "not divisible"),
        (dict(image_size=16, n_downsample=4), "content map"),
        (dict(image_size=8, n_downsample=2), "style"),
        (dict(image_size=32, disc_layers=6), "disc_layers"),
        (dict(n_res=0), "n_res"),
        (dict(channels=0), "channels"),
        (dict(width=2.5), "integer"),
    ]
    for kwargs, match in cases:
        with pytest.raises(InvTransferError, match=match):
            MunitArch(**kwargs).validate()
        with pytest.raises(InvTransferError):
            MunitGenerator(MunitArch(**kwargs))
    # The config loader checks bounds and calls validate().
    assert from_dict(MunitArch, {"channels": 1, "image_size": 28}).content_size == 7
    with pytest.raises(InvTransferError, match="not divisible"):
        from_dict(MunitArch, {"image_size": 30})
    with pytest.raises(InvTransferError, match="unknown config key"):
        from_dict(MunitArch, {"widht": 32})


def _conv_params(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def test_parameter_counts() -> None:
    counts = {}
    for channels, size in ((1, 28), (3, 32)):
        arch = MunitArch(channels=channels, image_size=size)
        gen, disc = MunitGenerator(arch), Discriminator(arch)
        counts[(channels, size)] = (count_parameters(gen), count_parameters(disc))
        print(f"MUNIT {channels}x{size}: generator {counts[(channels, size)][0]:,} "
              f"(content {count_parameters(gen.content_encoder):,}, style "
              f"{count_parameters(gen.style_encoder):,}, decoder {count_parameters(gen.decoder):,}), "
              f"discriminator {counts[(channels, size)][1]:,}")
    # Exact numbers catch architecture drift; the image size does not change them.
    assert counts[(3, 32)] == (15_026_187, 2_757_057)
    assert counts[(1, 28)] == (15_007_369, 2_755_009)

    # Content encoder by hand: 7x7 stem, two 4x4 downsamples, 4 blocks of two 3x3 convs (no
    # norm parameters: instance norm has no affine).
    hand = _conv_params(3, 64, 7) + _conv_params(64, 128, 4) + _conv_params(128, 256, 4) \
        + 4 * 2 * _conv_params(256, 256, 3)
    assert hand == 5_385_856
    assert count_parameters(ContentEncoder(3, 64, 2, 4)) == hand
    # Style encoder by hand: 7x7 stem, 4x4 convs 64->128->256->256->256, 1x1 to the style.
    hand_style = _conv_params(3, 64, 7) + _conv_params(64, 128, 4) + _conv_params(128, 256, 4) \
        + 2 * _conv_params(256, 256, 4) + _conv_params(256, 8, 1)
    assert count_parameters(StyleEncoder(3, 64, 8)) == hand_style
    # Discriminator by hand: 4x4 convs 3->64->128->256->512, 1x1 to one channel.
    hand_disc = _conv_params(3, 64, 4) + _conv_params(64, 128, 4) + _conv_params(128, 256, 4) \
        + _conv_params(256, 512, 4) + _conv_params(512, 1, 1)
    assert counts[(3, 32)][1] == hand_disc


def test_channels_last_matches() -> None:
    arch = MunitArch(channels=3, image_size=32, **SMALL)
    gen, disc = _models(arch)
    x = _images(arch)
    with torch.no_grad():
        ref_c, ref_s = gen.encode(x)
        ref_y, ref_d = gen.decode(ref_c, ref_s), disc(x)
        gen_cl = gen.to(memory_format=torch.channels_last)
        disc_cl = disc.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        c, s = gen_cl.encode(xc)
        y, d = gen_cl.decode(c, s), disc_cl(xc)
    for a, b in ((ref_c, c), (ref_s, s), (ref_y, y), (ref_d, d)):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_bf16_autocast_is_finite() -> None:
    arch = MunitArch(channels=1, image_size=28, **SMALL)
    gen, disc = _models(arch)
    x = _images(arch)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        content, style = gen.encode(x)
        y = gen.decode(content, gen.sample_style(2))
        d = disc(y)
    assert y.shape == x.shape and d.shape == (2, 1, 1, 1)
    for t in (content, style, y, d):
        assert torch.isfinite(t.float()).all()
    assert y.float().abs().max() <= 1


def test_padding_fallback_on_small_maps() -> None:
    x = torch.randn(1, 2, 4, 4)
    assert torch.equal(pad2d(x, 1), F.pad(x, (1, 1, 1, 1), mode="reflect"))
    tiny = torch.randn(1, 2, 1, 1)  # reflect would need size > pad
    padded = pad2d(tiny, 1)
    assert padded.shape == (1, 2, 3, 3) and padded.sum() == tiny.sum()
    # The content encoder on a 4x4 image reaches 1x1 maps inside its residual blocks.
    enc = ContentEncoder(1, 4, 2, 1)
    assert enc(torch.randn(1, 1, 4, 4)).shape == (1, 16, 1, 1)


def test_lsgan_losses() -> None:
    ones, zeros = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    assert lsgan_d_loss(ones, zeros).item() == 0 and lsgan_g_loss(ones).item() == 0
    assert lsgan_d_loss(zeros, ones).item() == 2 and lsgan_g_loss(zeros).item() == 1
    assert math.isclose(lsgan_d_loss(torch.full((4,), 0.5), torch.full((4,), 0.5)).item(), 0.5)


def test_init_munit_weights() -> None:
    gen, disc = _models(MunitArch())
    stem = gen.content_encoder.net[0].conv
    fan_in = stem.weight[0].numel()
    assert math.isclose(stem.weight.std().item(), math.sqrt(2 / fan_in), rel_tol=0.1)
    assert stem.bias.abs().sum() == 0
    big = disc.net[6].conv  # 256 -> 512 conv: many weights, tight estimate of the std
    assert math.isclose(big.weight.std().item(), 0.02, rel_tol=0.05)
    assert all(m.bias.abs().sum() == 0 for m in disc.modules() if isinstance(m, torch.nn.Conv2d))


def test_one_optimisation_step() -> None:
    arch = MunitArch(channels=1, image_size=28, **SMALL)
    gen, disc = _models(arch)
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999), weight_decay=1e-4)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999), weight_decay=1e-4)
    x = _images(arch)
    before_g = [p.detach().clone() for p in gen.parameters()]
    before_d = [p.detach().clone() for p in disc.parameters()]

    s_rand = gen.sample_style(2)
    with torch.no_grad():
        c, _ = gen.encode(x)
        fake = gen.decode(c, s_rand)
    d_loss = lsgan_d_loss(disc(x), disc(fake))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()

    c, s = gen.encode(x)
    fake = gen.decode(c, s_rand)
    c_rec, s_rec = gen.encode(fake)
    g_loss = lsgan_g_loss(disc(fake)) + 10 * F.l1_loss(gen.decode(c, s), x) \
        + F.l1_loss(s_rec, s_rand) + F.l1_loss(c_rec, c.detach())
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()

    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    assert all(not torch.equal(a, b) for a, b in zip(before_g, gen.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, disc.parameters()))
