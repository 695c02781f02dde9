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
layer; thresholds start below 1, so every subset starts on. As in the reference implementation (and eq. 3) the
expansion and keep statistics are taken on the depthwise kernel after the kernel decision; their init reference
is masked the same way, so every type of a position is reachable by moving only its own thresholds.

Unlike the reference, the statistics carry no gradient: the decisions' gradients (the runtime term's and the
cross-entropy's, through the straight-through indicator) reach the thresholds only, and the weights learn from
the cross-entropy of the chosen subnet. With the reference's coupling, Adam turns the runtime term's tiny
gradient on a dropped subset's weights into full-size steps that shrink them to zero within a few dozen steps,
after which the subset can never return; here a dropped subset keeps its weights, and
:meth:`SuperMBConv.limit_thresholds` keeps its threshold within reach of its statistic. Decisions are hard 0/1 in the
forward pass with a sigmoid gradient (see :func:`mobilekit.latency.differentiable.indicator` for ``ste`` and
``softmax``). During the first epochs each subset is dropped with probability ``subset_dropout`` (the decisions
fed to the runtime model are not).

What a step computes. Mathematically the block is the whole superkernel with every subset multiplied by its
indicator (channel decisions mask the depthwise output after its BN and ReLU6, ``keep`` the whole branch;
:meth:`SuperMBConv._forward_masked`, which the soft ``softmax`` relaxation runs). At hard decisions the forward
runs only the chosen subsets, sliced out of the superkernel: the expansion, depthwise and projection convs over
the chosen channels, the chosen kernel's centre of the depthwise weight, the chosen squeeze channels, nothing for a
skip. That is exactly the derived network's computation (:func:`extract_subnet`, checked in the tests), with the
on-indicators folded into weights (projection columns, BN affine) so that their thresholds get the masked
superkernel's gradient. An off subset's threshold needs its contribution, ``dL/d ind = <dL/d output, what the
subset would add>``; it is added as ``ind * contribution`` (0 in the forward pass, computed without a graph of
the subset's own weights, which get no gradient while it is off) only while the decision is in play: its margin
within ``play_band`` of the threshold, else on a random ``play_fraction`` of steps with its gradient scaled by
``1 / play_fraction`` (unbiased). A margin band alone would not do: at the farthest an off margin gets
(``-threshold_reach``, 0.25 by default) the sigmoid relaxation's gradient is still 28 % of its peak at the final
temperature 0.1, and the straight-through one does not decay at all, so a band would either cover every decision
or silence the cross-entropy's pull back on a dropped subset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mobilekit.errors import SearchError
from mobilekit.latency.differentiable import Decisions, SuperkernelGrid, indicator
from mobilekit.models.torch_builder import MBConv, MobileNet, Head, SqueezeExcite, Stem, conv_bn, sliced_batch_norm
from mobilekit.search.depthwise import conv_like
from mobilekit.space import SKIP, Architecture, LayerPosition, LayerSpec, LayerType, SearchSpace

HARD = "sigmoid"  # the relaxation whose forward pass is the hard decision
DECISIONS = ("keep", "kernel", "expand", "se")


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
            w0 = self.depthwise[0].weight.detach()
            _, _, se_ref = self._group_sq_norms(w0.pow(2))
            self.register_buffer("ref_kernel", self._ring_sq_norms())
        # keep/expand reference: the depthwise weight at init, squared, masked like the current weight (eq. 3 of
        # the paper compares the kernel-masked weights; referencing them with every ring on made a kernel move a skip)
        self.register_buffer("ref_depthwise_sq", w0.pow(2).clone())   # (mid, 1, k_max, k_max)
        self.register_buffer("ref_se", se_ref)
        self.register_buffer("_expand_sizes", _group_sizes(self.mids), persistent=False)      # (E-1,) channels
        self.register_buffer("_squeeze_sizes", _group_sizes(self.squeezes), persistent=False)  # (S-1,)
        self._decided: tuple[str, torch.Tensor] | None = None   # (relax, margins) of the last decide with grad

    # ---- decisions ----------------------------------------------------------------------------------------------
    def _kernel_mask(self, kernel_inds: torch.Tensor) -> torch.Tensor:
        """(k_max, k_max) mask: the smallest kernel's centre plus each ring whose kernel is on."""
        return self.centers[0] + (torch.cumprod(kernel_inds, 0)[:, None, None] * self.rings).sum(0)

    def _masked_kernel(self, kernel_inds: torch.Tensor) -> torch.Tensor:
        """The depthwise weight (mid, 1, k_max, k_max) with the rings of the kernels that are off zeroed."""
        return self.depthwise[0].weight * self._kernel_mask(kernel_inds)

    def _ring_sq_norms(self) -> torch.Tensor:
        """Squared norms of the depthwise kernel's rings, (K-1,)."""
        w = self.depthwise[0].weight
        return (w.pow(2).sum((0, 1))[None] * self.rings).sum((1, 2))

    def _group_sq_norms(self, w_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Squared norms of the keep channels (1,), the expansion groups (E-1,) and the squeeze groups (S-1,),
        from the squared (masked) depthwise weight ``w_sq`` (mid, 1, k_max, k_max)."""
        per_channel = w_sq.sum((1, 2, 3))
        bounds = self.mids
        keep = per_channel[:bounds[0]].sum().reshape(1)
        expand = torch.stack([per_channel[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])]) \
            if len(bounds) > 1 else w_sq.new_zeros(0)
        if self.se is None:
            return keep, expand, w_sq.new_zeros(0)
        per_squeeze = self.se.reduce.weight.pow(2).sum((1, 2, 3))
        sq = self.squeezes
        se = torch.stack([per_squeeze[a:b].sum() for a, b in zip(sq[:-1], sq[1:])])
        return keep, expand, se

    @torch.no_grad()
    def statistics(self, relax: str = HARD, tau: float = 1.0) -> dict[str, torch.Tensor]:
        """Relative squared norms ``||w_subset||^2 / ||w_subset at init||^2`` of every subset (no gradient):
        {"kernel" (K-1,), "keep" (1,), "expand" (E-1,), "se" (S-1,)}.

        keep/expand are taken after the kernel decision (eq. 3: the channel groups of the kernel-masked weight),
        and divided by the init weight under the same mask, so they start at 1 whichever kernel is chosen: a
        kernel move leaves them where they were (before, the reference had every ring on, so dropping the 5x5
        ring cut them to ~0.37 and a 5x5 -> 3x3 move became a skip)."""
        kernel = self._ring_sq_norms() / self.ref_kernel
        mask_sq = self._kernel_mask(indicator(kernel - self.t_kernel, relax, tau)).pow(2)
        keep, expand, se = self._group_sq_norms(self.depthwise[0].weight.pow(2) * mask_sq)
        keep_ref, expand_ref, _ = self._group_sq_norms(self.ref_depthwise_sq * mask_sq)
        return {"kernel": kernel, "keep": keep / keep_ref, "expand": expand / expand_ref, "se": se / self.ref_se}

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
        if torch.is_grad_enabled():                                    # the forward's in-play plan reads them
            self._decided = (relax, torch.cat([out[key][0] for key in DECISIONS]).detach())
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
    play_band: float = 0.05       # an off subset whose margin is within this of its threshold is computed every step,
    play_fraction: float = 0.25   # one farther off on this fraction of steps, with its gradient scaled by 1 / fraction

    def forward(self, x: torch.Tensor, inds: dict[str, torch.Tensor], w_eff: torch.Tensor,
                subset_dropout: float = 0.0) -> torch.Tensor:
        """x (N, in, H, W) with this layer's indicators (``decide``'s second elements) -> (N, out, H/s, W/s).

        Hard (0/1) indicators run only the chosen subsets, sliced out of the superkernel (the derived network's
        computation), plus an off subset's contribution while its decision is in play (see :meth:`_plan`).
        Soft indicators (``relax="softmax"``) mix every subset, so they run the whole superkernel with masks.
        """
        current = {key: inds[key] for key in DECISIONS}
        live = None
        if self.training and subset_dropout > 0:
            live = {key: _drop_mask(current[key], subset_dropout) for key in ("expand", "se")}
            live["keep"] = _drop_mask(current["keep"], subset_dropout) if self.skippable \
                else torch.ones_like(current["keep"])
            live["kernel"] = _drop_mask(current["kernel"], subset_dropout)
            current = {key: current[key] * live[key] for key in DECISIONS}
            w_eff = self._masked_kernel(current["kernel"])
        plan = self._plan(current, live)
        if plan is None:
            return self._forward_masked(x, current, w_eff)
        if self.training:
            for bn in (self.expand[1], self.depthwise[1], self.project[1]):
                bn.num_batches_tracked.add_(1)
        keep_on, _, keep_gate = plan["keep"]
        if keep_on or not self.residual:
            z = self._branch(x, plan, w_eff)
            h = self._project_bn(z, current["keep"] if self.skippable and self.residual else None)
            return x + h if self.residual else h
        if keep_gate is None:
            return x                                                   # skip, its decision not in play
        with torch.no_grad():                                          # keep's gradient: <dL/d out, branch output>
            h = self._project_bn(self._branch(x, plan, w_eff))
        return x + keep_gate * h

    def _plan(self, current: dict[str, torch.Tensor], live: dict[str, torch.Tensor] | None) -> dict | None:
        """Which option each hard decision chose and whether its first off indicator is in play; None for soft
        indicators. Returns {key: (options on, options on if that indicator flipped (None: not in play),
        the cumulative gates (cumprod of the indicators) with that indicator's gradient scaled by its
        importance weight)}.

        An off subset's contribution is what its threshold's gradient needs: dL/d ind = <dL/d output, what the
        subset would add>. It is computed while its decision is in play: when the margin ``stat - t`` stored by
        the last :meth:`decide` is within ``play_band``, else on a random ``play_fraction`` of steps with the
        gradient scaled by ``1 / play_fraction``, so its expected gradient is the full computation's (see the
        module docstring). Never when no gradient is recorded or for a dropped subset (its gradient is 0);
        always when no stored margins agree with the indicators.
        """
        sizes = [current[key].numel() for key in DECISIONS]
        parts = [current[key].detach().reshape(-1) for key in DECISIONS]
        parts += [live[key].reshape(-1) for key in DECISIONS] if live is not None else []
        relax, margins = self._decided if self._decided is not None else (None, None)
        if relax == "softmax":
            return None
        if margins is not None:
            parts.append(margins.to(parts[0].device, parts[0].dtype))
        flat = torch.cat(parts).tolist()
        total = sum(sizes)
        if any(v != 0.0 and v != 1.0 for v in flat[:total]):
            return None
        alive = flat[total:2 * total] if live is not None else [1.0] * total
        stored = flat[-total:] if margins is not None else None
        if stored is not None and any(a == 1.0 and (m >= 0) != (v == 1.0)
                                      for v, a, m in zip(flat[:total], alive, stored)):
            stored = None                                             # margins of other decisions than these
        plan, start = {}, 0
        for key, size in zip(DECISIONS, sizes):
            values = flat[start:start + size]
            on = _count_on(values)
            flip, weight = None, 0.0
            if on < size and (key == "keep" or plan["keep"][0]):      # (under a skip only keep is in play)
                weight = self._play_weight(current[key], alive[start + on],
                                           None if stored is None else stored[start + on])
                if weight:
                    flip = on + 1 + _count_on(values[on + 1:])
            v = current[key]
            if weight not in (0.0, 1.0):
                scale = torch.ones(size, dtype=v.dtype, device=v.device)
                scale[on] = weight
                v = v.detach() + (v - v.detach()) * scale             # same values, gradient x weight
            gates = torch.cumprod(v, 0) if key != "keep" else (v if flip is not None else None)
            plan[key] = (on, flip, gates)
            start += size
        return plan

    def _play_weight(self, ind: torch.Tensor, alive: float, margin: float | None) -> float:
        """0 (not in play) or the importance weight of an off subset's contribution this step."""
        if not (torch.is_grad_enabled() and ind.requires_grad) or alive == 0.0:
            return 0.0
        if margin is None or abs(margin) <= self.play_band or self.play_fraction >= 1:
            return 1.0
        if self.play_fraction <= 0 or float(torch.rand(())) >= self.play_fraction:
            return 0.0
        return 1.0 / self.play_fraction

    def _bn(self, bn: nn.BatchNorm2d, h: torch.Tensor, channels: slice) -> torch.Tensor:
        """BatchNorm of the channels ``channels`` of ``bn`` (their running statistics update in place)."""
        return sliced_batch_norm(bn, h, channels)

    def _project_bn(self, z: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The projection's BatchNorm, times ``keep`` (1,) folded into its affine weights."""
        bn = self.project[1]
        if keep is None:
            return sliced_batch_norm(bn, z)
        return sliced_batch_norm(bn, z, weight=bn.weight * keep, bias=bn.bias * keep)

    def _expanded(self, x: torch.Tensor, channels: slice, kernel_on: int, w_eff: torch.Tensor,
                  rings: list[tuple[int, torch.Tensor]] = ()) -> torch.Tensor:
        """Expansion channels ``channels`` after the 1x1 expansion and the depthwise conv (each with BN and ReLU6)
        with kernel ``kernels[kernel_on]``, plus ``gate * ring j`` for each (j, gate) of ``rings`` in play:
        (N, in, H, W) -> (N, len(channels), H/s, W/s)."""
        h = F.relu6(self._bn(self.expand[1], F.conv2d(x, self.expand[0].weight[channels]), channels))
        k_max, k = self.grid.kernels[-1], self.grid.kernels[kernel_on]
        lo = (k_max - k) // 2
        stride = self.depthwise[0].stride
        d = conv_like(self.depthwise[0], h, w_eff[channels, :, lo:lo + k, lo:lo + k], stride, k // 2)
        for j, gate in rings:
            with torch.no_grad():                                      # ring j's weights get no gradient while off
                k = self.grid.kernels[j + 1]
                lo = (k_max - k) // 2
                ring = (self.depthwise[0].weight[channels] * self.rings[j])[:, :, lo:lo + k, lo:lo + k]
                ring_out = conv_like(self.depthwise[0], h, ring, stride, k // 2)
            d = d + gate * ring_out
        return F.relu6(self._bn(self.depthwise[1], d, channels))

    def _se_gate(self, pooled: torch.Tensor, squeeze_gates: torch.Tensor, squeeze_on: int) -> torch.Tensor:
        """SE gate (N, C, 1, 1) of pooled (N, C, 1, 1) with the first ``squeezes[squeeze_on]`` squeeze channels,
        squeeze group j scaled by ``squeeze_gates[j]``."""
        c, s = pooled.shape[1], self.squeezes[squeeze_on]
        r = torch.relu(F.conv2d(pooled, self.se.reduce.weight[:s, :c], self.se.reduce.bias[:s]))
        if squeeze_on > 0:
            r = r * torch.repeat_interleave(squeeze_gates[:squeeze_on], self._squeeze_sizes[:squeeze_on],
                                        output_size=self.squeezes[squeeze_on])[None, :, None, None]
        return torch.sigmoid(F.conv2d(r, self.se.expand.weight[:c, :s], self.se.expand.bias[:c]))

    def _branch(self, x: torch.Tensor, plan: dict, w_eff: torch.Tensor) -> torch.Tensor:
        """The block's pre-BN projection (N, out, H/s, W/s) at hard decisions: the chosen subsets sliced out of
        the superkernel, plus ``gate * contribution`` of each off subset in play (computed without a graph of
        its own weights, which get no gradient while off: only its indicator does)."""
        (e_on, e_flip, e_gates), (k_on, k_flip, k_gates), (s_on, s_flip, s_gates) = \
            plan["expand"], plan["kernel"], plan["se"]
        mid = self.mids[e_on]
        on = slice(0, mid)
        rings = [(j, k_gates[j]) for j in range(k_on, k_flip)] if k_flip is not None else []
        h = self._expanded(x, on, k_on, w_eff, rings)
        extra = []                                                     # (channels, gate, activations) in play
        for j in range(e_on, e_flip if e_flip is not None else e_on):
            channels = slice(self.mids[j], self.mids[j + 1])
            with torch.no_grad():
                activations = self._expanded(x, channels, k_on, w_eff)
            extra.append((channels, e_gates[j], activations))
        channel_gates = torch.repeat_interleave(e_gates[:e_on], self._expand_sizes[:e_on],
                                                output_size=mid - self.mids[0]) if e_on else None
        if channel_gates is not None:
            channel_gates = torch.cat([channel_gates.new_ones(self.mids[0]), channel_gates])
        weight = self.project[0].weight[:, on]
        y = h
        if self.se is not None and s_on > 0:
            pooled = h.mean((2, 3), keepdim=True)
            if channel_gates is not None:
                pooled = pooled * channel_gates[None, :, None, None]
            pooled = torch.cat([pooled] + [g * a.mean((2, 3), keepdim=True) for _, g, a in extra], 1)
            gate = self._se_gate(pooled, s_gates, s_on if s_flip is None else s_flip)
            se_on = s_gates[0]
            scale = 1 - se_on + se_on * gate
            y = h * scale[:, :mid]
            extra = [(c, g, a * scale[:, c].detach()) for c, g, a in extra]
        elif self.se is not None and s_flip is not None:
            # SE off, in play: h (1 - on + on gate) with the squeeze masked to 0 is a per-channel scale by
            # sigmoid(expand bias), which folds into the projection's weight (exactly 1 while on = 0)
            se_on = s_gates[0]
            weight = weight * (1 - se_on + se_on * torch.sigmoid(self.se.expand.bias[:mid]))[None, :, None, None]
        if channel_gates is not None:
            weight = weight * channel_gates[None, :, None, None]
        z = F.conv2d(y, weight)
        for c, gate, a in extra:
            with torch.no_grad():
                dz = F.conv2d(a, self.project[0].weight[:, c])
            z = z + gate * dz
        return z

    def _forward_masked(self, x: torch.Tensor, inds: dict[str, torch.Tensor], w_eff: torch.Tensor) -> torch.Tensor:
        """The whole superkernel with every subset masked by its indicator (soft indicators mix them)."""
        keep, expand, se = inds["keep"], inds["expand"], inds["se"]
        h = self.expand(x)
        conv = self.depthwise[0]
        h = conv_like(conv, h, w_eff, conv.stride, conv.padding)
        h = self.depthwise[2](self.depthwise[1](h))
        if len(self.mids) > 1:
            gates = torch.cumprod(expand, 0)
            channel_mask = torch.cat([h.new_ones(self.mids[0]), torch.repeat_interleave(gates, self._expand_sizes)])
            h = h * channel_mask[None, :, None, None]
        if self.se is not None:
            h = self._squeeze_excite(h, se)
        h = self.project(h)
        if self.residual:
            return x + keep * h
        return h

    def _squeeze_excite(self, h: torch.Tensor, se_inds: torch.Tensor) -> torch.Tensor:
        gates = torch.cumprod(se_inds, 0)                               # squeeze group j is on iff i_1 ... i_j
        squeeze_mask = torch.repeat_interleave(gates, self._squeeze_sizes)
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


def _group_sizes(bounds: list[int]) -> torch.Tensor:
    """Channels of each nested group ``[bounds[j], bounds[j+1])``, (len(bounds) - 1,) long."""
    return torch.tensor([b - a for a, b in zip(bounds[:-1], bounds[1:])], dtype=torch.long)


def _drop_mask(v: torch.Tensor, p: float) -> torch.Tensor:
    """0/1 mask like ``v`` that drops each entry with probability ``p``."""
    return (torch.rand_like(v) >= p).to(v.dtype)


def _count_on(inds: torch.Tensor | list[float]) -> int:
    """Number of leading 1s of nested indicators (the index of the chosen option)."""
    n = 0
    for value in (inds.tolist() if isinstance(inds, torch.Tensor) else inds):
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
