"""Differentiable latency models: the latency table as a torch function of the searchers' decisions.

"Latency model" here means a predictor of a network's latency in ms (never an inference engine such as LiteRT or
onnxruntime, which the profiler calls a runtime). Every searcher consumes the :class:`LatencyModel` protocol;
:func:`build_latency_model` makes the form a method asks for by name (:data:`LATENCY_MODELS`):

``"lookup"``  :class:`TableLatency`: the table lookup of a discrete architecture (random search, repair).

``"superkernel"``  :class:`SuperkernelLatency` (single-path search, Stamoulis et al., "Single-Path NAS", eq. 12-17)
    Per searchable layer ``l`` the superkernel makes nested threshold decisions, each an indicator
    ``1(stat > t)`` of a weight subset: ``keep`` (the e3 channels, i.e. not skip; only where skip is allowed),
    ``kernel`` (the 5x5 ring), ``expand`` (the e3 -> e6 channels) and ``se`` (SE 0 -> 0.25 -> 0.5). The layer
    latency is the paper's nested expression::

        R_l       = skip_l + ind_keep * (R_mb - skip_l)
        R_mb      = R_3x3 + ind_k5 * (R_5x5 - R_3x3)                       (kernel, outermost)
        R_kxk     = R_k,e3 + ind_e6 * (R_k,e6 - R_k,e3)                     (expansion)
        R_k,e     = R_se0 + ind_se25 * (R_se0.25 - R_se0 + ind_se50 * (R_se0.5 - R_se0.25))   (SE, innermost)

    and R = fixed parts + sum_l R_l (ms). Expanded, each nest ``v0 + i1 (v1 - v0 + i2 (v2 - v1))`` is the same
    polynomial as ``(1 - i1) v0 + i1 (1 - i2) v1 + i1 i2 v2``: a weight per layer type that is a product of
    indicators. That product form is what :meth:`SuperkernelLatency.type_weights` computes, because with hard
    0/1 indicators it reproduces each table value bit for bit (the nested form can be one rounding off), while
    values and gradients are those of eq. 12-17 (``tests/test_latency_differentiable.py`` checks both).

    Indicators come from :func:`indicator`: hard 0/1 in the forward pass, the sigmoid's gradient in the backward
    pass (``relax="sigmoid"``, the reference implementation's ``Indicator``), the identity gradient
    (``"ste"``), or the soft sigmoid in both passes (``"softmax"``: a two-way softmax of (x, 0) / tau).

:class:`ExpectedLatency`, ``"expected"`` (categorical searchers: multi-path, sampled-path, joint)
    ``E[R] = fixed + sum_l sum_type p_l(type) * R_l(type)`` for per-layer probabilities (softmax or
    Gumbel-softmax), over the same candidates.

SE entries. The published Pixel 1 table has no SE measurements (``median_ms: null``). SE is then either left out
of the search (``include_se=False``, the paper's original k x e space) or filled from SE scaling factors
(eq. 14-17 of the extended paper): per position and type, ``f = R(k, e, se) / R(k, e, 0)`` computed by
:func:`se_scaling_factors` from a table that has SE (e.g. one profiled on the host with ``mobilekit profile``)
and applied as ``R(k, e, se) := f * R(k, e, 0)``. ``include_se=None`` (auto) includes SE exactly when the
table has every SE entry or factors are given.

Every value is float64 and in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from mobilekit.errors import TableError
from mobilekit.latency_table import LatencyTable
from mobilekit.space import SKIP, Architecture, LayerType, SearchSpace

RELAX_MODES: tuple[str, ...] = ("sigmoid", "ste", "softmax")


# ---- indicators -----------------------------------------------------------------------------------------------
class _HardSigmoidGrad(torch.autograd.Function):
    """Forward ``1(x >= 0)``; backward the derivative of ``sigmoid(x / tau)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, tau: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.tau = tau
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x / ctx.tau)
        return grad * s * (1 - s) / ctx.tau, None


class _HardIdentityGrad(torch.autograd.Function):
    """Forward ``1(x >= 0)``; backward the identity (the plain straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad


def indicator(x: torch.Tensor, relax: str = "sigmoid", tau: float = 1.0) -> torch.Tensor:
    """Relaxed indicator ``1(x >= 0)`` of a decision margin ``x = stat - threshold`` (any shape).

    ``sigmoid``: hard 0/1 forward, gradient of ``sigmoid(x / tau)`` backward (Single-Path NAS's ``Indicator``).
    ``ste``: hard forward, identity gradient. ``softmax``: ``sigmoid(x / tau)`` in both passes (the two-way
    softmax over (x, 0) with temperature tau), so the forward pass mixes instead of choosing.
    """
    if relax == "sigmoid":
        return _HardSigmoidGrad.apply(x, float(tau))
    if relax == "ste":
        return _HardIdentityGrad.apply(x)
    if relax == "softmax":
        return torch.sigmoid(x / tau)
    raise ValueError(f"unknown relaxation {relax!r}: use one of {', '.join(RELAX_MODES)}")


def nested_choice_weights(inds: torch.Tensor) -> torch.Tensor:
    """Weights of n nested options from n-1 indicators (last dim): option j gets ``i_1 ... i_j (1 - i_{j+1})``.

    (..., n-1) -> (..., n). With 0/1 indicators exactly one weight is 1; the weights always sum to 1.
    """
    ones = inds.new_ones(inds.shape[:-1] + (1,))
    reached = torch.cat([ones, torch.cumprod(inds, dim=-1)], dim=-1)  # i_1 ... i_j (1 for j = 0)
    stop = torch.cat([1 - inds, ones], dim=-1)                          # (1 - i_{j+1}) (1 for the last)
    return reached * stop


def nested_latency(values: torch.Tensor, inds: torch.Tensor) -> torch.Tensor:
    """The literal eq. 12-17 nest ``v0 + i1 (v1 - v0 + i2 (v2 - v1 + ...))`` over the last dim of ``values``.

    values (..., n), inds (..., n-1) -> (...). Same polynomial as ``(nested_choice_weights(inds) * values).sum(-1)``.
    """
    inner = torch.zeros_like(values[..., 0])
    for j in range(values.shape[-1] - 2, -1, -1):
        inner = inds[..., j] * (values[..., j + 1] - values[..., j] + inner)
    return values[..., 0] + inner


# ---- SE scaling factors -----------------------------------------------------------------------------------------
def se_scaling_factors(table: LatencyTable, space: SearchSpace | None = None) -> dict[int, dict[str, float]]:
    """SE scaling factors (eq. 14-17): ``{position: {"ir_k5_e6_se0.25": R(k5 e6 se0.25) / R(k5 e6), ...}}``.

    Computed from a table that has SE entries, for every searchable position and SE type measured together
    with its non-SE twin. Raises :class:`TableError` when the table has no such pair at all.
    """
    space = space or table.search_space()
    factors: dict[int, dict[str, float]] = {}
    for position in space.searchable_positions:
        for layer_type in position.candidates:
            if layer_type.is_skip or not layer_type.se_ratio:
                continue
            base = LayerType(layer_type.kernel, layer_type.expansion, 0.0)
            if table.has(position.index, layer_type) and table.has(position.index, base):
                base_ms = table.latency_ms(position.index, base)
                if base_ms > 0:
                    factors.setdefault(position.index, {})[layer_type.name] = (
                        table.latency_ms(position.index, layer_type) / base_ms)
    if not factors:
        raise TableError(f"{table.path or 'latency table'}: has no SE entries next to their non-SE types, so no SE "
                         "scaling factors can be computed; profile SE types (mobilekit profile) on some device first")
    return factors


# ---- the grid of a single-path space -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SuperkernelGrid:
    """The nested options of a single-path search: sorted kernels, expansions and SE ratios (0 first)."""

    kernels: tuple[int, ...]
    expansions: tuple[int, ...]
    se_ratios: tuple[float, ...]

    def layer_type(self, k: int, e: int, s: int) -> LayerType:
        """Indices into the three option lists -> :class:`LayerType`."""
        return LayerType(self.kernels[k], self.expansions[e], self.se_ratios[s])


def superkernel_grid(space: SearchSpace, include_se: bool = True) -> SuperkernelGrid:
    """Read the kernel x expansion x SE grid shared by every searchable position of ``space``.

    Raises:
        TableError: a searchable position's candidates are not the full product grid (single-path search
            needs nested options at every position).
    """
    grids = set()
    for position in space.searchable_positions:
        types = [t for t in position.candidates if not t.is_skip]
        grid = (tuple(sorted({t.kernel for t in types})), tuple(sorted({t.expansion for t in types})),
                tuple(sorted({t.se_ratio for t in types} | {0.0})))
        if len(types) != len(grid[0]) * len(grid[1]) * len(grid[2]) or 0.0 not in {t.se_ratio for t in types}:
            raise TableError(f"layer {position.index} of space {space.name!r}: single-path search needs every "
                             "kernel x expansion x SE combination (SE 0 included) among the candidates")
        grids.add(grid)
    if len(grids) != 1:
        raise TableError(f"space {space.name!r}: searchable positions have different candidate grids; "
                         "single-path search needs one nested grid for all of them")
    kernels, expansions, se_ratios = grids.pop()
    return SuperkernelGrid(kernels, expansions, se_ratios if include_se else (0.0,))


def _table_has_se(table: LatencyTable, space: SearchSpace) -> bool:
    return all(table.has(p.index, t) for p in space.searchable_positions for t in p.candidates
               if not t.is_skip and t.se_ratio)


class LatencyModel(Protocol):
    """What every searcher (and :mod:`mobilekit.search.budget`) needs from a latency model, in ms."""

    space: SearchSpace
    include_se: bool
    fixed_ms: float

    def type_ms(self, position: int, layer_type: LayerType) -> float: ...
    def allowed_types(self, position) -> tuple[LayerType, ...]: ...
    def lookup_ms(self, arch: Architecture) -> float: ...
    def bounds_ms(self) -> tuple[float, float]: ...


class TableLatency(nn.Module):
    """The table lookup latency model, and the shared part of the differentiable forms: per-position candidate
    values read from the table (float64 ms). Implements :class:`LatencyModel`."""

    def __init__(self, table: LatencyTable, space: SearchSpace | None = None, include_se: bool | None = None,
                 se_factors: dict[int, dict[str, float]] | None = None) -> None:
        super().__init__()
        self.table = table
        self.space = space or table.search_space()
        has_se = _table_has_se(table, self.space)
        any_se = any(t.se_ratio for p in self.space.searchable_positions for t in p.candidates)
        if include_se is None:
            include_se = any_se and (has_se or se_factors is not None)
        if include_se and not has_se and se_factors is None:
            raise TableError(f"{table.path or 'latency table'}: SE types were not measured; search without SE "
                             "(include_se=False) or pass SE scaling factors from a table that has them "
                             "(se_scaling_factors(other_table))")
        self.include_se = bool(include_se and any_se)
        self.se_factors = se_factors if (self.include_se and not has_se) else None
        covered = table.fixed_positions()
        fixed = table.fixed_ms()
        for position in self.space.positions:
            if not position.searchable and position.index not in covered:
                fixed += self.table.latency_ms(position.index, position.candidates[0])
        self.fixed_ms = float(fixed)

    def type_ms(self, position: int, layer_type: LayerType) -> float:
        """Table latency of one type (ms), SE filled from the scaling factors where the table lacks it."""
        if layer_type.se_ratio and self.se_factors is not None and not self.table.has(position, layer_type):
            base = LayerType(layer_type.kernel, layer_type.expansion, 0.0)
            try:
                factor = self.se_factors[position][layer_type.name]
            except KeyError:
                raise TableError(f"no SE scaling factor for layer {position} type {layer_type.name}; "
                                 "compute the factors from a table of the same space") from None
            return factor * self.table.latency_ms(position, base)
        return self.table.latency_ms(position, layer_type)

    def allowed_types(self, position) -> tuple[LayerType, ...]:
        """Candidates the search may choose at a position (SE ones only when SE is included)."""
        return tuple(t for t in position.candidates if self.include_se or not t.se_ratio)

    def lookup_ms(self, arch: Architecture) -> float:
        """Fixed parts + each chosen type's latency (ms); equals ``table.lookup_ms`` wherever the table has SE."""
        return self.fixed_ms + sum(self.type_ms(s.index, s.op) for s in arch.layers() if s.position.searchable)

    def bounds_ms(self) -> tuple[float, float]:
        """(fastest, slowest) network the search can reach, in ms."""
        lo = hi = self.fixed_ms
        for position in self.space.searchable_positions:
            values = [self.type_ms(position.index, t) for t in self.allowed_types(position)]
            lo, hi = lo + min(values), hi + max(values)
        return lo, hi


@dataclass
class Decisions:
    """Per searchable layer relaxed indicators (0/1 in the forward pass unless relax is "softmax").

    keep (L,): 1 = the block runs (e3 channels on), 0 = skip; 1 where skip is not allowed.
    kernel (L, K-1), expand (L, E-1), se (L, S-1): nested "next option on" indicators.
    """

    keep: torch.Tensor
    kernel: torch.Tensor
    expand: torch.Tensor
    se: torch.Tensor


class SuperkernelLatency(TableLatency):
    """R (ms) of the single-path superkernel from its threshold decisions (eq. 12-17; see the module docstring).

    Shapes: L searchable positions, K kernels, E expansions, S SE ratios (S = 1 without SE).
    Buffers: ``values`` (L, K, E, S) table ms, ``skip_ms`` (L,), ``skippable`` (L,) bool.
    """

    def __init__(self, table: LatencyTable, space: SearchSpace | None = None, include_se: bool | None = None,
                 se_factors: dict[int, dict[str, float]] | None = None) -> None:
        super().__init__(table, space, include_se, se_factors)
        self.grid = superkernel_grid(self.space, self.include_se)
        self.positions = self.space.searchable_positions
        g = self.grid
        values = torch.empty(len(self.positions), len(g.kernels), len(g.expansions), len(g.se_ratios),
                             dtype=torch.float64)
        for l, position in enumerate(self.positions):
            for k in range(len(g.kernels)):
                for e in range(len(g.expansions)):
                    for s in range(len(g.se_ratios)):
                        values[l, k, e, s] = self.type_ms(position.index, g.layer_type(k, e, s))
        self.register_buffer("values", values)
        self.register_buffer("skippable", torch.tensor([SKIP in p.candidates for p in self.positions]))
        self.register_buffer("skip_ms", torch.tensor(
            [self.type_ms(p.index, SKIP) if SKIP in p.candidates else 0.0 for p in self.positions],
            dtype=torch.float64))

    def _keep(self, d: Decisions) -> torch.Tensor:
        """The keep indicators, fixed to 1 where skip is not a candidate (those positions have no t_e3)."""
        keep = d.keep.to(self.values.dtype)
        return torch.where(self.skippable, keep, torch.ones_like(keep))

    def type_weights(self, d: Decisions) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight of the skip option (L,), weights of the MBConv types (L, K, E, S)), float64, summing to 1."""
        f = self.values.dtype
        wk = nested_choice_weights(d.kernel.to(f))
        we = nested_choice_weights(d.expand.to(f))
        ws = nested_choice_weights(d.se.to(f))
        keep = self._keep(d)
        mb = keep[:, None, None, None] * wk[:, :, None, None] * we[:, None, :, None] * ws[:, None, None, :]
        return 1 - keep, mb

    def layer_ms(self, d: Decisions) -> torch.Tensor:
        """R_l of each searchable layer, (L,) float64 ms."""
        skip_w, mb_w = self.type_weights(d)
        return skip_w * self.skip_ms + (mb_w * self.values).flatten(1).sum(1)

    def forward(self, d: Decisions) -> torch.Tensor:
        """Latency R in ms (scalar float64 tensor): fixed parts + sum of R_l."""
        return self.fixed_ms + self.layer_ms(d).sum()

    def nested_ms(self, d: Decisions) -> torch.Tensor:
        """R computed with the literal nested expressions of eq. 12-17 (same polynomial as :meth:`forward`)."""
        f = self.values.dtype
        r = nested_latency(self.values, d.se.to(f)[:, None, None, :])        # (L, K, E)
        r = nested_latency(r, d.expand.to(f)[:, None, :])                    # (L, K)
        r = nested_latency(r, d.kernel.to(f))                                # (L,)
        r = self.skip_ms + self._keep(d) * (r - self.skip_ms)
        return self.fixed_ms + r.sum()

    def decisions_for(self, arch: Architecture) -> Decisions:
        """The 0/1 decisions that select ``arch``'s searchable layers (float32)."""
        g = self.grid
        keep, kernel, expand, se = [], [], [], []
        for position, op in zip(self.positions, (arch.choices[p.index] for p in self.positions)):
            keep.append(0.0 if op.is_skip else 1.0)
            op = LayerType(g.kernels[0], g.expansions[0], 0.0) if op.is_skip else op
            if op.se_ratio not in g.se_ratios:
                raise TableError(f"layer {position.index} type {op.name}: SE is not part of this latency model "
                                 "(the table has no SE entries)")
            kernel.append(_steps(g.kernels, op.kernel))
            expand.append(_steps(g.expansions, op.expansion))
            se.append(_steps(g.se_ratios, op.se_ratio))
        return Decisions(torch.tensor(keep), torch.tensor(kernel).reshape(len(keep), -1),
                         torch.tensor(expand).reshape(len(keep), -1), torch.tensor(se).reshape(len(keep), -1))


def _steps(options: tuple, chosen) -> list[float]:
    """Nested indicators that select ``chosen`` among sorted ``options``: [1]*index + [0]*rest."""
    index = options.index(chosen)
    return [1.0 if j < index else 0.0 for j in range(len(options) - 1)]


class ExpectedLatency(TableLatency):
    """E[R] = fixed + sum_l sum_type p_l(type) R_l(type) for categorical searchers (ms, float64).

    ``candidates[l]`` lists the types of searchable position l in column order; ``values`` (L, C) holds their
    ms, padded with 0 past each row's length (padded probabilities must be 0).
    """

    def __init__(self, table: LatencyTable, space: SearchSpace | None = None, include_se: bool | None = None,
                 se_factors: dict[int, dict[str, float]] | None = None) -> None:
        super().__init__(table, space, include_se, se_factors)
        self.positions = self.space.searchable_positions
        self.candidates: list[tuple[LayerType, ...]] = [self.allowed_types(p) for p in self.positions]
        width = max(len(c) for c in self.candidates)
        values = torch.zeros(len(self.positions), width, dtype=torch.float64)
        mask = torch.zeros(len(self.positions), width, dtype=torch.bool)
        for l, (position, types) in enumerate(zip(self.positions, self.candidates)):
            for c, layer_type in enumerate(types):
                values[l, c] = self.type_ms(position.index, layer_type)
                mask[l, c] = True
        self.register_buffer("values", values)
        self.register_buffer("mask", mask)

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        """probs (L, C) per-layer type probabilities (rows sum to 1) -> E[R] in ms (scalar float64)."""
        return self.fixed_ms + (probs.to(self.values.dtype) * self.values).sum()

    def one_hot(self, arch: Architecture) -> torch.Tensor:
        """(L, C) one-hot probabilities of ``arch``'s choices."""
        probs = torch.zeros_like(self.values)
        for l, (position, types) in enumerate(zip(self.positions, self.candidates)):
            op = arch.choices[position.index]
            if op not in types:
                raise TableError(f"layer {position.index} type {op.name} is not among the searched candidates")
            probs[l, types.index(op)] = 1.0
        return probs


LATENCY_MODELS: dict[str, type[TableLatency]] = {
    "lookup": TableLatency, "superkernel": SuperkernelLatency, "expected": ExpectedLatency,
}


def build_latency_model(kind: str, table: LatencyTable, include_se: bool | None = None,
                        se_table: LatencyTable | None = None) -> TableLatency:
    """The latency model ``kind`` (a key of :data:`LATENCY_MODELS`) of ``table``; SE types filled from the SE
    scaling factors of ``se_table`` when given (see :func:`se_scaling_factors`)."""
    factors = se_scaling_factors(se_table) if se_table is not None else None
    return LATENCY_MODELS[kind](table, include_se=include_se, se_factors=factors)
