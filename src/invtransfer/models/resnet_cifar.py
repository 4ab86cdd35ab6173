"""CIFAR-style ResNets (He et al. 2016, section 4.2) used as classifiers throughout the project.

This module owns the architecture: a 3x3 stem to 16 channels, three stages of basic blocks at
widths 16/32/64 (strides 1, 2, 2), parameter-free "option A" shortcuts, global average pooling
and a linear head -- or, for the LDAM loss, a cosine head (normalised features times normalised
class weights, no bias; the scale ``s`` is applied by the loss). Depths 20/32/44/56/110 have
``(depth - 2) / 6`` blocks per stage. Conv and linear weights are Kaiming-normal initialised as
in the LDAM-DRW code.

Parameter counts for 10 classes and 3 input channels (linear head): resnet20 269,722;
resnet32 464,154; resnet44 658,586; resnet56 853,018; resnet110 1,727,962. The cosine head has
no bias, so it is 10 parameters fewer.

The forward pass has no data-dependent Python control flow (so ``torch.compile`` traces it once)
and no ``view`` calls, so ``channels_last`` inputs and weights work unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invtransfer.errors import InvTransferError, suggest

MODELS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")

_WIDTHS = (16, 32, 64)
_STRIDES = (1, 2, 2)


class _ShortcutA(nn.Module):
    """Option-A shortcut: subsample spatially and zero-pad the new channels (no parameters).

    Subsampling with ``x[:, :, ::2, ::2]`` keeps the same output size as a stride-2, padding-1
    3x3 convolution for any input size (both give ``ceil(h / 2)``), so odd sizes such as the
    7x7 maps of a 28x28 input line up with the residual branch.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        # Split the zero channels evenly on both sides, as the LDAM-DRW code does (planes // 4
        # each side when the width doubles).
        self.pad_before = extra // 2
        self.pad_after = extra - extra // 2

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad's last four entries address (W, H); the next pair addresses C.
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity or option-A shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = _ShortcutA(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CosineLinear(nn.Module):
    """Cosine classifier: ``scale * normalize(x) @ normalize(W).T``, no bias. ``scale`` is 1 in
    training (outputs in [-1, 1]; the loss applies its own, e.g. LDAM's ``s``) and is set to the
    loss's scale when a trained model is loaded for its probabilities (``load_classifier``); it is
    not part of the state dict."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.scale = 1.0
        # Same (out, in) layout as nn.Linear so the Kaiming init treats both heads alike.
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_normal_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()
        return out if self.scale == 1.0 else self.scale * out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale}"


class CifarResNet(nn.Module):
    """CIFAR-style ResNet of depth ``6n + 2`` for any input size and channel count.

    Attributes ``depth``, ``num_classes``, ``in_channels`` and ``cosine_head`` record how it
    was built. ``forward(x)`` returns logits (cosine similarities with ``cosine_head=True``);
    ``features(x)`` returns the pooled 64-d features the head sees.
    """

    feature_dim = _WIDTHS[-1]

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3,
                 cosine_head: bool = False) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise InvTransferError(
                f"ResNet depth {depth} is not of the form 6n + 2 with n >= 1 (e.g. 20, 32, 44, 56, 110).")
        if num_classes < 1:
            raise InvTransferError(f"num_classes must be at least 1, got {num_classes}.")
        if in_channels < 1:
            raise InvTransferError(f"in_channels must be at least 1, got {in_channels}.")
        self.depth = depth
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.cosine_head = cosine_head
        blocks_per_stage = (depth - 2) // 6

        self.conv1 = nn.Conv2d(in_channels, _WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_WIDTHS[0])
        stages = []
        width_in = _WIDTHS[0]
        for width, stride in zip(_WIDTHS, _STRIDES):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(width_in, width, stride if i == 0 else 1))
                width_in = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = (CosineLinear(self.feature_dim, num_classes) if cosine_head
                              else nn.Linear(self.feature_dim, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # Mirrors LDAM-DRW's `_weights_init`: only the weight matrices are touched; BN keeps
        # (1, 0) and the linear bias keeps PyTorch's default uniform init.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def features(self, x: Tensor) -> Tensor:
        """Pooled penultimate features, shape ``(N, 64)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        # flatten (a reshape) rather than view: pooled channels_last maps are not view-compatible.
        return torch.flatten(self.pool(out), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape ``(N, num_classes)``."""
        return self.fc(self.features(x))


def build_model(name: str, num_classes: int, in_channels: int = 3,
                cosine_head: bool = False) -> nn.Module:
    """Build one of :data:`MODELS` by name, e.g. ``build_model("resnet32", 10)``."""
    if name not in MODELS:
        raise InvTransferError(
            f"Unknown model {name!r}; expected one of {', '.join(MODELS)}.{suggest(name, MODELS)}")
    depth = int(name[len("resnet"):])
    return CifarResNet(depth, num_classes, in_channels=in_channels, cosine_head=cosine_head)
