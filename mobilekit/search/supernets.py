"""Supernets: block factories of the one skeleton (:class:`~mobilekit.models.torch_builder.Skeleton`), and the one
function that extracts a stand-alone :class:`~mobilekit.models.torch_builder.MobileNet` from any of them.

=====================  ====================================================  =========================================
supernet               searchable block                                      who uses it
=====================  ====================================================  =========================================
:class:`SuperNet`      :class:`~.superkernel.SuperMBConv` (one superkernel,  single-path (threshold decisions)
                       weight subsets switched by thresholds)
:class:`MultiPathNet`  :class:`CandidatePaths` (every candidate computed,    multi-path (FBNet / ProxylessNAS)
                       mixed by weights)
:class:`SampledPathNet`  :class:`SampledPaths` (one hard-sampled candidate   AutoHAS, DiffAutoML, TNAS (one path per
                       per layer and step, weights shared across steps)      step, architecture by sampling)
=====================  ====================================================  =========================================

:func:`extract_network` copies the stem, the fixed blocks, the head and, per searchable position, the weights of
the chosen type (a superkernel's leading channels and central kernel, or the chosen path's module).
"""

from __future__ import annotations

from functools import singledispatch

import torch
import torch.nn.functional as F
from torch import nn

from mobilekit.latency.differentiable import Decisions, SuperkernelGrid
from mobilekit.models.torch_builder import MBConv, MobileNet, Skeleton, fixed_block
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
    """One MBConv per candidate type of a position; only the ``active`` one is computed.

    forward(x (N, in, H, W), gate=None) -> ``path_active(x)``, times ``gate`` when given (a scalar that is 1 in
    the forward pass and carries the gradient of the sampling distribution, e.g. a straight-through one-hot
    entry; see :meth:`SampledPathNet.sample`).
    """

    def __init__(self, position, types: tuple[LayerType, ...]) -> None:
        super().__init__(MBConv(LayerSpec(position, t)) for t in types)
        self.types = types
        self.active = 0

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        out = self[self.active](x)
        return out if gate is None else gate * out


class SampledPathNet(_CategoricalNet):
    """Stem, fixed MBConvs, :class:`SampledPaths` per searchable position, head: one candidate per layer is
    active at a time (weights shared across samples), as AutoHAS, DiffAutoML and TNAS need.

    ``sample(generator)`` draws one candidate per layer from ``softmax(alpha)`` and activates it, returning the
    indices and straight-through gates; ``fix(arch)`` activates the candidates of an architecture;
    ``forward(x)`` computes only the active paths (times the gates of the last ``sample`` when ``gated``).
    """

    def __init__(self, space: SearchSpace, candidates: list[tuple[LayerType, ...]], dropout: float = 0.2) -> None:
        super().__init__(space, candidates, SampledPaths, dropout)
        self._gates: torch.Tensor | None = None

    @property
    def paths(self) -> list[SampledPaths]:
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
    """Expansion channels, the centre of the depthwise kernel and the leading squeeze channels."""
    if spec.op.is_skip:
        return
    mid, k = spec.mid_channels, spec.op.kernel
    _copy_conv_bn(target.expand, source.expand, out=slice(0, mid))
    lo = (source.grid.kernels[-1] - k) // 2
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
