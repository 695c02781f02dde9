"""Search spaces as data: layer positions with their shapes, strides and candidate types.

A :class:`SearchSpace` is built from a list of stages (:class:`StageSpec`) and network-level parameters
(width multiplier, input resolution, number of classes). Another space (kernels {3, 5, 7}, FBNet filter
numbers, another resolution) is another object, not new code: see :func:`spnas_mnasnet` and :func:`get_space`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from mobilekit.errors import SpaceError
from mobilekit.space.layer_types import SKIP, LayerType


def round_channels(channels: float, divisor: int = 8) -> int:
    """Scale-and-round rule of MnasNet/MobileNetV2: nearest multiple of ``divisor``, never below 90 %."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def conv_out_size(size: int, stride: int) -> int:
    """Output height/width of a 'same'-padded convolution (odd kernel, padding k//2): ceil(size / stride)."""
    return -(-size // stride)


@dataclass(frozen=True)
class StageSpec:
    """A run of layer positions with the same output channels; only the first may have stride > 1.

    ``candidates`` are the searchable types; a stage with ``fixed`` set has one type at every position.
    ``skip`` is added automatically where it is allowed (stride 1 and channels unchanged) if ``allow_skip``.
    """

    out_channels: int
    num_layers: int
    first_stride: int
    candidates: tuple[LayerType, ...] = ()
    fixed: LayerType | None = None
    allow_skip: bool = True


@dataclass(frozen=True)
class LayerPosition:
    """One layer position of a space.

    ``in_hw`` is the (H, W) of the input feature map; input tensor shape is (1, in_channels, H, W).
    """

    index: int
    in_channels: int
    out_channels: int
    stride: int
    in_hw: tuple[int, int]
    candidates: tuple[LayerType, ...]

    @property
    def out_hw(self) -> tuple[int, int]:
        return (conv_out_size(self.in_hw[0], self.stride), conv_out_size(self.in_hw[1], self.stride))

    @property
    def searchable(self) -> bool:
        return len(self.candidates) > 1

    @property
    def skip_allowed(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class SearchSpace:
    """A whole network template: stem, layer positions, head.

    Shapes: input (1, 3, resolution, resolution); stem conv 3x3 stride 2 to ``stem_channels``; positions in
    order; head conv 1x1 to ``head_channels``, global average pooling, linear classifier to ``num_classes``.
    """

    name: str
    width: float
    resolution: int
    num_classes: int
    stem_channels: int
    head_channels: int
    positions: tuple[LayerPosition, ...]
    in_channels: int = 3
    stages: tuple[StageSpec, ...] = field(default=(), repr=False, compare=False)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """(N, C, H, W) of the network input."""
        return (1, self.in_channels, self.resolution, self.resolution)

    @property
    def stem_out_hw(self) -> tuple[int, int]:
        size = conv_out_size(self.resolution, 2)
        return (size, size)

    @property
    def head_in_hw(self) -> tuple[int, int]:
        return self.positions[-1].out_hw

    @property
    def searchable_positions(self) -> tuple[LayerPosition, ...]:
        return tuple(p for p in self.positions if p.searchable)

    @property
    def all_layer_types(self) -> tuple[LayerType, ...]:
        """Every type that appears at some position, sorted (skip first)."""
        return tuple(sorted({t for p in self.positions for t in p.candidates}))

    def describe(self) -> dict:
        """The parameters that identify this space (stored with architectures and latency tables)."""
        return {"name": self.name, "width": self.width, "resolution": self.resolution, "num_classes": self.num_classes}

    def size(self) -> int:
        """Number of distinct architectures (product of candidate counts)."""
        total = 1
        for position in self.positions:
            total *= len(position.candidates)
        return total


def build_space(
    name: str,
    stages: list[StageSpec],
    *,
    width: float = 1.0,
    resolution: int = 224,
    num_classes: int = 1000,
    stem_channels: int = 32,
    head_channels: int = 1280,
) -> SearchSpace:
    """Lay out positions stage by stage: channels scaled by ``width``, spatial sizes from the strides."""
    if not 0.1 <= width <= 4.0:
        raise SpaceError(f"width multiplier {width} is out of range: use a value in [0.1, 4.0], e.g. 1.0")
    if resolution < 32:
        raise SpaceError(f"resolution {resolution} is too small: the network downsamples by 32, use >= 32")
    if num_classes < 2:
        raise SpaceError(f"num_classes {num_classes} must be at least 2")
    stem = round_channels(stem_channels * width)
    hw = (conv_out_size(resolution, 2),) * 2
    channels = stem
    positions: list[LayerPosition] = []
    for stage in stages:
        out = round_channels(stage.out_channels * width)
        for i in range(stage.num_layers):
            stride = stage.first_stride if i == 0 else 1
            if stage.fixed is not None:
                candidates: tuple[LayerType, ...] = (stage.fixed,)
            else:
                candidates = tuple(stage.candidates)
                if stage.allow_skip and stride == 1 and channels == out:
                    candidates = (SKIP,) + candidates
            position = LayerPosition(len(positions), channels, out, stride, hw, candidates)
            positions.append(position)
            hw, channels = position.out_hw, out
    return SearchSpace(
        name=name,
        width=width,
        resolution=resolution,
        num_classes=num_classes,
        stem_channels=stem,
        head_channels=head_channels if width <= 1.0 else round_channels(head_channels * width),
        positions=tuple(positions),
        stages=tuple(stages),
    )


def mbconv_grid(kernels: tuple[int, ...], expansions: tuple[int, ...], se_ratios: tuple[float, ...]) -> tuple[LayerType, ...]:
    """All MBConv types of a kernel x expansion x SE grid, in a stable order."""
    return tuple(LayerType(k, e, se) for k, e, se in itertools.product(kernels, expansions, se_ratios))


SPNAS_TYPES = mbconv_grid((3, 5), (3, 6), (0.0, 0.25, 0.5))


def spnas_mnasnet(width: float = 1.0, resolution: int = 224, num_classes: int = 1000,
                  candidates: tuple[LayerType, ...] = SPNAS_TYPES, name: str = "spnas-mnasnet") -> SearchSpace:
    """The Single-Path NAS reference space on the MnasNet backbone (Stamoulis et al., 2019).

    22 MBConv positions: 0 fixed ``ir_k3_e1`` 32->16; 1-4 ->24 (first stride 2); 5-8 ->40 (s2);
    9-12 ->80 (s2); 13-16 ->96 (s1); 17-20 ->192 (s2); 21 fixed ``ir_k3_e6`` 192->320. Positions 1-20 choose
    from k{3,5} x e{3,6} x se{0, 0.25, 0.5} (12 types) plus skip at the 15 positions that are not first in a
    stage: 13 candidates there.
    """
    stages = [
        StageSpec(16, 1, 1, fixed=LayerType(3, 1, 0.0)),
        StageSpec(24, 4, 2, candidates),
        StageSpec(40, 4, 2, candidates),
        StageSpec(80, 4, 2, candidates),
        StageSpec(96, 4, 1, candidates),
        StageSpec(192, 4, 2, candidates),
        StageSpec(320, 1, 1, fixed=LayerType(3, 6, 0.0)),
    ]
    return build_space(name, stages, width=width, resolution=resolution, num_classes=num_classes)


def spnas_mnasnet_k357(width: float = 1.0, resolution: int = 224, num_classes: int = 1000) -> SearchSpace:
    """The same backbone with kernels {3, 5, 7} x expansions {3, 6}, no SE (ProxylessNAS's mobile space)."""
    return spnas_mnasnet(width, resolution, num_classes, mbconv_grid((3, 5, 7), (3, 6), (0.0,)), "mnasnet-k357")


SPACES = {"spnas-mnasnet": spnas_mnasnet, "mnasnet-k357": spnas_mnasnet_k357}


def get_space(name: str = "spnas-mnasnet", width: float = 1.0, resolution: int = 224, num_classes: int = 1000) -> SearchSpace:
    """Look a space up by name. Raises :class:`SpaceError` listing the known names."""
    try:
        factory = SPACES[name]
    except KeyError:
        raise SpaceError(f"unknown search space {name!r}: known spaces are {', '.join(sorted(SPACES))}") from None
    _check_space_numbers(width, resolution, num_classes)
    return factory(width=width, resolution=resolution, num_classes=num_classes)


#: A sanity floor for the input size: the five stride-2 stages take 224 px to 7 px, 32 px to 1 px.
MIN_RESOLUTION = 16


def _check_space_numbers(width: float, resolution: int, num_classes: int) -> None:
    import math

    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0 \
            or width > 16:
        raise SpaceError(f"width multiplier must be a finite number in (0, 16], got {width!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not MIN_RESOLUTION <= resolution <= 4096:
        raise SpaceError(f"resolution must be an integer from {MIN_RESOLUTION} to 4096 pixels, got {resolution!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= 1_000_000:
        raise SpaceError(f"num_classes must be an integer from 1 to 1000000, got {num_classes!r}")
