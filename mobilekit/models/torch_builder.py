"""PyTorch builder: :class:`~mobilekit.space.Architecture` -> ``nn.Module``.

Every module takes NCHW float tensors. Layer names are stable (``stem``, ``layers.<i>``, ``head``) because the
Keras weight transfer (:mod:`mobilekit.models.keras_builder`) and the searchers rely on them.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from mobilekit.space import Architecture, LayerPosition, LayerSpec, SearchSpace

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Conv (no bias, 'same' padding k//2) + BatchNorm (+ ReLU6)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


def sliced_batch_norm(bn: nn.BatchNorm2d, h: torch.Tensor, channels: slice = slice(None),
                      weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``bn`` applied to ``h`` (N, C, H, W) with the statistics and affine parameters of its ``channels`` (C of
    them), for blocks that compute a slice of a larger layer; ``weight`` / ``bias`` (C,) replace the sliced affine
    parameters. In training the sliced running statistics update in place with ``nn.BatchNorm2d``'s rule:
    ``momentum``, or the cumulative average when it is None (as BN recalibration sets). A shard-aware BN
    (:class:`~mobilekit.search.engine.GlobalBatchNorm2d` of a data-parallel run) takes its training statistics over
    the global batch of all ranks, as it does for the whole layer."""
    if bn.training and getattr(bn, "world_size", 1) > 1:
        return bn.normalize(h, channels, weight, bias)
    factor = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return torch.nn.functional.batch_norm(
        h, bn.running_mean[channels], bn.running_var[channels],
        bn.weight[channels] if weight is None else weight, bn.bias[channels] if bias is None else bias,
        bn.training, factor, bn.eps)


class SqueezeExcite(nn.Module):
    """SE: global average pool -> 1x1 conv to ``squeeze`` ch -> ReLU -> 1x1 conv back -> sigmoid gate."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = torch.sigmoid(self.expand(torch.relu(self.reduce(scale))))
        return x * scale


class MBConv(nn.Module):
    """Inverted residual block for one :class:`LayerSpec` (identity for skip).

    (N, in_ch, H, W) -> [1x1 expand + BN + ReLU6] -> kxk depthwise (stride s) + BN + ReLU6 -> [SE]
    -> 1x1 project + BN -> (+ input where stride 1 and channels match) -> (N, out_ch, H/s, W/s).
    """

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec
        op = spec.op
        if op.is_skip:
            self.body = nn.Identity()
            self.residual = False
            return
        mid = spec.mid_channels
        self.expand = conv_bn(spec.in_channels, mid, 1) if op.expansion != 1 else None
        self.depthwise = conv_bn(mid, mid, op.kernel, spec.stride, groups=mid)
        self.se = SqueezeExcite(mid, spec.se_channels) if op.se_ratio else None
        self.project = conv_bn(mid, spec.out_channels, 1, act=False)
        self.residual = spec.has_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.op.is_skip:
            return x
        out = self.expand(x) if self.expand is not None else x
        out = self.depthwise(out)
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)
        return out + x if self.residual else out


class Stem(nn.Sequential):
    """(N, 3, R, R) -> conv 3x3 stride 2 + BN + ReLU6 -> (N, stem_ch, R/2, R/2)."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(*conv_bn(space.in_channels, space.stem_channels, 3, 2))


class Head(nn.Module):
    """(N, C, h, w) -> conv 1x1 to head channels + BN + ReLU6 -> global average pool -> dropout -> linear logits."""

    def __init__(self, space: SearchSpace, dropout: float = 0.2) -> None:
        super().__init__()
        in_ch = space.positions[-1].out_channels
        self.conv = conv_bn(in_ch, space.head_channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(space.head_channels, space.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).mean((2, 3))
        return self.classifier(self.dropout(x))


BlockFactory = Callable[[LayerPosition], nn.Module]


def fixed_block(position: LayerPosition) -> MBConv:
    """The block of a position that is not searched: an MBConv of its only candidate."""
    return MBConv(LayerSpec(position, position.candidates[0]))


class Skeleton(nn.Module):
    """The one network skeleton: stem, one block per position of ``space``, head. (N, 3, R, R) -> (N, classes).

    ``block_factory(position)`` builds the block of each position (timm's builder pattern: one skeleton, many
    block kinds): :class:`MobileNet` places the MBConv of an architecture's choice, the supernets of
    :mod:`mobilekit.search.supernets` place superkernels, candidate paths or sampled paths at searchable
    positions and :func:`fixed_block` elsewhere. Layer names are stable: ``stem``, ``layers.<i>``, ``head``.

    ``forward(x, block_args)``: ``block_args`` (optional) holds, per *searchable* position in order, a tuple of
    extra arguments for its block (e.g. the superkernel's decisions, a multi-path layer's mixing weights).
    """

    def __init__(self, space: SearchSpace, block_factory: BlockFactory, dropout: float = 0.2) -> None:
        super().__init__()
        self.space = space
        self.stem = Stem(space)
        self.layers = nn.ModuleList(block_factory(p) for p in space.positions)
        self.head = Head(space, dropout)

    def searchable_blocks(self) -> list[nn.Module]:
        return [layer for p, layer in zip(self.space.positions, self.layers) if p.searchable]

    def forward(self, x: torch.Tensor, block_args: Sequence[tuple] | None = None) -> torch.Tensor:
        x = self.stem(x)
        extra = iter(block_args) if block_args is not None else None
        for position, layer in zip(self.space.positions, self.layers):
            x = layer(x, *next(extra)) if extra is not None and position.searchable else layer(x)
        return self.head(x)


def derived_blocks(arch: Architecture) -> BlockFactory:
    """Block factory of a stand-alone network: the MBConv of ``arch``'s choice at every position."""
    specs = {spec.index: spec for spec in arch.layers()}
    return lambda position: MBConv(specs[position.index])


class MobileNet(Skeleton):
    """A whole network of one architecture: (N, 3, R, R) float -> (N, num_classes) logits."""

    def __init__(self, arch: Architecture, dropout: float = 0.2) -> None:
        super().__init__(arch.space, derived_blocks(arch), dropout)
        self.arch = arch


def build_torch_model(arch: Architecture, dropout: float = 0.2) -> MobileNet:
    """Build the PyTorch network of ``arch`` (random init, BN in training mode until ``.eval()``)."""
    return MobileNet(arch, dropout)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine weights (for parity tests on random
    weights: with fresh BN statistics many export bugs would go unnoticed)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                module.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model
