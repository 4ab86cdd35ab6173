"""MUNIT networks used within one domain (docs/design.md#generator), written from the spec.

This module owns the generative model's architecture and nothing about its training loop:

* :class:`MunitArch` — the architecture hyper-parameters (paper values by default), a config
  dataclass that :func:`invtransfer.config.from_dict` can build and validate;
* :class:`ContentEncoder`, :class:`StyleEncoder`, :class:`Decoder` and the wrapper
  :class:`MunitGenerator` (``encode``/``decode``/``forward``);
* :class:`Discriminator` (one scale, patch output) and the least-squares GAN losses
  :func:`lsgan_d_loss` / :func:`lsgan_g_loss`;
* :func:`init_munit_weights`, :func:`check_input`, :func:`count_parameters`.

Conventions and decisions (where the paper is silent; docs/design.md#generator):

* Style codes are flat tensors of shape ``(N, style_dim)``; :meth:`MunitGenerator.decode` also
  accepts ``(N, style_dim, 1, 1)``. A transformation sample is ``randn(N, style_dim)``.
* Padding is reflect everywhere it is spatial (generator and discriminator). Reflect padding
  needs ``pad < size`` on both spatial dims; on a smaller map we fall back to zero padding
  (:func:`pad2d`). With the validated sizes 28, 32 and 64 the fallback never triggers; it only
  keeps the building blocks usable on other inputs.
* Instance norm (content encoder and decoder residual blocks) has no learnable affine; AdaIN
  uses the MLP output directly as per-channel scale and shift (no ``1 +`` offset), as MUNIT does.
* The decoder's layer norm normalises each sample over (C, H, W) with the population standard
  deviation, ``(x - mean) / (std + eps)``, then applies a learnable per-channel scale (init 1)
  and shift (init 0).
* All normalisation statistics are computed in float32 and cast back to the input dtype, so
  bf16 autocast cannot lose precision in the variance of a 256-channel map.
* The modules are layout agnostic: ``channels_last`` inputs/weights give the same numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from invtransfer.config import option
from invtransfer.errors import InvTransferError

_EPS = 1e-5
# The style encoder always has four stride-2 convs: two that double the width, two that keep it.
_STYLE_DOWNSAMPLES = 4


def _down(size: int, n: int, kernel: int = 4, stride: int = 2, pad: int = 1) -> list[int]:
    """Spatial sizes after each of ``n`` convs (0 once a conv would have no output)."""
    sizes = []
    for _ in range(n):
        span = size + 2 * pad - kernel
        size = span // stride + 1 if span >= 0 and size > 0 else 0
        sizes.append(size)
    return sizes


@dataclass
class MunitArch:
    """Architecture of the MUNIT generator and discriminator (paper values by default)."""

    channels: int = option(3, "image channels (1 grey, 3 colour)", ge=1)
    image_size: int = option(32, "square image side in pixels (28, 32 and 64 are tested)", ge=1)
    width: int = option(64, "width of the first conv; the content encoder doubles it per downsample",
                        ge=1)
    n_downsample: int = option(2, "stride-2 downsamples in the content encoder (upsamples in the "
                                  "decoder)", ge=0)
    n_res: int = option(4, "residual blocks in the content encoder and in the decoder", ge=1)
    style_dim: int = option(8, "dimension of the style code", ge=1)
    mlp_dim: int = option(256, "hidden width of the MLP that maps a style to AdaIN parameters", ge=1)
    disc_width: int = option(64, "width of the first discriminator conv (doubles per layer)", ge=1)
    disc_layers: int = option(4, "stride-2 conv layers in the discriminator", ge=1)

    @property
    def content_channels(self) -> int:
        """Channels of the content code."""
        return self.width * 2 ** self.n_downsample

    @property
    def content_size(self) -> int:
        """Spatial side of the content code."""
        return self.image_size // 2 ** self.n_downsample

    @property
    def disc_output_size(self) -> int:
        """Spatial side of the discriminator's patch output."""
        return _down(self.image_size, self.disc_layers)[-1]

    def validate(self) -> None:
        """Raise :class:`InvTransferError` if the sizes cannot work together."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise InvTransferError(f"MUNIT architecture '{f.name}': got {v!r}, expected an integer.")
        lows = {"channels": 1, "image_size": 1, "width": 1, "n_downsample": 0, "n_res": 1,
                "style_dim": 1, "mlp_dim": 1, "disc_width": 1, "disc_layers": 1}
        for name, low in lows.items():
            if getattr(self, name) < low:
                why = " (the style acts only through the AdaIN residual blocks)" if name == "n_res" else ""
                raise InvTransferError(f"MUNIT architecture '{name}': got {getattr(self, name)}, "
                                       f"expected a value >= {low}{why}.")
        factor = 2 ** self.n_downsample
        if self.image_size % factor:
            raise InvTransferError(
                f"MUNIT architecture: image_size {self.image_size} is not divisible by "
                f"2**n_downsample = {factor}, so the decoder could not return to the input size; "
                f"choose n_downsample so that it divides (e.g. 28 with 2: 28 -> 14 -> 7).")
        if self.content_size < 2:
            # Instance norm over a single pixel maps every input to zero: the content is lost.
            raise InvTransferError(
                f"MUNIT architecture: image_size {self.image_size} with n_downsample "
                f"{self.n_downsample} leaves a {self.content_size}x{self.content_size} content map; "
                f"at least 2x2 is needed (use fewer downsamples).")
        style_sizes = _down(self.image_size, _STYLE_DOWNSAMPLES)
        if style_sizes[-1] < 1:
            raise InvTransferError(
                f"MUNIT architecture: image_size {self.image_size} is too small for the style "
                f"encoder's {_STYLE_DOWNSAMPLES} stride-2 convs (sizes {style_sizes}); use at least 16.")
        disc_sizes = _down(self.image_size, self.disc_layers)
        if disc_sizes[-1] < 1:
            raise InvTransferError(
                f"MUNIT architecture: disc_layers {self.disc_layers} shrink image_size "
                f"{self.image_size} to nothing (sizes {disc_sizes}); use fewer discriminator layers.")


# --------------------------------------------------------------------------------------------
# Building blocks


def pad2d(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad the last two dims by ``pad``; zero-pad where the map is too small to reflect."""
    if pad == 0:
        return x
    mode = "reflect" if pad < x.shape[-1] and pad < x.shape[-2] else "constant"
    return F.pad(x, (pad, pad, pad, pad), mode=mode)


def instance_norm(x: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Per-sample, per-channel normalisation over (H, W), statistics in float32."""
    xf = x.float()
    var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, unbiased=False)
    return ((xf - mean) * torch.rsqrt(var + eps)).to(x.dtype)


class PadConv(nn.Module):
    """A conv with explicit (reflect, falling back to zero) padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, pad: int = 0) -> None:
        super().__init__()
        self.pad = pad
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(pad2d(x, self.pad))


class InstanceNorm(nn.Module):
    """Instance norm without affine parameters (float32 statistics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm(x)


class AdaIN(nn.Module):
    """Instance norm whose per-channel scale and shift are given per sample at call time."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, unbiased=False)
        y = (xf - mean) * torch.rsqrt(var + _EPS)
        y = y * scale.float()[:, :, None, None] + shift.float()[:, :, None, None]
        return y.to(x.dtype)


class LayerNorm2d(nn.Module):
    """MUNIT-style layer norm: normalise each sample over (C, H, W), then a per-channel affine."""

    def __init__(self, channels: int, eps: float = _EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(1, 2, 3), keepdim=True, unbiased=False)
        y = (xf - mean) / (var.sqrt() + self.eps)
        y = y * self.weight.float()[None, :, None, None] + self.bias.float()[None, :, None, None]
        return y.to(x.dtype)


class ResBlock(nn.Module):
    """Two 3x3 convs with instance norm and a ReLU between them, identity skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = PadConv(channels, channels, 3, pad=1)
        self.conv2 = PadConv(channels, channels, 3, pad=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(instance_norm(self.conv1(x)))
        return x + instance_norm(self.conv2(h))


class AdaResBlock(nn.Module):
    """A residual block whose two instance norms are AdaIN layers."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv1 = PadConv(channels, channels, 3, pad=1)
        self.norm1 = AdaIN(channels)
        self.conv2 = PadConv(channels, channels, 3, pad=1)
        self.norm2 = AdaIN(channels)

    @property
    def num_adain_params(self) -> int:
        """Scale and shift for each of the two AdaIN layers."""
        return 4 * self.channels

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        s1, b1, s2, b2 = params.split(self.channels, dim=1)
        h = F.relu(self.norm1(self.conv1(x), s1, b1))
        return x + self.norm2(self.conv2(h), s2, b2)


# --------------------------------------------------------------------------------------------
# Networks


class ContentEncoder(nn.Module):
    """Image -> content code ``(N, width * 2**n_downsample, H / 2**n_downsample, W / ...)``."""

    def __init__(self, channels: int, width: int, n_downsample: int, n_res: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [PadConv(channels, width, 7, pad=3), InstanceNorm(), nn.ReLU()]
        dim = width
        for _ in range(n_downsample):
            layers += [PadConv(dim, dim * 2, 4, stride=2, pad=1), InstanceNorm(), nn.ReLU()]
            dim *= 2
        layers += [ResBlock(dim) for _ in range(n_res)]
        self.net = nn.Sequential(*layers)
        self.out_channels = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class StyleEncoder(nn.Module):
    """Image -> style code ``(N, style_dim)``; no normalisation, global average pool."""

    def __init__(self, channels: int, width: int, style_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [PadConv(channels, width, 7, pad=3), nn.ReLU()]
        dim = width
        for i in range(_STYLE_DOWNSAMPLES):
            out = dim * 2 if i < 2 else dim
            layers += [PadConv(dim, out, 4, stride=2, pad=1), nn.ReLU()]
            dim = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, style_dim, 1)]
        self.net = nn.Sequential(*layers)
        self.style_dim = style_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class Decoder(nn.Module):
    """(content, style) -> image in [-1, 1]: AdaIN residual blocks, upsampling, tanh."""

    def __init__(self, channels: int, content_channels: int, n_upsample: int, n_res: int,
                 style_dim: int, mlp_dim: int) -> None:
        super().__init__()
        dim = content_channels
        self.res = nn.ModuleList(AdaResBlock(dim) for _ in range(n_res))
        self.num_adain_params = sum(b.num_adain_params for b in self.res)
        self.mlp = nn.Sequential(
            nn.Linear(style_dim, mlp_dim), nn.ReLU(),
            nn.Linear(mlp_dim, mlp_dim), nn.ReLU(),
            nn.Linear(mlp_dim, self.num_adain_params),
        )
        up: list[nn.Module] = []
        for _ in range(n_upsample):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), PadConv(dim, dim // 2, 5, pad=2),
                   LayerNorm2d(dim // 2), nn.ReLU()]
            dim //= 2
        up += [PadConv(dim, channels, 7, pad=3), nn.Tanh()]
        self.up = nn.Sequential(*up)
        self.style_dim = style_dim

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        params = self.mlp(style.flatten(1))
        h = content
        for block, p in zip(self.res, params.split([b.num_adain_params for b in self.res], dim=1)):
            h = block(h, p)
        return self.up(h)


def _resolve(arch: MunitArch | None) -> MunitArch:
    arch = MunitArch() if arch is None else arch
    if not isinstance(arch, MunitArch):
        raise InvTransferError(f"expected a MunitArch, got {type(arch).__name__}.")
    arch.validate()
    return arch


class MunitGenerator(nn.Module):
    """Content encoder + style encoder + decoder of one MUNIT domain."""

    def __init__(self, arch: MunitArch | None = None) -> None:
        super().__init__()
        self.arch = _resolve(arch)
        a = self.arch
        self.style_dim = a.style_dim
        self.content_encoder = ContentEncoder(a.channels, a.width, a.n_downsample, a.n_res)
        self.style_encoder = StyleEncoder(a.channels, a.width, a.style_dim)
        self.decoder = Decoder(a.channels, a.content_channels, a.n_downsample, a.n_res,
                               a.style_dim, a.mlp_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ``(N, C, H, W)`` -> (content ``(N, Cc, Hc, Wc)``, style ``(N, style_dim)``)."""
        check_input(x, self.arch)
        return self.content_encoder(x), self.style_encoder(x)

    def decode(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Content and style ``(N, style_dim)`` (or ``(N, style_dim, 1, 1)``) -> image in [-1, 1]."""
        ok = (style.dim() == 2 or (style.dim() == 4 and tuple(style.shape[2:]) == (1, 1)))
        if not ok or style.shape[1] != self.style_dim or style.shape[0] != content.shape[0]:
            raise InvTransferError(
                f"style code has shape {tuple(style.shape)}; expected (N, {self.style_dim}) or "
                f"(N, {self.style_dim}, 1, 1) with N = {content.shape[0]} as in the content code.")
        return self.decoder(content, style)

    def sample_style(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` random style codes ``s ~ N(0, I)`` on the model's device, shape ``(n, style_dim)``."""
        p = next(self.parameters())
        s = torch.randn(n, self.style_dim, generator=generator,
                        device=generator.device if generator is not None else p.device)
        return s.to(device=p.device, dtype=p.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``decode(*encode(x))``."""
        content, style = self.encode(x)
        return self.decoder(content, style)


class Discriminator(nn.Module):
    """One-scale patch discriminator: stride-2 4x4 convs with LeakyReLU(0.2), then a 1x1 conv."""

    def __init__(self, arch: MunitArch | None = None) -> None:
        super().__init__()
        self.arch = _resolve(arch)
        a = self.arch
        layers: list[nn.Module] = []
        cin, dim = a.channels, a.disc_width
        for _ in range(a.disc_layers):
            layers += [PadConv(cin, dim, 4, stride=2, pad=1), nn.LeakyReLU(0.2)]
            cin, dim = dim, dim * 2
        layers.append(nn.Conv2d(cin, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``(N, C, H, W)`` -> patch scores ``(N, 1, h, w)``, ``h, w >= 1``."""
        check_input(x, self.arch)
        return self.net(x)


# --------------------------------------------------------------------------------------------
# Losses and utilities


def lsgan_d_loss(real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss ``mean((real - 1)^2) + mean(fake^2)``, in float32."""
    return ((real_out.float() - 1) ** 2).mean() + (fake_out.float() ** 2).mean()


def lsgan_g_loss(fake_out: torch.Tensor) -> torch.Tensor:
    """Least-squares generator loss ``mean((fake - 1)^2)``, in float32."""
    return ((fake_out.float() - 1) ** 2).mean()


@torch.no_grad()
def init_munit_weights(gen: nn.Module | None, disc: nn.Module | None) -> None:
    """Kaiming-normal (fan_in, a=0) generator convs/linears, N(0, 0.02) discriminator convs.

    Biases are zeroed; layer-norm affines keep their (1, 0) initialisation.
    """
    if gen is not None:
        for m in gen.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    if disc is not None:
        for m in disc.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def check_input(x: torch.Tensor, arch: MunitArch) -> None:
    """Raise :class:`InvTransferError` unless ``x`` is a batch ``(N, C, H, W)`` this model takes."""
    expected = (arch.channels, arch.image_size, arch.image_size)
    if not isinstance(x, torch.Tensor):
        raise InvTransferError(f"MUNIT input must be a tensor of shape (N, C, H, W) = (N, "
                               f"{', '.join(map(str, expected))}); got {type(x).__name__}.")
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise InvTransferError(
            f"MUNIT input has shape {tuple(x.shape)}; this model expects (N, C, H, W) with "
            f"(C, H, W) = {expected} (channels={arch.channels}, image_size={arch.image_size}).")
    if not x.is_floating_point():
        raise InvTransferError(f"MUNIT input has dtype {x.dtype}; expected a floating-point "
                               f"tensor scaled to [-1, 1].")


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements in ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters())
