"""DiffAutoML's augmentation policy tau (Sec. 3.1; equation numbers refer to ``../shared/papers/diffautoml.txt``).

A *transformation* is an ordered pair of operations of :mod:`mobilekit.data.augment_ops` applied one after the
other, each with its own magnitude drawn uniformly from [0, 10] (and a random sign for the symmetric ones). With K
operations there are K^2 transformations (196 for the paper's 14; (Identity, Identity) leaves the image as it is).
The policy holds one logit per transformation, ``tau`` (K^2,), and ``p(tau) = softmax(tau)``.

Per training image one transformation ``T_k`` is drawn from ``p(tau)`` with the Gumbel-max trick (the hard sample of
Gumbel-softmax; the noise comes from a seeded generator, so a resumed run draws the same transformations), the
batch is transformed on its device (:meth:`AugmentPolicy.apply`), and after the forward pass the policy loss
(:func:`policy_loss`) pushes probability toward the transformations that produced high training losses ("hard"
samples), the per-image training losses detached so only ``tau`` learns from it:

    eq. 2:  L_DA(tau) = - sum_k p_{T_k}(tau) L_tr(f(T_k(x_k)))

Two departures from eq. 2 as printed, both because eq. 2 as printed makes the policy collapse (reproduced in
``tests/test_search_diffautoml.py``: 10 of 196 transformations adding +1 nat of loss, 64 images a step, Adam 0.05:
14 % of the mass on them after 36 steps, 99.4 % after 300, one pair 97 %):

- *importance weight*: the paper calls ``p_k`` "an importance weight", but the ``T_k`` are themselves drawn from
  ``p``, so ``sum_k p_{T_k} L_k`` estimates ``sum_j p_j^2 L_j``, and its gradient ``p_j (p_j L_j - ...)`` grows with
  ``p_j``: whichever transformation is ahead gains (a positive feedback, even when every loss is equal). Dividing
  each term by the (detached) probability it was drawn with makes the batch an unbiased estimate of the expected
  training loss ``E_p[L] = sum_j p_j L_j``, whose gradient is the score function
  ``(1/n) sum_k (L_k - b) grad log p_{T_k}`` (``estimator="score"``, the default; ``"eq2"`` keeps the printed form);
- *entropy*: maximising ``E_p[L]`` alone still ends on the hardest transformation (a linear objective on the
  simplex). The loss subtracts ``beta H(p)`` (``entropy``), so the policy maximises ``E_p[L] + beta H(p)``, whose
  maximiser is the Gibbs distribution ``p_j ~ exp(L_j / beta)``: the hardest transformations are favoured, by
  ``exp(dL / beta)`` for a loss difference ``dL`` (nats), and no transformation can take more than
  ``exp(dL_max / beta)`` times the share of the easiest -- the policy cannot collapse however long the search.

The sum is divided by the batch size (so the policy's learning rate does not depend on it) and by default the
batch's mean loss is subtracted (``b``, a baseline: lower variance, same expectation for the score form; for the
printed form it also removes the feedback when all losses are equal).
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


ESTIMATORS = ("score", "eq2")


def policy_loss(logits: torch.Tensor, chosen: torch.Tensor, sample_losses: torch.Tensor, baseline: bool = True,
                entropy: float = 0.0, estimator: str = "score") -> torch.Tensor:
    """The policy's loss over a batch, to minimise w.r.t. ``logits`` = ``tau`` (K^2,); ``chosen`` (n,) the
    transformation of each image, ``sample_losses`` (n,) their training losses (nats, taken as constants).

    ``estimator="score"``: ``-(1/n) sum_k (L_k - b) log p_{T_k} - entropy * H(p)`` (eq. 2 with the importance
    weight ``1 / p_{T_k}`` of the draw; its expected gradient is ``-grad (E_p[L] + entropy H(p))``, whose minimum is
    ``p_j ~ exp(L_j / entropy)``). ``estimator="eq2"``: ``-(1/n) sum_k p_{T_k} (L_k - b) - entropy * H(p)``, eq. 2
    as printed, whose expected gradient on ``tau_j`` is ``p_j (p_j L_j - sum_i p_i^2 L_i)`` (``b = 0``): even
    when every transformation gives the same loss, the one that is ahead gains.

    ``baseline``: ``b`` = the batch's mean loss (else 0). ``entropy``: ``beta`` (nats), 0 for none."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    log_p = F.log_softmax(logits, dim=-1)
    losses = sample_losses.detach().to(log_p.dtype)
    if baseline:
        losses = losses - losses.mean()
    picked = log_p[chosen.to(log_p.device)]
    if estimator == "eq2":
        picked = picked.exp()
    loss = -(picked * losses).mean()
    if entropy:
        loss = loss + entropy * (log_p.exp() * log_p).sum()         # - beta H(p)
    return loss
