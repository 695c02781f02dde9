"""Layer features for latency models: shapes, operation counts and memory traffic of one MBConv layer.

Every latency model here sees a layer through :class:`LayerShape`, a plain description that can be made from a
decoded :class:`~mobilekit.space.LayerSpec` (:meth:`LayerShape.from_spec`) or from a row of a published table
(shapes given directly, e.g. Once-for-All's layers with h-swish). :func:`layer_features` turns it into the
documented feature vector below; :func:`feature_matrix` stacks many into an (N, F) array.

The block is the inverted residual of :class:`mobilekit.models.torch_builder.MBConv`::

    (1, C_in, H, W) -> [1x1 expand to M] -> kxk depthwise, stride s -> [SE: pool, 1x1 M->S, 1x1 S->M, gate]
                    -> 1x1 project to C_out -> [+ input] -> (1, C_out, H', W'),  H' = ceil(H / s)

Feature vector (:data:`FEATURE_NAMES`, float64, units in the names; counts are per image, batch 1):

==================  ==========================================================================================
``in_h``, ``in_w``  input height and width (pixels)
``in_channels``     C_in
``out_channels``    C_out
``out_h``/``out_w`` H', W'
``kernel``          depthwise kernel size k (0 for skip)
``expansion``       M / C_in (0 for skip)
``mid_channels``    M, channels of the depthwise convolution
``se_ratio``        S / C_in (MnasNet's definition; 0 without SE)
``se_channels``     S, squeeze width of the SE block
``stride``          s
``residual``        1 where the input is added to the output (stride 1, C_in == C_out)
``hswish``          1 where the activations are h-swish (separate ops in TFLite), 0 for ReLU6
``is_skip``         1 for the identity layer (every count below is 0)
``macs``            multiply-accumulates of all convolutions (expand + depthwise + SE + project)
``flops``           2 x macs
``macs_expand``     H W C_in M (0 when the expansion is 1: no expand conv)
``macs_depthwise``  H' W' M k^2
``macs_se``         2 M S (the two 1x1 convolutions on the pooled vector)
``macs_project``    H' W' M C_out
``depthwise_outputs``  H' W' M (work per output of the depthwise conv that does not grow with k^2)
``params``          weights and (folded BatchNorm) biases
``param_bytes``     4 x params (float32)
``conv_activation_bytes``  4 x feature-map elements the convolutions read and write (input, expand output,
                    depthwise output, output)
``elementwise_bytes``  4 x elements the element-wise ops touch: residual add (read 2, write 1), SE pool (read 1)
                    and gate (read 1, write 1), each h-swish (read 1, write 1)
``activation_bytes``  conv_activation_bytes + elementwise_bytes
``ops``             number of kernels the runtime launches (expand, depthwise, project, add, SE: mean,
                    two convolutions, sigmoid, mul; h-swish: one per activation)
==================  ==========================================================================================

:data:`COST_TERMS` is the subset an additive cost model uses (latency ~ sum of non-negative cost x count):
pointwise MACs (expand, SE and project), depthwise MACs, depthwise outputs, convolution activation bytes,
element-wise bytes, parameter bytes and ops. The SE block adds
to terms the rest of the layer has too (pointwise MACs, element-wise bytes shared with the residual add, ops),
which is what lets a model fitted on a table without SE entries price them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Union

import numpy as np

from mobilekit.space import LayerSpec, SearchSpace
from mobilekit.space.search_space import conv_out_size

FLOAT_BYTES = 4

FEATURE_NAMES: tuple[str, ...] = (
    "in_h", "in_w", "in_channels", "out_channels", "out_h", "out_w", "kernel", "expansion", "mid_channels",
    "se_ratio", "se_channels", "stride", "residual", "hswish", "is_skip", "macs", "flops", "macs_expand",
    "macs_depthwise", "macs_se", "macs_project", "depthwise_outputs", "params", "param_bytes",
    "conv_activation_bytes", "elementwise_bytes", "activation_bytes", "ops",
)

COST_TERMS: tuple[str, ...] = (
    "macs_pointwise", "macs_depthwise", "depthwise_outputs", "conv_activation_bytes", "elementwise_bytes",
    "param_bytes", "ops",
)

SE_OPS = 5        # mean, 1x1 reduce (ReLU fused), 1x1 expand, sigmoid, mul
HSWISH_OPS = 2    # one h-swish after the expand conv, one after the depthwise conv


@dataclass(frozen=True)
class LayerShape:
    """One layer described by its shapes: what latency features are computed from.

    ``mid_channels`` defaults to ``round(in_channels x expansion)``; ``residual`` defaults to stride 1 with
    unchanged channels (MnasNet's rule); ``se_channels`` is the squeeze width (0 without SE).
    """

    in_hw: tuple[int, int]
    in_channels: int
    out_channels: int
    kernel: int
    expansion: float
    stride: int = 1
    se_channels: int = 0
    mid_channels: int | None = None
    residual: bool | None = None
    hswish: bool = False
    is_skip: bool = False

    @classmethod
    def from_spec(cls, spec: LayerSpec) -> "LayerShape":
        """The shape of a decoded layer of an architecture."""
        op = spec.op
        return cls(
            in_hw=tuple(spec.in_hw), in_channels=spec.in_channels, out_channels=spec.out_channels,
            kernel=op.kernel, expansion=float(op.expansion), stride=spec.stride, se_channels=spec.se_channels,
            mid_channels=spec.mid_channels, residual=spec.has_residual and not op.is_skip, is_skip=op.is_skip,
        )

    @property
    def mid(self) -> int:
        if self.is_skip:
            return 0
        return self.mid_channels if self.mid_channels is not None else int(round(self.in_channels * self.expansion))

    @property
    def out_hw(self) -> tuple[int, int]:
        return (conv_out_size(self.in_hw[0], self.stride), conv_out_size(self.in_hw[1], self.stride))

    @property
    def has_residual(self) -> bool:
        if self.is_skip:
            return False
        if self.residual is not None:
            return bool(self.residual)
        return self.stride == 1 and self.in_channels == self.out_channels

    def key(self) -> tuple:
        """Hashable identity of the layer's shape without its operation (kernel, expansion, SE): used to keep
        every operation of one layer on the same side of a train/test split."""
        return (tuple(self.in_hw), self.in_channels, self.out_channels, self.stride)


LayerLike = Union[LayerSpec, LayerShape]


def as_layer_shape(layer: LayerLike) -> LayerShape:
    """A :class:`LayerShape` for a decoded :class:`LayerSpec` or a shape (returned as is)."""
    if isinstance(layer, LayerShape):
        return layer
    if isinstance(layer, LayerSpec):
        return LayerShape.from_spec(layer)
    raise TypeError(f"expected a LayerSpec or LayerShape, got {type(layer).__name__}")


def layer_feature_dict(layer: LayerLike) -> dict[str, float]:
    """The named features of one layer (see the module docstring), plus ``macs_pointwise`` for the cost model."""
    shape = as_layer_shape(layer)
    h, w = shape.in_hw
    ho, wo = shape.out_hw
    cin, cout = shape.in_channels, shape.out_channels
    if shape.is_skip:
        values = dict.fromkeys(FEATURE_NAMES, 0.0)
        values.update(in_h=h, in_w=w, in_channels=cin, out_channels=cout, out_h=ho, out_w=wo, stride=shape.stride,
                      is_skip=1.0, macs_pointwise=0.0)
        return {k: float(v) for k, v in values.items()}
    k, mid, se = shape.kernel, shape.mid, shape.se_channels
    has_expand = mid != cin or shape.expansion != 1
    macs_expand = h * w * cin * mid if has_expand else 0
    macs_depthwise = ho * wo * mid * k * k
    macs_se = 2 * mid * se
    macs_project = ho * wo * mid * cout
    macs = macs_expand + macs_depthwise + macs_se + macs_project
    params = (cin * mid + mid if has_expand else 0) + (mid * k * k + mid) + cout + mid * cout
    if se:
        params += mid * se + se + se * mid + mid
    conv_elements = h * w * cin + ho * wo * mid + ho * wo * cout
    if has_expand:
        conv_elements += h * w * mid
    elementwise = 0
    if se:
        elementwise += 3 * ho * wo * mid       # the pool reads the map, the gate reads it and writes it
    if shape.has_residual:
        elementwise += 3 * ho * wo * cout      # the add reads two maps and writes one
    if shape.hswish:
        elementwise += 2 * ((h * w * mid if has_expand else 0) + ho * wo * mid)
    ops = (1 if has_expand else 0) + 2 + (1 if shape.has_residual else 0) + (SE_OPS if se else 0)
    ops += HSWISH_OPS if shape.hswish else 0
    values = {
        "in_h": h, "in_w": w, "in_channels": cin, "out_channels": cout, "out_h": ho, "out_w": wo, "kernel": k,
        "expansion": mid / cin, "mid_channels": mid, "se_ratio": se / cin, "se_channels": se,
        "stride": shape.stride, "residual": float(shape.has_residual), "hswish": float(shape.hswish),
        "is_skip": 0.0, "macs": macs, "flops": 2 * macs, "macs_expand": macs_expand,
        "macs_depthwise": macs_depthwise, "macs_se": macs_se, "macs_project": macs_project,
        "depthwise_outputs": ho * wo * mid, "params": params, "param_bytes": FLOAT_BYTES * params,
        "conv_activation_bytes": FLOAT_BYTES * conv_elements, "elementwise_bytes": FLOAT_BYTES * elementwise,
        "activation_bytes": FLOAT_BYTES * (conv_elements + elementwise), "ops": ops,
        "macs_pointwise": macs_expand + macs_se + macs_project,
    }
    return {k: float(v) for k, v in values.items()}


def layer_features(layer: LayerLike) -> np.ndarray:
    """Feature vector of one layer, shape (F,) in the order of :data:`FEATURE_NAMES`."""
    values = layer_feature_dict(layer)
    return np.array([values[name] for name in FEATURE_NAMES], dtype=np.float64)


def feature_matrix(layers: Iterable[LayerLike]) -> np.ndarray:
    """Features of many layers, shape (N, F) in the order of :data:`FEATURE_NAMES`."""
    rows = [layer_features(layer) for layer in layers]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


def cost_matrix(layers: Iterable[LayerLike]) -> np.ndarray:
    """Cost terms of many layers, shape (N, T) in the order of :data:`COST_TERMS`."""
    rows = []
    for layer in layers:
        values = layer_feature_dict(layer)
        rows.append([values[name] for name in COST_TERMS])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(COST_TERMS))


def fixed_part_macs(space: SearchSpace, covers: Iterable[object] = ("stem", "head")) -> int:
    """MACs of the parts a table's fixed entries cover: ``"stem"`` (3x3 conv, stride 2), ``"head"`` (1x1 conv to
    the head channels and the classifier) and layer positions given by index (at their only candidate type)."""
    total = 0
    for item in covers:
        if item == "stem":
            h, w = space.stem_out_hw
            total += h * w * space.in_channels * space.stem_channels * 9
        elif item == "head":
            h, w = space.head_in_hw
            total += h * w * space.positions[-1].out_channels * space.head_channels
            total += space.head_channels * space.num_classes
        elif isinstance(item, int) and 0 <= item < len(space.positions):
            position = space.positions[item]
            spec = LayerSpec(position, position.candidates[0])
            total += int(layer_feature_dict(spec)["macs"])
    return total
