"""AutoHAS's temporary weights (eq. 4-5 of ``../shared/papers/autohas.txt``): ``W_B = f_B(W)``, one step of the
training rule with hyper-parameter basis ``B`` from the current weights ``W`` and gradient ``g``, and their mixture
``W' = sum_B P_B W_B`` whose validation loss is differentiated w.r.t. the encodings ``P``.

:func:`optimizer_step` is the functional twin of one ``torch.optim`` step (SGD with Nesterov momentum, Adam, AdamW as
:data:`~mobilekit.search.training.OPTIMIZERS` makes them), reading the optimiser's state without changing it, so a
temporary weight is exactly what the real step would give with that learning rate and weight decay.

:func:`mixed_step` forms ``W'`` over the Cartesian product of several hyper-parameters' bases (the coefficient of a
combination is the product of its ``P`` entries, Sec. 3.2) without keeping the temporary weights: the forward pass
sums the combinations whose coefficient is not 0 (one, with hard one-hot ``P``), the backward pass recomputes each
``W_B`` and takes ``dL/dP_B = <dL/dW', W_B>`` (times the other factors' coefficients). Memory stays near two copies
of the sampled path's weights whatever the number of bases. :func:`mixed_lr_step` is the same for the learning
rate x weight decay product of the supported rules, which are affine in the learning rate: it needs one direction
per weight-decay basis instead of one step per combination (what the search uses; the two agree, see the tests).

:func:`lookahead_step` is the same step as a differentiable function of the learning rate and the weight decay
(DiffAutoML's ``theta^{t+1}(eta)``, whose validation loss gives eta its hyper-gradient; see
:mod:`~mobilekit.search.methods.hypergradient`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Step = Callable[[tuple[float, ...]], list[torch.Tensor]]


def step_direction(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                   grads: Sequence[torch.Tensor], weight_decay: float | torch.Tensor) -> list[torch.Tensor]:
    """``D(weight_decay)``: one step of ``optimizer``'s rule from ``params`` with gradients ``grads`` is
    ``params - lr * D`` (every supported rule is affine in the learning rate). The optimiser's state is read, not
    changed. Differentiable w.r.t. whatever requires grad among its inputs (e.g. a ``weight_decay`` tensor, for
    a hyper-gradient; :func:`lookahead_step`); :func:`optimizer_direction` is the same without a graph.

    Supports the optimisers of :data:`~mobilekit.search.training.OPTIMIZERS`: ``torch.optim.SGD`` (momentum,
    dampening 0, Nesterov or not), ``Adam`` (L2 weight decay) and ``AdamW`` (decoupled), without amsgrad.
    """
    group = optimizer.param_groups[0]
    out = []
    for param, g in zip(params, grads):
        state = optimizer.state.get(param, {})      # keyed by the parameter itself
        p = param.detach()
        if isinstance(optimizer, torch.optim.SGD):
            d = g + weight_decay * p
            mu = group["momentum"]
            if mu:
                buf = state.get("momentum_buffer")
                buf = d if buf is None else mu * buf + (1 - group["dampening"]) * d
                d = d + mu * buf if group["nesterov"] else buf
            out.append(d)
        elif isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            beta1, beta2 = group["betas"]
            decoupled = isinstance(optimizer, torch.optim.AdamW)
            d = g if decoupled else g + weight_decay * p
            step = float(state["step"]) + 1 if "step" in state else 1.0
            m = state["exp_avg"] * beta1 + (1 - beta1) * d if "exp_avg" in state else (1 - beta1) * d
            v = state["exp_avg_sq"] * beta2 + (1 - beta2) * d * d if "exp_avg_sq" in state else (1 - beta2) * d * d
            # sqrt with a finite gradient where v = 0 (the value there is 0 either way)
            root = torch.where(v > 0, v, torch.ones_like(v)).sqrt() * (v > 0)
            denom = root / math.sqrt(1 - beta2 ** step) + group["eps"]
            direction = m / (denom * (1 - beta1 ** step))
            out.append(direction + weight_decay * p if decoupled else direction)
        else:
            raise TypeError(f"no functional step for {type(optimizer).__name__}; use sgd, adam or adamw")
    return out


@torch.no_grad()
def optimizer_direction(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                        grads: Sequence[torch.Tensor], weight_decay: float) -> list[torch.Tensor]:
    """:func:`step_direction` without building a graph (what the temporary weights of AutoHAS use)."""
    return step_direction(optimizer, params, grads, weight_decay)


def lookahead_step(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                   lr: float | torch.Tensor, weight_decay: float | torch.Tensor) -> list[torch.Tensor]:
    """The parameters after one step of ``optimizer``'s rule, ``params - lr * D(weight_decay)``, as a function of
    the hyper-parameters ``lr`` and ``weight_decay`` (floats or tensors that require grad): DiffAutoML's
    ``theta^{t+1}(eta)`` (eq. 6 of ``../shared/papers/diffautoml.txt``). ``params`` (the optimiser's own
    parameters, whose state it reads) and ``grads`` are taken as constants (detached: the paper treats
    ``theta^t`` as independent of ``eta``); the optimiser is not changed."""
    grads = [g.detach() for g in grads]
    return [p.detach() - lr * d for p, d in zip(params, step_direction(optimizer, params, grads, weight_decay))]


@torch.no_grad()
def optimizer_step(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                   lr: float, weight_decay: float) -> list[torch.Tensor]:
    """New tensors: the parameters after one step of ``optimizer``'s rule with ``lr`` and ``weight_decay``
    (``params - lr * D(weight_decay)``, :func:`optimizer_direction`); the optimiser's state is not changed."""
    return [p - lr * d for p, d in zip(params, optimizer_direction(optimizer, params, grads, weight_decay))]


@dataclass(frozen=True)
class AffineDirection:
    """``D(wd) = A + wd * c * params`` for every weight decay ``wd`` (:func:`affine_direction`), kept per tensor
    and not materialised: ``A = sum_k coef_k * tensors_k`` over ``terms``, each a coefficient and a list aligned
    with ``params`` (``None`` entries count as zero tensors: a parameter without a momentum buffer yet). Nothing
    is concatenated or copied into flat buffers; the steps below use ``torch._foreach_*`` over the lists."""

    terms: tuple[tuple[float, tuple[torch.Tensor | None, ...]], ...]
    c: float


def _dots(grads: Sequence[torch.Tensor | None], *lists: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
    """``[sum_i <grads_i, t_i> for t in lists]`` over aligned lists of tensors (``None`` entries skipped): 0-d
    tensors, one pass over the tensors (each gradient flattened once, the per-tensor products summed at the end).
    The 1-D tensors (BatchNorm affine parameters, biases: about two thirds of a path's ~180 tensors, a few
    percent of its elements) are concatenated into one product per list, since a call per tiny tensor costs more
    than its arithmetic."""
    parts: list[list[torch.Tensor]] = [[] for _ in lists]
    ones = [i for i, g in enumerate(grads)
            if g is not None and g.dim() == 1 and all(t[i] is not None for t in lists)]
    if ones:
        joined = torch.cat([grads[i] for i in ones])
        for part, tensors in zip(parts, lists):
            part.append(torch.dot(joined, torch.cat([tensors[i] for i in ones])))
    joined_ids = set(ones)
    for i, g in enumerate(grads):
        if g is None or i in joined_ids:
            continue
        flat = g.reshape(-1)
        for part, tensors in zip(parts, lists):
            t = tensors[i]
            if t is not None:
                part.append(torch.dot(flat, t.reshape(-1)))
    return [torch.stack(part).sum() if part else torch.zeros(()) for part in parts]


def _add_terms_(out: list[torch.Tensor], terms: AffineDirection, scale: float) -> list[torch.Tensor]:
    """``out += scale * A`` in place, per tensor (``A`` of ``terms``)."""
    for coef, tensors in terms.terms:
        pairs = [(o, t) for o, t in zip(out, tensors) if t is not None]
        if pairs and coef:
            torch._foreach_add_([o for o, _ in pairs], [t for _, t in pairs], alpha=scale * coef)
    return out


def affine_direction(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                     grads: Sequence[torch.Tensor]) -> AffineDirection | None:
    """``D(wd) = A + wd * c * params`` (:func:`step_direction`) for every weight decay ``wd``, when the rule is
    affine in the weight decay: SGD (momentum, dampening, Nesterov or not; ``c`` from the momentum) and AdamW
    (decoupled, ``c = 1``), as an :class:`AffineDirection` (``A`` per tensor, a combination of the gradients and
    the momentum buffers for SGD, not materialised). ``None`` for Adam, whose L2 term goes through the second
    moment.

    Derivation (SGD): ``d = g + wd p``; without a momentum buffer yet ``buf' = d``, else
    ``buf' = mu buf + (1 - dampening) d``; ``D = d + mu buf'`` (Nesterov) or ``buf'``, so ``D = k d + e buf`` with
    constants ``k``, ``e``: ``A = k g + e buf`` and ``c = k``. The optimiser's state is read, not changed."""
    group = optimizer.param_groups[0]
    grads = tuple(g.detach() if g.requires_grad else g for g in grads)
    if isinstance(optimizer, torch.optim.SGD):
        mu, damp, nesterov = group["momentum"], group["dampening"], group["nesterov"]
        if not mu:
            return AffineDirection(((1.0, grads),), 1.0)
        bufs = tuple(optimizer.state.get(p, {}).get("momentum_buffer") for p in params)
        k_first = 1.0 + mu if nesterov else 1.0            # a parameter without a buffer yet: buf' = d
        k = 1.0 + mu * (1 - damp) if nesterov else 1 - damp
        if all(b is None for b in bufs):
            return AffineDirection(((k_first, grads),), k_first)
        if k != k_first and any(b is None for b in bufs):
            return None              # dampening and a mixed state (a candidate never stepped): no common c
        # with dampening 0, a parameter without a buffer is one with a zero buffer (k_first == k)
        e = mu * mu if nesterov else mu
        return AffineDirection(((k, grads), (e, bufs)), k)
    if isinstance(optimizer, torch.optim.AdamW) and not group.get("amsgrad", False):
        # D(wd) = adam_direction(g) + wd p: the direction at wd = 0 is A
        return AffineDirection(((1.0, tuple(optimizer_direction(optimizer, params, grads, 0.0))),), 1.0)
    return None


class _AffineMixedStep(torch.autograd.Function):
    """``W' = p - lr_mix (A + wd_mix c p)`` per tensor, ``lr_mix = P_lr . lr_bases``, ``wd_mix = P_wd . wd_bases``;
    the backward pass takes the inner products of ``G = dL/dW'`` with ``p`` and with each term of ``A``."""

    @staticmethod
    def forward(ctx, affine, params, lr_bases, wd_bases, p_lr, p_wd):  # type: ignore[override]
        lr_mix = (p_lr.detach() * lr_bases).sum()
        wd_mix = (p_wd.detach() * wd_bases).sum()
        ctx.affine, ctx.params = affine, params
        ctx.save_for_backward(lr_bases, wd_bases, lr_mix, wd_mix)
        lr_f = float(lr_mix)
        out = torch._foreach_mul(params, 1 - lr_f * float(wd_mix) * affine.c)
        return tuple(_add_terms_(out, affine, -lr_f))

    @staticmethod
    def backward(ctx, *grad_out):  # type: ignore[override]
        lr_bases, wd_bases, lr_mix, wd_mix = ctx.saved_tensors
        affine = ctx.affine
        along_p, *along_terms = _dots(grad_out, ctx.params, *(tensors for _, tensors in affine.terms))
        along_a = sum((coef * d for (coef, _), d in zip(affine.terms, along_terms)), torch.zeros_like(along_p))
        along_mix = along_a + wd_mix * affine.c * along_p                  # <G, D(wd_mix)>
        # W' = sum_ij P_i P_j (p - lr_i D(wd_j)): dL/dP_i = <G, p> - lr_i <G, D_mix>,
        # dL/dP_j = <G, p> - lr_mix <G, D(wd_j)> with <G, D(wd_j)> = <G, A> + wd_j c <G, p>
        grad_lr = along_p - lr_bases * along_mix
        grad_wd = along_p - lr_mix * (along_a + wd_bases * affine.c * along_p)
        return None, None, None, None, grad_lr, grad_wd


def affine_mixed_step(affine: AffineDirection, params: Sequence[torch.Tensor], lr_bases: Sequence[float],
                      wd_bases: Sequence[float], p_lr: torch.Tensor, p_wd: torch.Tensor) -> list[torch.Tensor]:
    """:func:`mixed_lr_step` for a rule affine in the weight decay too (``affine`` from :func:`affine_direction`):
    ``W' = p - lr_mix (A + wd_mix c p)``, the same value and gradients w.r.t. ``p_lr`` and ``p_wd`` as the
    Cartesian mixture, at the cost of one element-wise pass per term over the path's weights forward and one inner
    product per term backward, whatever the number of bases. Returns new tensors shaped like ``params``
    (``torch._foreach_*``, no flat copies). ``affine``'s tensors (gradients, momentum buffers) are referenced,
    not copied: back-propagate before the optimiser steps."""
    kw = dict(dtype=p_lr.dtype, device=p_lr.device)
    params = [p.detach() for p in params]
    return list(_AffineMixedStep.apply(affine, params, torch.tensor(list(lr_bases), **kw),
                                       torch.tensor(list(wd_bases), **kw), p_lr, p_wd))


@torch.no_grad()
def affine_step(affine: AffineDirection, params: Sequence[torch.Tensor], lr: float,
                weight_decay: float) -> list[torch.Tensor]:
    """:func:`optimizer_step` from an :func:`affine_direction`: ``p - lr (A + wd c p)``, shaped like ``params``."""
    out = torch._foreach_mul([p.detach() for p in params], 1 - lr * weight_decay * affine.c)
    return _add_terms_(out, affine, -lr)


class _MixedLrStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, direction, params, lr_bases, wd_bases, p_lr, p_wd):  # type: ignore[override]
        ctx.direction, ctx.params, ctx.lr_bases, ctx.wd_bases = direction, params, lr_bases, wd_bases
        lr_mix = float((p_lr * torch.tensor(lr_bases, dtype=p_lr.dtype)).sum())
        mixed_d: list[torch.Tensor] | None = None
        for j, wd in enumerate(wd_bases):
            if float(p_wd[j]) != 0.0:
                d = [float(p_wd[j]) * t for t in direction(wd)]
                mixed_d = d if mixed_d is None else [a + b for a, b in zip(mixed_d, d)]
        if mixed_d is None:
            raise ValueError("mixed_lr_step: every weight-decay coefficient is 0 (the encodings must sum to 1)")
        ctx.lr_mix = lr_mix
        ctx.save_for_backward(p_lr, p_wd, *mixed_d)
        return tuple(p.detach() - lr_mix * d for p, d in zip(params, mixed_d))

    @staticmethod
    def backward(ctx, *grad_out):  # type: ignore[override]
        p_lr, p_wd, *mixed_d = ctx.saved_tensors
        # W' = sum_ij P_i P_j (p - lr_i D_j): dL/dP_i = <G, p> - lr_i <G, D_mix>, dL/dP_j = <G, p> - lr_mix <G, D_j>
        along_p = sum(float((g * p).sum()) for g, p in zip(grad_out, ctx.params) if g is not None)
        along_mix = sum(float((g * d).sum()) for g, d in zip(grad_out, mixed_d) if g is not None)
        grad_lr = along_p - torch.tensor(ctx.lr_bases, dtype=p_lr.dtype) * along_mix
        grad_wd = torch.zeros_like(p_wd)
        for j, wd in enumerate(ctx.wd_bases):
            grad_wd[j] = along_p - ctx.lr_mix * sum(float((g * d).sum()) for g, d in zip(grad_out, ctx.direction(wd))
                                                    if g is not None)
        return None, None, None, None, grad_lr.to(p_lr.device), grad_wd


def mixed_lr_step(direction: Callable[[float], list[torch.Tensor]], params: Sequence[torch.Tensor],
                  lr_bases: Sequence[float], wd_bases: Sequence[float], p_lr: torch.Tensor,
                  p_wd: torch.Tensor) -> list[torch.Tensor]:
    """Eq. 5 over learning-rate x weight-decay bases for a rule affine in the learning rate
    (``W_ij = p - lr_i D(wd_j)``, :func:`optimizer_direction`): ``W' = sum_ij P_i P_j W_ij = p - (sum_i P_i lr_i)
    (sum_j P_j D(wd_j))``, the same value and gradients as :func:`mixed_step` over the Cartesian product, but with
    ``len(wd_bases)`` directions in the backward pass instead of ``len(lr_bases) x len(wd_bases)`` steps.
    Differentiable w.r.t. ``p_lr`` and ``p_wd``; keeps one mixed direction (one copy of ``params``)."""
    return list(_MixedLrStep.apply(direction, list(params), tuple(float(v) for v in lr_bases),
                                   tuple(float(v) for v in wd_bases), p_lr, p_wd))


class _MixedStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, step: Step, grid: tuple[tuple[float, ...], ...], *weights: torch.Tensor):  # type: ignore[override]
        ctx.step, ctx.grid = step, grid
        ctx.save_for_backward(*weights)
        total: list[torch.Tensor] | None = None
        for combo in itertools.product(*(range(len(b)) for b in grid)):
            coeff = math.prod(float(w[i]) for w, i in zip(weights, combo))
            if coeff == 0.0:
                continue
            new = step(tuple(b[i] for b, i in zip(grid, combo)))
            total = [coeff * n for n in new] if total is None else [t + coeff * n for t, n in zip(total, new)]
        if total is None:
            raise ValueError("mixed_step: every coefficient is 0 (the encodings must sum to 1)")
        return tuple(total)

    @staticmethod
    def backward(ctx, *grad_out: torch.Tensor):  # type: ignore[override]
        weights = ctx.saved_tensors
        grads = [torch.zeros_like(w) for w in weights]
        for combo in itertools.product(*(range(len(b)) for b in ctx.grid)):
            new = ctx.step(tuple(b[i] for b, i in zip(ctx.grid, combo)))
            inner = sum((go * n).sum() for go, n in zip(grad_out, new) if go is not None)
            for k, i in enumerate(combo):
                others = math.prod(float(weights[j][combo[j]]) for j in range(len(combo)) if j != k)
                grads[k][i] += others * inner
        return (None, None, *grads)


def mixed_step(step: Step, grid: Sequence[Sequence[float]], weights: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``W' = sum_combo prod_k weights[k][combo_k] * step(bases of combo)`` (eq. 5 over the Cartesian product of
    bases). ``grid[k]`` holds hyper-parameter k's bases, ``weights[k]`` (len(grid[k]),) its encoding ``P``;
    ``step(values)`` returns the temporary weights for one value per hyper-parameter. Differentiable w.r.t.
    ``weights`` (not w.r.t. what ``step`` reads)."""
    grid = tuple(tuple(float(v) for v in b) for b in grid)
    return list(_MixedStep.apply(step, grid, *weights))
