"""DiffAutoML's hyper-parameters eta (Sec. 3.3; equation numbers refer to ``../shared/papers/diffautoml.txt``):
the weight decay (and optionally a factor on the learning rate) learned by the hyper-gradient of the validation
loss through one look-ahead step.

    eq. 6:  theta^{t+1}(eta) = OP(theta^t, eta, grad L_tr(theta^t))
    eq. 7:  eta^{t+1} = eta^t - beta grad_eta L_val(f(theta^{t+1}(eta^t)); B_val)

``OP`` is the weights' own optimiser (SGD with Nesterov momentum, Adam or AdamW), written as a function of the
hyper-parameters by :func:`~mobilekit.search.temporary_weights.lookahead_step` (its value is exactly the step the
optimiser then takes); ``theta^t`` and its gradient are constants, as in the paper. The validation loss of the
look-ahead weights is computed with ``torch.func.functional_call`` on the network, so nothing is copied and the
real parameters are left alone.

eta is kept in log space (``log weight_decay``, ``log lr_factor``), so it stays positive whatever the step; the
update of eq. 7 is done by Adam (the paper's Appendix A uses Adam for eta) with learning rate ``beta``. The
one-step hyper-gradient of the weight decay is proportional to the learning rate and to the weight decay itself,
and shrinks by orders of magnitude over a run (on digits, d L_val / d log wd went from ~1e-3 to ~1e-8 in 60 steps
as the cosine schedule decayed), with rare spikes: Adam's usual second-moment memory (beta2 = 0.999) then freezes
eta, so the searcher gives this Adam a short one (beta2 = 0.9, ``diffautoml.ETA_BETAS``).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from mobilekit.search.temporary_weights import lookahead_step

WEIGHT_DECAY_RANGE = (1e-6, 1e-1)       # eta's weight decay is clamped here after every update
LR_FACTOR_RANGE = (0.1, 10.0)           # and the learning-rate factor here


class LearnedHyperparameters(nn.Module):
    """eta: ``log_weight_decay`` (a scalar parameter) and, when ``learn_lr``, ``log_lr_factor`` (the learning rate
    is the schedule's times ``exp(log_lr_factor)``, starting at 1)."""

    def __init__(self, weight_decay: float, learn_lr: bool = False) -> None:
        super().__init__()
        self.log_weight_decay = nn.Parameter(torch.tensor(math.log(weight_decay)))
        self.log_lr_factor = nn.Parameter(torch.tensor(0.0), requires_grad=learn_lr)
        self.learn_lr = learn_lr

    def weight_decay(self) -> torch.Tensor:
        """The current weight decay (a differentiable scalar)."""
        return self.log_weight_decay.exp()

    def lr(self, scheduled_lr: float) -> torch.Tensor:
        """The learning rate of this step: ``scheduled_lr`` (the schedule's) times the learned factor."""
        return scheduled_lr * self.log_lr_factor.exp()

    def learned(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep eta inside :data:`WEIGHT_DECAY_RANGE` and :data:`LR_FACTOR_RANGE`."""
        self.log_weight_decay.clamp_(math.log(WEIGHT_DECAY_RANGE[0]), math.log(WEIGHT_DECAY_RANGE[1]))
        self.log_lr_factor.clamp_(math.log(LR_FACTOR_RANGE[0]), math.log(LR_FACTOR_RANGE[1]))


def lookahead_validation_loss(model: nn.Module, optimizer: torch.optim.Optimizer, names: Sequence[str],
                              params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                              lr: float | torch.Tensor, weight_decay: float | torch.Tensor,
                              loss_of: Callable[[torch.Tensor], torch.Tensor], inputs: tuple,
                              buffers: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``L_val(theta^{t+1}(eta))``, the objective of eq. 7, differentiable w.r.t. ``lr`` and ``weight_decay``.

    ``names``/``params``/``grads``: the parameters the step moves (names as in ``model.named_parameters()``) and
    their training gradients; ``model(*inputs)`` is evaluated with the look-ahead values in their place
    (``functional_call``; other parameters as they are, ``buffers`` in place of the model's own when given, e.g.
    clones so that BN running statistics are not updated) and ``loss_of(output)`` returns the validation loss.
    """
    new = lookahead_step(optimizer, params, grads, lr, weight_decay)
    tensors: dict[str, torch.Tensor] = dict(zip(names, new))
    if buffers is not None:
        tensors.update(buffers)
    return loss_of(functional_call(model, tensors, inputs))


def hypergradient(eta: LearnedHyperparameters, loss: torch.Tensor) -> list[torch.Tensor]:
    """``grad_eta`` of a loss built from ``eta`` (eq. 7), without touching any other parameter's ``.grad``."""
    return list(torch.autograd.grad(loss, eta.learned()))
