"""DiffAutoML's augmentation policy tau (Sec. 3.1; equation numbers refer to ``../shared/papers/diffautoml.txt``).

A *transformation* is an ordered pair of operations of :mod:`mobilekit.data.augment_ops` applied one after the
other, each with its own magnitude drawn uniformly from [0, 10] (and a random sign for the symmetric ones). With K
operations there are K^2 transformations (196 for the paper's 14; (Identity, Identity) leaves the image as it is).
The policy holds one logit per transformation, ``tau`` (K^2,), and ``p(tau) = softmax(tau)``.

Per training image one transformation ``T_k`` is drawn from ``p(tau)`` with the Gumbel-max trick (the hard sample of
Gumbel-softmax; the noise comes from a seeded generator, so a resumed run draws the same transformations), the
batch is transformed on its device (:meth:`AugmentPolicy.apply`), and after the forward pass the policy loss

    eq. 2:  L_DA(tau) = - sum_k p_{T_k}(tau) L_tr(f(T_k(x_k)))

(the per-image training losses detached, so only ``tau`` learns from it) pushes probability toward the
transformations that produced high training losses ("hard" samples). :func:`policy_loss` divides the sum by the
batch size, so the policy's learning rate does not depend on it, and by default subtracts the batch's mean loss
(see there: without it, eq. 2 favours whichever transformation is already ahead, whatever the losses).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mobilekit.data.augment_ops import MAX_MAGNITUDE, OPERATION_NAMES, apply_operations, check_names


class AugmentPolicy(nn.Module):
    """The distribution ``p(tau)`` over the transformations (pairs) of ``names``; ``logits`` is ``tau`` (K^2,),
    entry ``i * K + j`` the transformation "operation i, then operation j"."""

    def __init__(self, names: Sequence[str] = OPERATION_NAMES) -> None:
        super().__init__()
        self.names = check_names(names)
        self.logits = nn.Parameter(torch.zeros(len(self.names) ** 2))

    @property
    def transformations(self) -> list[tuple[str, str]]:
        """(first, second) operation names of every transformation, in the order of ``logits``."""
        return [(a, b) for a in self.names for b in self.names]

    def probs(self) -> torch.Tensor:
        """``p(tau) = softmax(tau)`` (K^2,)."""
        return F.softmax(self.logits, dim=-1)

    def operation_probs(self) -> torch.Tensor:
        """(K,) the probability that a drawn transformation uses each operation, as the first or the second of
        its pair (averaged over the two places, so it sums to 1)."""
        grid = self.probs().detach().view(len(self.names), len(self.names))
        return (grid.sum(1) + grid.sum(0)) / 2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,) long: one transformation per image, ``argmax(tau + g)`` with Gumbel(0, 1) noise ``g`` (Gumbel-max:
        distributed as ``p(tau)``), drawn on the CPU from ``generator``."""
        u = torch.rand(n, self.logits.numel(), generator=generator).clamp_min(1e-20)
        gumbel = -torch.log(-torch.log(u))
        return (self.logits.detach().cpu() + gumbel).argmax(-1)

    def draw(self, n: int, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Everything random about transforming n images, on the CPU from ``generator``: the transformations
        (n,) (:meth:`sample`), the magnitudes (2, n) uniform in [0, 10] and the signs (2, n) of +-1 of their first
        and second operations."""
        chosen = self.sample(n, generator)
        magnitude = torch.rand(2, n, generator=generator) * MAX_MAGNITUDE
        sign = torch.where(torch.rand(2, n, generator=generator) < 0.5, -1.0, 1.0)
        return chosen, magnitude, sign

    def apply(self, x: torch.Tensor, chosen: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor
              ) -> torch.Tensor:
        """x (N, C, H, W) pixels in [0, 1] -> image k transformed by transformation ``chosen[k]``: its first
        operation with ``magnitude[0, k]``, ``sign[0, k]``, then its second with ``magnitude[1, k]``,
        ``sign[1, k]`` (see :meth:`draw`), batched on ``x``'s device."""
        k = len(self.names)
        x = apply_operations(x, chosen // k, magnitude[0], sign[0], self.names)
        return apply_operations(x, chosen % k, magnitude[1], sign[1], self.names)


def policy_loss(probs: torch.Tensor, chosen: torch.Tensor, sample_losses: torch.Tensor,
                baseline: bool = True) -> torch.Tensor:
    """Eq. 2 over a batch, divided by its size: ``-(1/n) sum_k p_{T_k} (L_k - b)`` with ``probs`` = ``p(tau)``
    (K^2,), ``chosen`` (n,) the transformation of each image and ``sample_losses`` (n,) their training losses
    (taken as constants). Its gradient raises the logits of transformations whose images had high losses.

    ``baseline``: ``b`` = the batch's mean loss (else 0, eq. 2 as printed). Eq. 2 weights each image by the
    probability itself, not its logarithm, so with ``b = 0`` its expected gradient on ``tau_j`` is
    ``p_j (p_j L_j - sum_i p_i^2 L_i)``: even when every transformation gives the same loss, the one that is ahead
    gains (a positive feedback: with losses that do not depend on the transformation, 300 Adam steps at lr 0.05
    put 99.9 % on one of the 196, ``tests/test_search_diffautoml.py``). Subtracting the
    batch mean leaves ``p_j (p_j (L_j - L) - sum_i p_i^2 (L_i - L))``, zero when all losses are equal: only loss
    differences move the policy."""
    picked = probs[chosen.to(probs.device)]
    losses = sample_losses.detach().to(picked.dtype)
    if baseline:
        losses = losses - losses.mean()
    return -(picked * losses).mean()
