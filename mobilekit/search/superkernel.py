"""The single-path superkernel (Stamoulis et al., Single-Path NAS) and the supernet built from it.

One :class:`SuperMBConv` per searchable position holds the largest block of the grid: a 1x1 expansion to
``in x e_max`` channels, one ``k_max x k_max`` depthwise kernel over them, an SE block with the largest squeeze
width, and the 1x1 projection. Smaller choices are weight subsets of it, each switched by a learned threshold:

``kernel``  the ring ``k_i x k_i`` minus ``k_{i-1} x k_{i-1}`` of the depthwise kernel (t_k5 for the 5x5 ring)
``expand``  depthwise channels ``[in x e_{j-1}, in x e_j)`` (t_e6 for the e3 -> e6 channels)
``keep``    the first ``in x e_min`` channels (t_e3); off means the block is skipped (only where skip is allowed)
``se``      squeeze channels ``[s_{j-1}, s_j)`` of the SE reduce conv (t_se0.25, t_se0.5; s = max(1, int(in x r)))

A decision is ``indicator(stat - t)`` with ``stat = ||w_subset||^2 / ||w_subset at init||^2``: the paper's squared
group norm, divided by its value at initialisation so that one threshold scale (and learning rate) fits every
layer; thresholds start below 1, so every subset starts on. As in the reference implementation the expansion
and keep statistics are taken on the depthwise kernel after the kernel decision.

Unlike the reference, the statistics carry no gradient: the decisions' gradients (the runtime term's and the
cross-entropy's, through the straight-through indicator) reach the thresholds only, and the weights learn from
the cross-entropy of the chosen subnet. With the reference's coupling, Adam turns the runtime term's tiny
gradient on a dropped subset's weights into full-size steps that shrink them to zero within a few dozen steps,
after which the subset can never return; here a dropped subset keeps its weights, and
:meth:`SuperMBConv.limit_thresholds` keeps its threshold within reach of its statistic. Decisions are hard 0/1 in the
forward pass with a sigmoid gradient (see :func:`mobilekit.latency.runtime_loss.indicator` for ``ste`` and
``softmax``). Channel decisions mask the depthwise output (after its BN and ReLU6) and the whole branch is
multiplied by ``keep``, so at hard decisions the supernet computes exactly the derived network
(:func:`extract_subnet`, checked in the tests). During the first epochs each subset is dropped with probability
``subset_dropout`` (the decisions fed to the runtime model are not).
"""

from __future__ import annotations

import torch
from torch import nn

from mobilekit.errors import SearchError
from mobilekit.latency.runtime_loss import Decisions, SuperkernelGrid, indicator
from mobilekit.models.torch_builder import MBConv, MobileNet, Head, SqueezeExcite, Stem, conv_bn
from mobilekit.space import SKIP, Architecture, LayerPosition, LayerSpec, LayerType, SearchSpace

HARD = "sigmoid"  # the relaxation whose forward pass is the hard decision


def _squeeze_channels(in_channels: int, ratio: float) -> int:
    return max(1, int(in_channels * ratio)) if ratio else 0


class SuperMBConv(nn.Module):
    """Superkernel MBConv for one searchable position: (N, in, H, W) -> (N, out, H/s, W/s).

    Learned thresholds: ``t_keep`` (1,) where skip is allowed, ``t_kernel`` (K-1,), ``t_expand`` (E-1,),
    ``t_se`` (S-1,).
    """

    def __init__(self, position: LayerPosition, grid: SuperkernelGrid) -> None:
        super().__init__()
        if grid.expansions[0] < 2:
            raise SearchError(f"layer {position.index}: the superkernel needs expansions >= 2 (got {grid.expansions})")
        self.position = position
        self.grid = grid
        cin, k_max = position.in_channels, grid.kernels[-1]
        self.mids = [cin * e for e in grid.expansions]
        self.squeezes = [_squeeze_channels(cin, r) for r in grid.se_ratios]
        mid = self.mids[-1]
        self.expand = conv_bn(cin, mid, 1)
        self.depthwise = conv_bn(mid, mid, k_max, position.stride, groups=mid)
        self.se = SqueezeExcite(mid, self.squeezes[-1]) if len(grid.se_ratios) > 1 else None
        self.project = conv_bn(mid, position.out_channels, 1, act=False)
        self.skippable = SKIP in position.candidates
        self.residual = position.stride == 1 and position.in_channels == position.out_channels

        self.t_keep = nn.Parameter(torch.zeros(1 if self.skippable else 0))
        self.t_kernel = nn.Parameter(torch.zeros(len(grid.kernels) - 1))
        self.t_expand = nn.Parameter(torch.zeros(len(grid.expansions) - 1))
        self.t_se = nn.Parameter(torch.zeros(len(grid.se_ratios) - 1))

        centers = torch.zeros(len(grid.kernels), k_max, k_max)
        for i, k in enumerate(grid.kernels):
            lo = (k_max - k) // 2
            centers[i, lo:lo + k, lo:lo + k] = 1.0
        self.register_buffer("centers", centers)                       # (K, k_max, k_max)
        self.register_buffer("rings", centers[1:] - centers[:-1])      # (K-1, k_max, k_max)
        with torch.no_grad():
            keep_ref, expand_ref, se_ref = self._group_sq_norms(self._masked_kernel(torch.ones(len(grid.kernels) - 1)))
            self.register_buffer("ref_kernel", self._ring_sq_norms())
        self.register_buffer("ref_keep", keep_ref)
        self.register_buffer("ref_expand", expand_ref)
        self.register_buffer("ref_se", se_ref)

    # ---- decisions ----------------------------------------------------------------------------------------------
    def _masked_kernel(self, kernel_inds: torch.Tensor) -> torch.Tensor:
        """The depthwise weight (mid, 1, k_max, k_max) with the rings of the kernels that are off zeroed."""
        w = self.depthwise[0].weight
        mask = self.centers[0] + (torch.cumprod(kernel_inds, 0)[:, None, None] * self.rings).sum(0)
        return w * mask

    def _ring_sq_norms(self) -> torch.Tensor:
        """Squared norms of the depthwise kernel's rings, (K-1,)."""
        w = self.depthwise[0].weight
        return (w.pow(2).sum((0, 1))[None] * self.rings).sum((1, 2))

    def _group_sq_norms(self, w_eff: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Squared norms of the keep channels (1,), the expansion groups (E-1,) and the squeeze groups (S-1,)."""
        per_channel = w_eff.pow(2).sum((1, 2, 3))
        bounds = self.mids
        keep = per_channel[:bounds[0]].sum().reshape(1)
        expand = torch.stack([per_channel[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])]) \
            if len(bounds) > 1 else w_eff.new_zeros(0)
        if self.se is None:
            return keep, expand, w_eff.new_zeros(0)
        per_squeeze = self.se.reduce.weight.pow(2).sum((1, 2, 3))
        sq = self.squeezes
        se = torch.stack([per_squeeze[a:b].sum() for a, b in zip(sq[:-1], sq[1:])])
        return keep, expand, se

    @torch.no_grad()
    def statistics(self, relax: str = HARD, tau: float = 1.0) -> dict[str, torch.Tensor]:
        """Relative squared norms ``||w_subset||^2 / ||w_subset at init||^2`` of every subset (no gradient):
        {"kernel" (K-1,), "keep" (1,), "expand" (E-1,), "se" (S-1,)}; keep/expand after the kernel decision."""
        kernel = self._ring_sq_norms() / self.ref_kernel
        w_eff = self._masked_kernel(indicator(kernel - self.t_kernel, relax, tau))
        keep, expand, se = self._group_sq_norms(w_eff)
        return {"kernel": kernel, "keep": keep / self.ref_keep, "expand": expand / self.ref_expand, "se": se / self.ref_se}

    def decide(self, relax: str = HARD, tau: float = 1.0) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Margins ``stat - t`` and indicators of this layer's decisions, plus the kernel-masked depthwise weight.

        Returns ({"keep", "kernel", "expand", "se"} -> (margins, indicators)), w_eff (mid, 1, k_max, k_max).
        ``keep`` is the constant 1 (margin +inf) where skip is not allowed. Gradients of the margins reach the
        thresholds only (see the module docstring).
        """
        stats = self.statistics(relax, tau)
        out = {}
        for key in ("kernel", "expand", "se"):
            margin = stats[key] - getattr(self, f"t_{key}")
            out[key] = (margin, indicator(margin, relax, tau))
        if self.skippable:
            margin = stats["keep"] - self.t_keep
            out["keep"] = (margin, indicator(margin, relax, tau))
        else:
            ones = self.t_kernel.new_ones(1)
            out["keep"] = (ones * float("inf"), ones)
        return out, self._masked_kernel(out["kernel"][1])

    @torch.no_grad()
    def limit_thresholds(self, reach: float) -> None:
        """Keep every threshold at most ``reach`` above its statistic, so a dropped subset stays within reach."""
        stats = self.statistics()
        for key in ("kernel", "expand", "se", "keep"):
            t = getattr(self, f"t_{key}")
            if t.numel():
                torch.minimum(t, stats[key] + reach, out=t)

    # ---- forward ------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, inds: dict[str, torch.Tensor], w_eff: torch.Tensor,
                subset_dropout: float = 0.0) -> torch.Tensor:
        """x (N, in, H, W) with this layer's indicators (``decide``'s second elements) -> (N, out, H/s, W/s)."""
        keep, expand, se = inds["keep"], inds["expand"], inds["se"]
        if self.training and subset_dropout > 0:
            expand, se = _drop(expand, subset_dropout), _drop(se, subset_dropout)
            keep = _drop(keep, subset_dropout) if self.skippable else keep
            w_eff = self._masked_kernel(_drop(inds["kernel"], subset_dropout))
        h = self.expand(x)
        conv = self.depthwise[0]
        h = nn.functional.conv2d(h, w_eff, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        h = self.depthwise[2](self.depthwise[1](h))
        if len(self.mids) > 1:
            gates = torch.cumprod(expand, 0)
            sizes = torch.tensor([b - a for a, b in zip(self.mids[:-1], self.mids[1:])], device=h.device)
            channel_mask = torch.cat([h.new_ones(self.mids[0]), torch.repeat_interleave(gates, sizes)])
            h = h * channel_mask[None, :, None, None]
        if self.se is not None:
            h = self._squeeze_excite(h, se)
        h = self.project(h)
        if self.residual:
            return x + keep * h
        return h

    def _squeeze_excite(self, h: torch.Tensor, se_inds: torch.Tensor) -> torch.Tensor:
        gates = torch.cumprod(se_inds, 0)                               # squeeze group j is on iff i_1 ... i_j
        sizes = torch.tensor([b - a for a, b in zip(self.squeezes[:-1], self.squeezes[1:])], device=h.device)
        squeeze_mask = torch.repeat_interleave(gates, sizes)
        s = h.mean((2, 3), keepdim=True)
        s = torch.relu(self.se.reduce(s)) * squeeze_mask[None, :, None, None]
        gate = torch.sigmoid(self.se.expand(s))
        on = se_inds[0]
        return h * (1 - on + on * gate)

    # ---- derived type -------------------------------------------------------------------------------------------
    def chosen_type(self, inds: dict[str, torch.Tensor]) -> LayerType:
        """The layer type selected by 0/1 indicators."""
        if self.skippable and inds["keep"][0] < 0.5:
            return LayerType()
        g = self.grid
        return LayerType(g.kernels[_count_on(inds["kernel"])], g.expansions[_count_on(inds["expand"])],
                         g.se_ratios[_count_on(inds["se"])])


def _drop(v: torch.Tensor, p: float) -> torch.Tensor:
    return v * (torch.rand_like(v) >= p).to(v.dtype)


def _count_on(inds: torch.Tensor) -> int:
    """Number of leading 1s of nested indicators (the index of the chosen option)."""
    n = 0
    for value in inds.tolist():
        if value < 0.5:
            break
        n += 1
    return n


def __getattr__(name: str):
    # SuperNet (the skeleton with a superkernel block factory) and the extraction moved to .supernets
    if name in ("SuperNet", "extract_subnet", "extract_network"):
        from mobilekit.search import supernets

        return getattr(supernets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
