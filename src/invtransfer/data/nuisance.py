"""The synthetic nuisance transforms ROT, BG and DIL as batched tensor functions.

This module owns the three class-agnostic transformations of the K49-{ROT,BG,DIL}-LT data sets
(docs/design.md#nuisances): how their parameters are drawn (:func:`sample_params`) and how a batch is
transformed given one explicit parameter per image (:func:`apply`). Keeping the parameters
explicit serves the three callers alike: building a data set (each image transformed once with
its own draw, stored as uint8 via :func:`transform_uint8`), oracle augmentation during training
(fresh draws per batch) and invariance measurement (many draws per image).

Images are float ``(N, C, H, W)`` in pixel units 0..255. Conventions, checked against kornia 0.9:

* ROT: ``kornia.geometry.transform.rotate`` about the image centre ``((W-1)/2, (H-1)/2)`` in
  pixel-centre coordinates, which is PIL's ``Image.rotate`` centre. A positive angle turns the
  image counter-clockwise as displayed (row 0 at the top), like PIL and like ``np.rot90(k=1)``
  for +90 degrees. Bicubic, zero fill, same output size; clamped to [0, 255] because bicubic
  overshoots at edges.
* BG: pixels whose channels are all below 0.5 count as background (0) and take the value v.
  The 0.5 threshold, not ``== 0``, lets callers that went through normalisation and back (a few
  ULPs off) get the same mask; it is exactly the set of pixels that rounds to 0 in uint8.
* DIL: code ``+k`` dilates, ``-k`` erodes, with a k x k all-ones kernel, one iteration. The
  result matches OpenCV's ``cv2.dilate`` / ``cv2.erode`` with default arguments:
  - border: kornia's default ``border_type="geodesic"`` ignores outside pixels (-inf for dilate,
    +inf for erode), which is OpenCV's default ``BORDER_CONSTANT`` with
    ``morphologyDefaultBorderValue()``;
  - anchor: OpenCV puts the anchor at ``k // 2`` and correlates (no kernel reflection), so for
    even k a 2x2 dilation grows a bright pixel down and right, and a 2x2 erosion grows a dark
    pixel down and right. kornia's ``erosion`` with its default ``origin = k // 2`` does the same,
    but kornia's ``dilation`` reflects the structuring element (Minkowski, scipy's convention),
    which for even k would grow up and left. Dilation is therefore called with
    ``origin = k - 1 - k // 2`` (equal to ``k // 2`` for odd k).
"""

from __future__ import annotations

import numpy as np
import torch
from kornia.geometry.transform import rotate
from kornia.morphology import dilation, erosion

from invtransfer.errors import InvTransferError, suggest

NUISANCES = ("rot", "bg", "dil")

# Parameter distributions of the public code (docs/design.md#nuisances).
ROT_RANGE = (-180.0, 180.0)    # degrees, uniform
BG_RANGE = (0, 100)            # randint high-exclusive: 0..99
DIL_PROB = 0.6                 # probability of dilation (else erosion)
DIL_SIZES = (2, 5)             # dilation kernel sizes randint(2, 5): 2..4
ERODE_SIZES = (1, 3)           # erosion kernel sizes randint(1, 3): 1..2 (1 = identity)
BACKGROUND_THRESHOLD = 0.5


def check_name(name: object) -> str:
    """The canonical (lower-case) nuisance name, or an error suggesting the closest one."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in NUISANCES:
        raise InvTransferError(f"unknown nuisance {name!r}; expected one of {', '.join(NUISANCES)}."
                               f"{suggest(str(key), NUISANCES)}")
    return key  # type: ignore[return-value]


def sample_params(name: str, n: int, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Draw ``n`` parameters of nuisance ``name`` (shape ``(n,)``).

    rot: float32 angles ~ U[-180, 180) degrees. bg: int64 values 0..99. dil: int64 codes, +k
    (dilate, k in 2..4) with probability 0.6, else -k (erode, k in 1..2). Draws happen on the
    generator's device (CPU without one) and are then moved to ``device``, so one seed gives
    the same parameters whatever device consumes them.
    """
    name = check_name(name)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InvTransferError(f"number of parameters n must be an integer >= 0, got {n!r}")
    n = int(n)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    kw = {"generator": generator, "device": gen_device}
    if name == "rot":
        low, high = ROT_RANGE
        params = torch.rand(n, **kw) * (high - low) + low
    elif name == "bg":
        params = torch.randint(*BG_RANGE, (n,), **kw)
    else:
        dilate = torch.rand(n, **kw) < DIL_PROB
        grow = torch.randint(*DIL_SIZES, (n,), **kw)
        shrink = torch.randint(*ERODE_SIZES, (n,), **kw)
        params = torch.where(dilate, grow, -shrink)
    return params.to(device) if device is not None else params


def _check_batch(images: torch.Tensor, params: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvTransferError(f"images must be a (N, C, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise InvTransferError(f"images must be a float tensor in pixel units 0..255, got dtype {images.dtype}")
    if not isinstance(params, torch.Tensor) or params.ndim != 1 or params.shape[0] != images.shape[0]:
        got = tuple(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
        raise InvTransferError(f"params must be a 1-D tensor with one entry per image "
                               f"({images.shape[0]}), got {got}")


def _rot(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    out = rotate(images, angles.to(images), mode="bicubic", padding_mode="zeros", align_corners=True)
    return out.clamp_(0.0, 255.0)


def _bg(images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    background = (images < BACKGROUND_THRESHOLD).all(dim=1, keepdim=True)
    fill = values.to(images).view(-1, 1, 1, 1).expand_as(images)
    return torch.where(background, fill, images)


def _dil(images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    codes = codes.to(images.device)
    if codes.is_floating_point() and not torch.equal(codes, codes.round()):
        raise InvTransferError("dil params must be integer kernel codes (+k dilate, -k erode)")
    codes = codes.long()
    if (codes == 0).any():
        raise InvTransferError("dil param 0 is not a kernel code; use +k to dilate or -k to erode (k >= 1)")
    out = images.clone()
    for code in torch.unique(codes).tolist():
        size = abs(code)
        if size == 1:  # a 1x1 kernel is the identity for both operations
            continue
        rows = (codes == code).nonzero(as_tuple=True)[0]
        kernel = torch.ones(size, size, dtype=images.dtype, device=images.device)
        if code > 0:
            anchor = size - 1 - size // 2  # OpenCV's anchor after kornia's kernel reflection
            out[rows] = dilation(images[rows], kernel, origin=[anchor, anchor])
        else:
            out[rows] = erosion(images[rows], kernel)
    return out


def apply(name: str, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Transform a float ``(N, C, H, W)`` batch in pixel units, one parameter per image.

    Returns a new tensor of the same shape, dtype and device. Half-precision inputs are computed
    in float32 (kornia's interpolation and morphology expect it) and cast back.
    """
    name = check_name(name)
    _check_batch(images, params)
    dtype = images.dtype
    x = images if dtype in (torch.float32, torch.float64) else images.float()
    if images.shape[0] == 0:
        return images.clone()
    if name == "rot":
        out = _rot(x, params)
    elif name == "bg":
        out = _bg(x, params)
    else:
        out = _dil(x, params)
    return out.to(dtype)


def transform_uint8(name: str, images: np.ndarray, params: torch.Tensor, batch_size: int = 4096,
                    *, device: torch.device | str | None = None) -> np.ndarray:
    """Transform uint8 ``(N, H, W, C)`` images, rounding to nearest and clamping to 0..255.

    Processes ``batch_size`` images at a time on ``device`` (CPU by default) to bound memory.
    """
    name = check_name(name)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        desc = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise InvTransferError(f"images must be a uint8 array of shape (N, H, W, C) (add a channel axis "
                               f"for greyscale), got {desc}")
    if not isinstance(params, torch.Tensor) or params.ndim != 1 or params.shape[0] != images.shape[0]:
        got = tuple(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
        raise InvTransferError(f"params must be a 1-D tensor with one entry per image ({images.shape[0]}), got {got}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InvTransferError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    out = np.empty_like(images)
    for start in range(0, images.shape[0], int(batch_size)):
        stop = start + int(batch_size)
        chunk = torch.from_numpy(images[start:stop]).to(device).permute(0, 3, 1, 2).float()
        result = apply(name, chunk, params[start:stop].to(chunk.device))
        out[start:stop] = result.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return out
