"""Supernets: block factories of the one skeleton (:class:`~mobilekit.models.torch_builder.Skeleton`), and the one
function that extracts a stand-alone :class:`~mobilekit.models.torch_builder.MobileNet` from any of them.

=====================  ====================================================  =========================================
supernet               searchable block                                      who uses it
=====================  ====================================================  =========================================
:class:`SuperNet`      :class:`~.superkernel.SuperMBConv` (one superkernel,  single-path (threshold decisions)
                       weight subsets switched by thresholds)
:class:`MultiPathNet`  :class:`CandidatePaths` (every candidate computed,    multi-path (FBNet / ProxylessNAS)
                       mixed by weights)
:class:`SampledPathNet`  :class:`EntangledPaths` (one hard-sampled         AutoHAS, DiffAutoML, SPOS, TNAS (one path
                       candidate per layer and step, nested weight subsets   per step, architecture by sampling)
                       of one block) or :class:`SampledPaths` (separate
                       weights per candidate)
=====================  ====================================================  =========================================

:func:`extract_network` copies the stem, the fixed blocks, the head and, per searchable position, the weights of
the chosen type (a superkernel's leading channels and central kernel, or the chosen path's module).
"""

from __future__ import annotations

from functools import singledispatch
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mobilekit.latency.differentiable import Decisions, SuperkernelGrid
from mobilekit.models.torch_builder import (MBConv, MobileNet, Skeleton, SqueezeExcite, conv_bn, fixed_block,
                                           sliced_batch_norm)
from mobilekit.search.options import option
from mobilekit.search.depthwise import conv_like
from mobilekit.search.superkernel import HARD, SuperMBConv
from mobilekit.space import Architecture, LayerSpec, LayerType, SearchSpace

MASKED = -1e4   # logit of padded candidate columns


def _architecture(space: SearchSpace, chosen: list[LayerType]) -> Architecture:
    it = iter(chosen)
    return Architecture(space, tuple(next(it) if p.searchable else p.candidates[0] for p in space.positions))


# ---- single-path: superkernels -------------------------------------------------------------------------------------
class SuperNet(Skeleton):
    """The skeleton with one :class:`SuperMBConv` per searchable position. (N, 3, R, R) -> logits.

    ``relax``, ``tau`` and ``subset_dropout`` are plain attributes that the searcher sets as training goes.
    """

    def __init__(self, space: SearchSpace, grid: SuperkernelGrid, relax: str = HARD, dropout: float = 0.2,
                 threshold_init: float = 0.0) -> None:
        super().__init__(space, lambda p: SuperMBConv(p, grid) if p.searchable else fixed_block(p), dropout)
        self.grid = grid
        self.relax = relax
        self.tau = 1.0
        self.subset_dropout = 0.0
        with torch.no_grad():
            for t in self.threshold_parameters():
                t.fill_(threshold_init)

    @property
    def superkernels(self) -> list[SuperMBConv]:
        return self.searchable_blocks()

    def threshold_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n.rsplit(".", 1)[-1].startswith("t_")]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.rsplit(".", 1)[-1].startswith("t_")]

    def architecture_parameters(self) -> list[nn.Parameter]:
        return self.threshold_parameters()

    def limit_thresholds(self, reach: float) -> None:
        """See :meth:`SuperMBConv.limit_thresholds`."""
        for layer in self.superkernels:
            layer.limit_thresholds(reach)

    def decide(self, relax: str | None = None) -> tuple[list, Decisions, Decisions]:
        """Per-layer decisions: (each superkernel's ``decide`` result, stacked indicators, stacked margins)."""
        results = [layer.decide(relax or self.relax, self.tau) for layer in self.superkernels]

        def stacked(which: int) -> Decisions:
            return Decisions(*(torch.cat([r[key][which] for r, _ in results]) if key == "keep" else
                               torch.stack([r[key][which] for r, _ in results])
                               for key in ("keep", "kernel", "expand", "se")))

        return results, stacked(1), stacked(0)

    def forward_decided(self, x: torch.Tensor, results: list) -> torch.Tensor:
        """x (N, 3, R, R) -> logits (N, classes) with the per-layer decisions ``decide()[0]``."""
        args = [({k: v[1] for k, v in decided.items()}, w_eff, self.subset_dropout) for decided, w_eff in results]
        return Skeleton.forward(self, x, args)

    def forward_with_decisions(self, x: torch.Tensor) -> tuple[torch.Tensor, Decisions]:
        """x (N, 3, R, R) -> (logits (N, classes), the stacked indicators for the latency model)."""
        results, inds, _ = self.decide()
        return self.forward_decided(x, results), inds

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.forward_with_decisions(x)[0]

    def architecture_from(self, decisions: Decisions) -> Architecture:
        """The architecture selected by stacked 0/1 decisions (in the training space)."""
        return _architecture(self.space, [
            layer.chosen_type({"keep": decisions.keep[l:l + 1], "kernel": decisions.kernel[l],
                               "expand": decisions.expand[l], "se": decisions.se[l]})
            for l, layer in enumerate(self.superkernels)])

    @torch.no_grad()
    def architecture(self) -> Architecture:
        """The discrete architecture of the current thresholds (hard decisions), in the training space."""
        return self.architecture_from(self.decide(HARD)[1])

    @torch.no_grad()
    def margins(self) -> Decisions:
        """Stacked decision margins ``stat - t`` of the hard decisions (positive = subset on)."""
        return self.decide(HARD)[2]


# ---- multi-path: every candidate, mixed ------------------------------------------------------------------------------
class CandidatePaths(nn.ModuleList):
    """One MBConv per candidate type of a position. forward(x (N, in, H, W), weights (C,)) ->
    ``sum_c weights[c] * path_c(x)`` over this row's candidates (every path computed)."""

    def __init__(self, position, types: tuple[LayerType, ...]) -> None:
        super().__init__(MBConv(LayerSpec(position, t)) for t in types)
        self.types = types

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return sum(weights[c] * path(x) for c, path in enumerate(self))

    def forward_candidate(self, x: torch.Tensor, c: int) -> torch.Tensor:
        """Candidate ``c`` alone (what one-hot weights compute, without the other paths)."""
        return self[c](x)


class _CategoricalNet(Skeleton):
    """A skeleton whose searchable blocks choose among ``candidates[l]``, with architecture logits ``alpha``
    (L, C) (padded columns masked)."""

    def __init__(self, space: SearchSpace, candidates: list[tuple[LayerType, ...]], block, dropout: float) -> None:
        rows = iter(candidates)
        super().__init__(space, lambda p: block(p, next(rows)) if p.searchable else fixed_block(p), dropout)
        self.candidates = candidates
        width = max(len(c) for c in candidates)
        mask = torch.zeros(len(candidates), width, dtype=torch.bool)
        for l, row in enumerate(candidates):
            mask[l, :len(row)] = True
        self.register_buffer("mask", mask)
        self.alpha = nn.Parameter(torch.zeros(len(candidates), width))

    def logits(self) -> torch.Tensor:
        return self.alpha.masked_fill(~self.mask, MASKED)

    def probs(self) -> torch.Tensor:
        return F.softmax(self.logits(), dim=-1)

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "alpha"]

    def architecture_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def architecture(self) -> Architecture:
        """argmax of alpha at every searchable position (in the training space)."""
        best = self.logits().argmax(-1).tolist()
        return _architecture(self.space, [row[c] for row, c in zip(self.candidates, best)])

    def score(self):
        """score(position index, LayerType) = log softmax(alpha), for the latency-window repair."""
        log_p = F.log_softmax(self.logits(), dim=-1).detach().cpu()
        index = {p.index: l for l, p in enumerate(self.space.searchable_positions)}
        return lambda position, layer_type: float(log_p[index[position], self.candidates[index[position]].index(layer_type)])


class MultiPathNet(_CategoricalNet):
    """Stem, fixed MBConvs, :class:`CandidatePaths` per searchable position, head.

    forward(x (N, 3, R, R), weights (L, C)) -> logits; each searchable layer outputs ``sum_c weights[l, c] *
    path_c(x)`` (default weights: ``softmax(alpha)``).
    """

    def __init__(self, space: SearchSpace, candidates: list[tuple[LayerType, ...]], dropout: float = 0.2) -> None:
        super().__init__(space, candidates, CandidatePaths, dropout)

    def sample_weights(self, tau: float) -> torch.Tensor:
        return F.gumbel_softmax(self.logits(), tau=tau, hard=False, dim=-1)

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        weights = self.probs() if weights is None else weights
        return Skeleton.forward(self, x, [(weights[l],) for l in range(len(self.candidates))])


# ---- sampled path: one hard-sampled candidate per layer ----------------------------------------------------------
class SampledPaths(nn.ModuleList):
    """One MBConv per candidate type of a position, each with its own weights; only the ``active`` one is
    computed (``sharing="separate"``).

    forward(x (N, in, H, W), gate=None) -> ``path_active(x)``, times ``gate`` when given (a scalar that is 1 in
    the forward pass and carries the gradient of the sampling distribution, e.g. a straight-through one-hot
    entry; see :meth:`SampledPathNet.sample`).
    """

    def __init__(self, position, types: tuple[LayerType, ...]) -> None:
        super().__init__(MBConv(LayerSpec(position, t)) for t in types)
        self.types = types
        self.active = 0

    def inactive_parameters(self) -> list[nn.Parameter]:
        """Parameters the active candidate does not use (those of every other candidate)."""
        return [p for c, path in enumerate(self) if c != self.active for p in path.parameters()]

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        out = self[self.active](x)
        return out if gate is None else gate * out

    def forward_candidate(self, x: torch.Tensor, c: int) -> torch.Tensor:
        """Candidate ``c`` whatever is active (``active`` untouched)."""
        return self[c](x)


def entangleable(types: tuple[LayerType, ...]) -> bool:
    """Whether the candidates of a position can be nested weight subsets of one block: every non-skip type has
    an expansion conv (expansion > 1), and there is at least one."""
    blocks = [t for t in types if not t.is_skip]
    return bool(blocks) and all(t.expansion > 1 for t in blocks)


class EntangledPaths(nn.Module):
    """The candidates of a position as nested weight subsets of one largest block (``sharing="entangled"``, the
    weight entanglement of Once-for-All / BigNAS, and of the Single-Path NAS superkernel): a candidate with
    expansion ``e``, kernel ``k`` and ``s`` squeeze channels uses the first ``in x e`` expansion channels, the
    central ``k x k`` of the depthwise kernel, the first ``s`` squeeze channels and the matching projection
    columns; BatchNorm statistics are sliced alike (the projection's BN is shared by all). Skip uses nothing.

    Every sampled path thus trains weights every other path uses, which a uniformly sampled one-shot supernet
    needs to learn at all in a short budget (``bench/one_shot_paths.py``). Only the ``active`` candidate is
    computed: forward(x (N, in, H, W), gate=None) -> (N, out, H/s, W/s), times ``gate`` when given (see
    :class:`SampledPaths`).
    """

    def __init__(self, position, types: tuple[LayerType, ...]) -> None:
        super().__init__()
        if not entangleable(types):
            raise ValueError(f"layer {position.index}: candidates {types} cannot share nested weights")
        self.types = types
        self.active = 0
        self.specs = [LayerSpec(position, t) for t in types]
        blocks = [spec for spec in self.specs if not spec.op.is_skip]
        cin, mid = position.in_channels, max(spec.mid_channels for spec in blocks)
        self.k_max = max(spec.op.kernel for spec in blocks)
        squeeze = max(spec.se_channels for spec in blocks)
        self.expand = conv_bn(cin, mid, 1)
        self.depthwise = conv_bn(mid, mid, self.k_max, position.stride, groups=mid)
        self.se = SqueezeExcite(mid, squeeze) if squeeze else None
        self.project = conv_bn(mid, position.out_channels, 1, act=False)
        self.residual = blocks[0].has_residual

    def inactive_parameters(self) -> list[nn.Parameter]:
        """Parameters the active candidate does not use: all of them for skip, the SE block's for a type without
        SE, none otherwise (a smaller candidate's unused slices are parts of tensors it uses)."""
        spec = self.specs[self.active]
        if spec.op.is_skip:
            return list(self.parameters())
        return list(self.se.parameters()) if self.se is not None and not spec.se_channels else []

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        out = self.forward_candidate(x, self.active)
        return out if gate is None else gate * out

    def forward_candidate(self, x: torch.Tensor, c: int) -> torch.Tensor:
        """Candidate ``c`` whatever is active (``active`` untouched)."""
        spec = self.specs[c]
        return x if spec.op.is_skip else self._block(x, spec)

    def _block(self, x: torch.Tensor, spec: LayerSpec) -> torch.Tensor:
        mid, k = spec.mid_channels, spec.op.kernel
        channels = slice(0, mid)
        h = F.relu6(sliced_batch_norm(self.expand[1], F.conv2d(x, self.expand[0].weight[channels]), channels))
        lo = (self.k_max - k) // 2
        kernel = self.depthwise[0].weight[channels, :, lo:lo + k, lo:lo + k]
        h = conv_like(self.depthwise[0], h, kernel, self.depthwise[0].stride, k // 2)
        h = F.relu6(sliced_batch_norm(self.depthwise[1], h, channels))
        if self.se is not None and spec.se_channels:
            s = spec.se_channels
            pooled = h.mean((2, 3), keepdim=True)
            squeezed = torch.relu(F.conv2d(pooled, self.se.reduce.weight[:s, :mid], self.se.reduce.bias[:s]))
            h = h * torch.sigmoid(F.conv2d(squeezed, self.se.expand.weight[:mid, :s], self.se.expand.bias[:mid]))
        out = self.project[1](F.conv2d(h, self.project[0].weight[:, channels]))
        return out + x if self.residual else out


SHARING = ("entangled", "separate")


def weight_sharing_option() -> Any:
    """The ``weight_sharing`` option of every searcher built on :class:`SampledPathNet` (a dataclass field)."""
    return option("entangled", "candidates of a layer: nested subsets of one block's weights (entangled) or each "
                  "its own weights (separate, SPOS's original)", choices=SHARING)


class SampledPathNet(_CategoricalNet):
    """Stem, fixed MBConvs, one sampled-path block per searchable position, head: one candidate per layer is
    active at a time, as AutoHAS, DiffAutoML, SPOS and TNAS need.

    ``sharing``: ``"entangled"`` (default) makes the candidates of a position nested weight subsets of one block
    (:class:`EntangledPaths`; positions whose candidates cannot nest fall back to separate weights);
    ``"separate"`` gives each candidate its own MBConv (:class:`SampledPaths`, SPOS's original choice blocks).
    With separate weights a uniformly sampled supernet of this space barely learns in short budgets
    (``python bench/one_shot_paths.py --sharing separate``).

    ``sample(generator)`` draws one candidate per layer from ``softmax(alpha)`` and activates it, returning the
    indices and straight-through gates; ``fix(arch)`` activates the candidates of an architecture;
    ``forward(x)`` computes only the active paths (times the gates of the last ``sample`` when ``gated``).
    """

    def __init__(self, space: SearchSpace, candidates: list[tuple[LayerType, ...]], dropout: float = 0.2,
                 sharing: str = "entangled") -> None:
        if sharing not in SHARING:
            raise ValueError(f"sharing must be one of {SHARING}, got {sharing!r}")

        def block(position, types: tuple[LayerType, ...]) -> nn.Module:
            if sharing == "entangled" and entangleable(types):
                return EntangledPaths(position, types)
            return SampledPaths(position, types)

        super().__init__(space, candidates, block, dropout)
        self.sharing = sharing
        self._gates: torch.Tensor | None = None

    @property
    def paths(self) -> list[SampledPaths | EntangledPaths]:
        return self.searchable_blocks()

    def active(self) -> list[int]:
        """The active candidate index of every searchable layer."""
        return [block.active for block in self.paths]

    def sample(self, generator: torch.Generator | None = None, tau: float = 1.0) -> tuple[list[int], torch.Tensor]:
        """Activate one candidate per layer drawn from ``softmax(alpha / tau)``; returns (indices, gates (L,))
        with ``gates[l] = 1`` in value and the gradient of ``p_l(chosen)`` (straight-through), used by the next
        gated forward pass."""
        probs = F.softmax(self.logits() / tau, dim=-1)
        chosen = torch.multinomial(probs.detach().cpu(), 1, generator=generator).squeeze(1).tolist()
        for block, c in zip(self.paths, chosen):
            block.active = c
        picked = probs[torch.arange(len(chosen)), torch.tensor(chosen, device=probs.device)]
        self._gates = 1 + picked - picked.detach()
        return chosen, self._gates

    def fix(self, arch: Architecture | list[int]) -> list[int]:
        """Activate the candidates of ``arch`` (or explicit indices); returns the indices. Clears the gates."""
        if isinstance(arch, Architecture):
            chosen = [row.index(arch.choices[p.index]) for row, p in zip(self.candidates, self.space.searchable_positions)]
        else:
            chosen = list(arch)
        for block, c in zip(self.paths, chosen):
            block.active = c
        self._gates = None
        return chosen

    def active_architecture(self) -> Architecture:
        return _architecture(self.space, [row[c] for row, c in zip(self.candidates, self.active())])

    def forward(self, x: torch.Tensor, gated: bool = False) -> torch.Tensor:  # type: ignore[override]
        gates = self._gates if gated and self._gates is not None else None
        return Skeleton.forward(self, x, [(None if gates is None else gates[l],) for l in range(len(self.candidates))])


# ---- one path of a categorical supernet, as a network ---------------------------------------------------------------
class PathView(nn.Module):
    """A categorical supernet (:class:`MultiPathNet` or :class:`SampledPathNet`) seen as the one network of
    ``indices`` (candidate column per searchable layer): forward(x (N, 3, R, R)) -> logits (N, classes) computes
    only the chosen candidates, with the supernet's own weights and BN statistics, and changes nothing in it (no
    active path set, no gates). What :func:`extract_network` would copy out, without copying; a per-epoch
    validation pass uses it. ``train()`` / ``eval()`` reach the supernet's modules."""

    def __init__(self, net: _CategoricalNet, indices: list[int]) -> None:
        super().__init__()
        if len(indices) != len(net.candidates):
            raise ValueError(f"a path of {len(net.candidates)} searchable layers, got {len(indices)} indices")
        self.net = net
        self.indices = [int(c) for c in indices]
        self.training = net.training

    @classmethod
    def most_likely(cls, net: _CategoricalNet) -> "PathView":
        """The path of the argmax of alpha at every searchable layer (the architecture the search would derive)."""
        return cls(net, net.logits().argmax(-1).tolist())

    @classmethod
    def of(cls, net: _CategoricalNet, arch: Architecture) -> "PathView":
        """The path of ``arch`` (an architecture of the supernet's space whose choices are among its candidates)."""
        return cls(net, [row.index(arch.choices[p.index]) for row, p in zip(net.candidates, net.space.searchable_positions)])

    def architecture(self) -> Architecture:
        return _architecture(self.net.space, [row[c] for row, c in zip(self.net.candidates, self.indices)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net.stem(x)
        chosen = iter(self.indices)
        for position, layer in zip(net.space.positions, net.layers):
            x = layer.forward_candidate(x, next(chosen)) if position.searchable else layer(x)
        return net.head(x)


# ---- one extraction for every supernet --------------------------------------------------------------------------------
@torch.no_grad()
def extract_network(supernet: Skeleton, arch: Architecture | None = None, dropout: float = 0.2) -> MobileNet:
    """A stand-alone :class:`MobileNet` of ``arch`` (default: the supernet's current architecture) with the
    supernet's weights: stem, head and fixed blocks copied, and per searchable block the weights of the chosen
    type (:func:`copy_block`). At hard decisions the result computes what the supernet computes (eval mode)."""
    arch = arch or supernet.architecture()
    model = MobileNet(arch.with_space(supernet.space), dropout)
    model.to(next(supernet.parameters()).device)
    model.stem.load_state_dict(supernet.stem.state_dict())
    model.head.load_state_dict(supernet.head.state_dict())
    for spec, target, source in zip(arch.layers(), model.layers, supernet.layers):
        if spec.position.searchable:
            copy_block(source, target, spec)
        else:
            target.load_state_dict(source.state_dict())
    return model


@singledispatch
def copy_block(source: nn.Module, target: MBConv, spec: LayerSpec) -> None:
    """Copy the weights of ``spec``'s type from a supernet block into ``target``; one rule per block kind."""
    raise TypeError(f"no weight extraction for {type(source).__name__}; register one with @copy_block.register")


@copy_block.register
def _(source: CandidatePaths, target: MBConv, spec: LayerSpec) -> None:
    target.load_state_dict(source[source.types.index(spec.op)].state_dict())


@copy_block.register
def _(source: SampledPaths, target: MBConv, spec: LayerSpec) -> None:
    target.load_state_dict(source[source.types.index(spec.op)].state_dict())


@copy_block.register
def _(source: SuperMBConv, target: MBConv, spec: LayerSpec) -> None:
    _copy_nested(source, target, spec, source.grid.kernels[-1])


@copy_block.register
def _(source: EntangledPaths, target: MBConv, spec: LayerSpec) -> None:
    _copy_nested(source, target, spec, source.k_max)


def _copy_nested(source: nn.Module, target: MBConv, spec: LayerSpec, k_max: int) -> None:
    """Copy a nested-subset block's weights of ``spec``: the leading expansion channels, the centre of the
    depthwise kernel and the leading squeeze channels (a superkernel or an entangled path)."""
    if spec.op.is_skip:
        return
    mid, k = spec.mid_channels, spec.op.kernel
    _copy_conv_bn(target.expand, source.expand, out=slice(0, mid))
    lo = (k_max - k) // 2
    target.depthwise[0].weight.copy_(source.depthwise[0].weight[:mid, :, lo:lo + k, lo:lo + k])
    _copy_bn(target.depthwise[1], source.depthwise[1], slice(0, mid))
    if target.se is not None:
        s = spec.se_channels
        target.se.reduce.weight.copy_(source.se.reduce.weight[:s, :mid])
        target.se.reduce.bias.copy_(source.se.reduce.bias[:s])
        target.se.expand.weight.copy_(source.se.expand.weight[:mid, :s])
        target.se.expand.bias.copy_(source.se.expand.bias[:mid])
    target.project[0].weight.copy_(source.project[0].weight[:, :mid])
    _copy_bn(target.project[1], source.project[1], slice(None))


def _copy_conv_bn(target: nn.Sequential, source: nn.Sequential, out: slice) -> None:
    target[0].weight.copy_(source[0].weight[out])
    _copy_bn(target[1], source[1], out)


def _copy_bn(target: nn.BatchNorm2d, source: nn.BatchNorm2d, channels: slice) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(target, name).copy_(getattr(source, name)[channels])
    target.num_batches_tracked.copy_(source.num_batches_tracked)


def extract_subnet(supernet: Skeleton, arch: Architecture | None = None, dropout: float = 0.2) -> MobileNet:
    """Former name of :func:`extract_network`."""
    return extract_network(supernet, arch, dropout)
