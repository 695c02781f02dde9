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
of the sampled path's weights whatever the number of bases.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import torch

Step = Callable[[tuple[float, ...]], list[torch.Tensor]]


@torch.no_grad()
def optimizer_step(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                   lr: float, weight_decay: float) -> list[torch.Tensor]:
    """New tensors: the parameters after one step of ``optimizer``'s rule with ``lr`` and ``weight_decay`` from
    ``params`` and their gradients ``grads`` (the optimiser's state is read, not changed).

    Supports the optimisers of :data:`~mobilekit.search.training.OPTIMIZERS`: ``torch.optim.SGD`` (momentum,
    dampening 0, Nesterov or not), ``Adam`` (L2 weight decay) and ``AdamW`` (decoupled), without amsgrad.
    """
    group = optimizer.param_groups[0]
    out = []
    for p, g in zip(params, grads):
        state = optimizer.state.get(p, {})
        if isinstance(optimizer, torch.optim.SGD):
            d = g + weight_decay * p
            mu = group["momentum"]
            if mu:
                buf = state.get("momentum_buffer")
                buf = d if buf is None else mu * buf + (1 - group["dampening"]) * d
                d = d + mu * buf if group["nesterov"] else buf
            out.append(p - lr * d)
        elif isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            beta1, beta2 = group["betas"]
            decoupled = isinstance(optimizer, torch.optim.AdamW)
            base = p * (1 - lr * weight_decay) if decoupled else p
            d = g if decoupled else g + weight_decay * p
            step = float(state["step"]) + 1 if "step" in state else 1.0
            m = state["exp_avg"] * beta1 + (1 - beta1) * d if "exp_avg" in state else (1 - beta1) * d
            v = state["exp_avg_sq"] * beta2 + (1 - beta2) * d * d if "exp_avg_sq" in state else (1 - beta2) * d * d
            denom = v.sqrt() / math.sqrt(1 - beta2 ** step) + group["eps"]
            out.append(base - (lr / (1 - beta1 ** step)) * m / denom)
        else:
            raise TypeError(f"no functional step for {type(optimizer).__name__}; use sgd, adam or adamw")
    return out


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
