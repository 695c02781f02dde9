"""The 14 image operations of AutoAugment-style policies (DiffAutoML Sec. 3.1 / 4.1, following PBA, Ho et al.
2019; equation and section numbers refer to ``../shared/papers/diffautoml.txt``), batched on tensors.

Every operation takes a batch ``x`` (N, C, H, W) of pixels in [0, 1] on any device and one parameter per image
(a tensor (N,)), and returns (N, C, H, W) in [0, 1]; no per-image Python loop, no PIL. Normalisation (the data
sets' per-channel mean and std) is a separate step: :func:`denormalize` before the operations, :func:`normalize`
after them. The photometric operations follow Pillow's ``ImageOps`` / ``ImageEnhance`` definitions (what the
policies were designed with) and the geometric ones Pillow's affine transforms with nearest-neighbour sampling
and black fill; ``tests/test_augment_ops.py`` checks each against Pillow on small 8-bit images.

Where kornia has the operation with Pillow's semantics it is used (equalize, posterize, solarize, sharpness,
colour and contrast blends, the affine warp); the rest (autocontrast, multiplicative brightness, the matrices of
Pillow's rotate / shear / translate) are a few lines of torch.

Magnitudes: each operation of a policy gets a magnitude ``m`` in [0, 10] (drawn uniformly, Sec. 3.1) and, for
the symmetric ones, a random sign. :data:`OPERATIONS` maps ``m`` to the operation's parameter with PBA's ranges:
rotate ±30 degrees, shear ±0.3, translate ±10/32 of the side (PBA's 10 pixels on 32-pixel CIFAR images),
posterize to 8 - 4 m/10 bits, solarize above 1 - m/10 (of 256 levels), colour / contrast / brightness /
sharpness factor 0.1 + 1.8 m/10 (1 at m = 5 leaves the image unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import kornia
import torch

FILL = 0.0          # what geometric operations show outside the source image (black, Pillow's default fill)


# ---- normalisation: a separate step around the operations -----------------------------------------------------------
def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised images (N, C, H, W) -> pixels in [0, 1] (``x * std + mean`` per channel, clamped)."""
    mean_t, std_t = _channel_vector(mean, x), _channel_vector(std, x)
    return kornia.enhance.denormalize(x, mean_t, std_t).clamp(0.0, 1.0)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Pixels in [0, 1] (N, C, H, W) -> ``(x - mean) / std`` per channel."""
    return kornia.enhance.normalize(x, _channel_vector(mean, x), _channel_vector(std, x))


def _channel_vector(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(tuple(values), dtype=like.dtype, device=like.device)


# ---- photometric operations -----------------------------------------------------------------------------------------
def identity(x: torch.Tensor, parameter: torch.Tensor | None = None) -> torch.Tensor:
    return x


def autocontrast(x: torch.Tensor, parameter: torch.Tensor | None = None) -> torch.Tensor:
    """Stretch every channel of every image to [0, 1] (Pillow ``ImageOps.autocontrast``, no cut-off); a constant
    channel is left as it is."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    spread = hi - lo
    flat = spread <= 0
    scale = torch.where(flat, torch.ones_like(spread), 1.0 / torch.where(flat, torch.ones_like(spread), spread))
    return ((x - torch.where(flat, torch.zeros_like(lo), lo)) * scale).clamp(0.0, 1.0)


def equalize(x: torch.Tensor, parameter: torch.Tensor | None = None) -> torch.Tensor:
    """Histogram equalisation of every channel of every image (Pillow ``ImageOps.equalize`` on 8-bit levels)."""
    return kornia.enhance.equalize(x)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the ``bits`` (N,) high bits of every 8-bit level (Pillow ``ImageOps.posterize``)."""
    return kornia.enhance.posterize(x, bits.to(device=x.device, dtype=torch.long))


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert (``1 - x``) every pixel at or above ``threshold`` (N,) (Pillow ``ImageOps.solarize`` with the
    threshold divided by 255)."""
    return kornia.enhance.solarize(x, threshold.to(x))


def color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's grayscale (ITU-R 601 luma): 0 gray, 1 unchanged (Pillow ``ImageEnhance.Color``)."""
    if x.shape[-3] == 1:
        return x
    return kornia.enhance.adjust_saturation_with_gray_subtraction(x, factor.to(x))


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean luma of the image: 0 flat gray, 1 unchanged (Pillow ``ImageEnhance.Contrast``)."""
    return kornia.enhance.adjust_contrast_with_mean_subtraction(x, factor.to(x))


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with black, i.e. scale every pixel by ``factor`` (N,), clamped (Pillow ``ImageEnhance.Brightness``;
    kornia's ``adjust_brightness`` adds instead)."""
    return (x * factor.to(x).view(-1, 1, 1, 1)).clamp(0.0, 1.0)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image smoothed by Pillow's 3x3 SMOOTH kernel (border pixels kept): 0 smooth, 1 unchanged,
    above 1 sharper (Pillow ``ImageEnhance.Sharpness``)."""
    return kornia.enhance.sharpness(x, factor.to(x)).clamp(0.0, 1.0)


# ---- geometric operations: Pillow's affine transforms ---------------------------------------------------------------
def warp(x: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Resample every image through its inverse map ``inverse`` (N, 2, 3): the output point (u, v) shows the input
    point ``inverse @ (u, v, 1)``, in Pillow's continuous pixel coordinates (pixel (i, j) covers [i, i + 1) x
    [j, j + 1), as ``Image.transform(size, Image.AFFINE, data)`` reads its six coefficients). Nearest-neighbour
    sampling, :data:`FILL` outside the image (kornia ``warp_affine``)."""
    n, _, h, w = x.shape
    inverse = inverse.to(x)
    linear, shift = inverse[:, :, :2], inverse[:, :, 2]
    # the same map in kornia's pixel-index coordinates (pixel centres at integers): p_in = A p_out + A/2 + t - 1/2
    shift_index = shift + linear.sum(-1) * 0.5 - 0.5
    homogeneous = torch.zeros(n, 3, 3, dtype=x.dtype, device=x.device)
    homogeneous[:, :2, :2], homogeneous[:, :2, 2], homogeneous[:, 2, 2] = linear, shift_index, 1.0
    forward = torch.linalg.inv(homogeneous)[:, :2]                    # kornia takes the source -> output map
    fill = torch.full((x.shape[1],), FILL, dtype=x.dtype, device=x.device)
    return kornia.geometry.transform.warp_affine(x, forward, (h, w), mode="nearest", padding_mode="fill",
                                                 align_corners=True, fill_value=fill)


def _affine_rows(a, b, c, d, e, f) -> torch.Tensor:
    """(N, 2, 3) from six (N,) tensors: rows (a, b, c) and (d, e, f)."""
    return torch.stack([torch.stack([a, b, c], -1), torch.stack([d, e, f], -1)], -2)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate counter-clockwise by ``degrees`` (N,) about the image centre (Pillow ``Image.rotate``)."""
    h, w = x.shape[-2:]
    angle = -torch.deg2rad(degrees.to(x))
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = w / 2.0, h / 2.0
    # input = R (output - centre) + centre, R = [[cos, sin], [-sin, cos]] (Pillow's rotate matrix)
    return warp(x, _affine_rows(cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy))


def shear_x(x: torch.Tensor, shear: torch.Tensor) -> torch.Tensor:
    """Horizontal shear about the top-left corner: the output (u, v) shows the input (u + shear v, v)."""
    s = shear.to(x)
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return warp(x, _affine_rows(one, s, zero, zero, one, zero))


def shear_y(x: torch.Tensor, shear: torch.Tensor) -> torch.Tensor:
    """Vertical shear about the top-left corner: the output (u, v) shows the input (u, shear u + v)."""
    s = shear.to(x)
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return warp(x, _affine_rows(one, zero, zero, s, one, zero))


def translate_x(x: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """The output (u, v) shows the input (u + pixels, v): content moves left by ``pixels`` (N,)."""
    t = pixels.to(x)
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    return warp(x, _affine_rows(one, zero, t, zero, one, zero))


def translate_y(x: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """The output (u, v) shows the input (u, v + pixels): content moves up by ``pixels`` (N,)."""
    t = pixels.to(x)
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    return warp(x, _affine_rows(one, zero, zero, zero, one, t))


# ---- the operations of a policy: magnitude [0, 10] -> parameter -----------------------------------------------------
MAX_MAGNITUDE = 10.0
MAX_ROTATE_DEGREES = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE_SHARE = 10.0 / 32.0          # of the image side
ENHANCE_RANGE = (0.1, 1.9)                 # colour / contrast / brightness / sharpness factor over m = 0 .. 10


@dataclass(frozen=True)
class Operation:
    """One policy operation: ``function(x, parameter)`` and how a magnitude (N,) in [0, 10] and a sign (N,) of
    +-1 become its parameter (N,) for images of side ``size`` (``parameter(magnitude, sign, size)``)."""

    name: str
    function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    parameter: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]

    def __call__(self, x: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) in [0, 1], magnitude (N,) in [0, 10], sign (N,) -> (N, C, H, W) in [0, 1]."""
        return self.function(x, self.parameter(magnitude, sign, x.shape[-1]))


def _none(magnitude: torch.Tensor, sign: torch.Tensor, size: int) -> torch.Tensor:
    return magnitude


def _signed(limit: float) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    return lambda m, sign, size: sign * limit * m / MAX_MAGNITUDE


def _enhance(m: torch.Tensor, sign: torch.Tensor, size: int) -> torch.Tensor:
    lo, hi = ENHANCE_RANGE
    return lo + (hi - lo) * m / MAX_MAGNITUDE


def _posterize_bits(m: torch.Tensor, sign: torch.Tensor, size: int) -> torch.Tensor:
    return 8 - torch.round(4 * m / MAX_MAGNITUDE).long()


def _solarize_threshold(m: torch.Tensor, sign: torch.Tensor, size: int) -> torch.Tensor:
    return (256.0 - 25.6 * m) / 255.0          # Pillow's threshold in 8-bit levels (256: nothing inverted), / 255


def _translate_pixels(m: torch.Tensor, sign: torch.Tensor, size: int) -> torch.Tensor:
    return sign * MAX_TRANSLATE_SHARE * size * m / MAX_MAGNITUDE


OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    Operation("AutoContrast", autocontrast, _none),
    Operation("Equalize", equalize, _none),
    Operation("Rotate", rotate, _signed(MAX_ROTATE_DEGREES)),
    Operation("Posterize", posterize, _posterize_bits),
    Operation("Solarize", solarize, _solarize_threshold),
    Operation("Color", color, _enhance),
    Operation("Contrast", contrast, _enhance),
    Operation("Brightness", brightness, _enhance),
    Operation("Sharpness", sharpness, _enhance),
    Operation("ShearX", shear_x, _signed(MAX_SHEAR)),
    Operation("ShearY", shear_y, _signed(MAX_SHEAR)),
    Operation("TranslateX", translate_x, _translate_pixels),
    Operation("TranslateY", translate_y, _translate_pixels),
    Operation("Identity", identity, _none),
)}
OPERATION_NAMES: tuple[str, ...] = tuple(OPERATIONS)


def apply_operations(x: torch.Tensor, chosen: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor,
                     names: Sequence[str] = OPERATION_NAMES) -> torch.Tensor:
    """Image i gets operation ``names[chosen[i]]`` with ``magnitude[i]`` and ``sign[i]``: x (N, C, H, W) in
    [0, 1], chosen (N,) long, magnitude (N,) in [0, 10], sign (N,) of +-1 -> (N, C, H, W). One batched call per
    operation present in the batch."""
    out = x.clone()
    chosen = chosen.to(x.device)
    for k, name in enumerate(names):
        rows = (chosen == k).nonzero().squeeze(1)
        if rows.numel() == 0 or name == "Identity":
            continue
        out[rows] = OPERATIONS[name](x[rows], magnitude.to(x.device)[rows], sign.to(x.device)[rows])
    return out


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` if every one is an operation of :data:`OPERATIONS` (at least one, no repeats); else ValueError
    naming the known ones."""
    unknown = [n for n in names if n not in OPERATIONS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"operations {list(names)}: use distinct names among {', '.join(OPERATION_NAMES)}")
    return tuple(names)

