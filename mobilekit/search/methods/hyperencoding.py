"""Relaxed encodings of training hyper-parameters (Dong et al., "AutoHAS", Sec. 3.2-3.4; equation numbers refer to
``../shared/papers/autohas.txt``).

A hyper-parameter is a set of bases B_1..B_m: a continuous one (learning rate, weight decay) is discretised as
``default x multipliers`` (:data:`DEFAULT_MULTIPLIERS`, the paper's vision setting), a categorical one (e.g. the
optimiser) has its choices as bases. Each has relaxed logits P~ (m,), an ``nn.Parameter``:

* eq. 7: ``P^ = softmax(P~)`` and ``P_bar = softmax((log P^ + o) / tau)`` with Gumbel(0, 1) noise ``o`` (eq. 8).
  Difference from the paper: eq. 7 as printed adds the noise to the *probabilities*, ``softmax((P^ + o) / tau)``;
  then ``argmax(P^ + o)`` is drawn from ``softmax(P^)`` whatever tau, so the top choice is never drawn more than
  ``e / (e + m - 1)`` of the time (47.5 % of 4 candidates, 25 % of 9 bases) and the search never focuses. GDAS, on
  which AutoHAS builds, adds the noise to log-probabilities, so the choice is drawn from ``P^`` itself; eq. 7 is
  read as a typo. The printed form stays available as ``form="printed"`` (``--gumbel-form printed``);
* eq. 6: the forward pass uses ``P = one_hot(argmax P_bar)``, the backward pass the gradient of ``P_bar``
  (straight-through; :func:`gumbel_one_hot`);
* eq. 10 (derivation): a continuous hyper-parameter is ``sum_i P^_i B_i``, a categorical one (and an
  architecture choice) ``B_argmax P^``.

The learning rate is searched per stage of the schedule: ``stages`` encodings, stage ``s`` used for the steps
``[s T / S, (s + 1) T / S)``, so the derived learning rate is a piecewise-constant schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_MULTIPLIERS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


GUMBEL_FORMS: tuple[str, ...] = ("log", "printed")


def gumbel_one_hot(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None,
                   form: str = "log") -> torch.Tensor:
    """Eq. 6-8 over the last dim: ``P~`` (..., m) -> hard one-hot ``P`` (..., m) whose gradient is that of
    ``P_bar = softmax((log_softmax(P~) + o) / tau)`` (``form="log"``, GDAS; the choice is drawn from
    ``softmax(P~)``) or of ``softmax((softmax(P~) + o) / tau)`` (``form="printed"``, eq. 7 as printed; the choice
    is drawn from ``softmax(softmax(P~))``). Entries of ``logits`` at ``-inf`` are never chosen.

    ``form="log"`` is ``F.gumbel_softmax(log_softmax(P~), tau, hard=True)``, with Gumbel noise from ``generator``
    (so a resumed search draws the same noise).
    """
    if form not in GUMBEL_FORMS:
        raise ValueError(f"gumbel form {form!r}: use one of {GUMBEL_FORMS}")
    base = F.log_softmax(logits, dim=-1) if form == "log" else F.softmax(logits, dim=-1)
    u = torch.rand(base.shape, generator=generator, dtype=base.dtype).to(base.device)
    noise = -torch.log(-torch.log(u.clamp_min(1e-20)))
    perturbed = (base + noise).masked_fill(torch.isneginf(logits), float("-inf"))
    soft = F.softmax(perturbed / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


@dataclass(frozen=True)
class HyperParameter:
    """One searched hyper-parameter: ``name``, its ``bases`` (floats, or any values when categorical) and how
    many ``stages`` (independent encodings over the schedule; 1 for a fixed value)."""

    name: str
    bases: tuple[Any, ...]
    categorical: bool = False
    stages: int = 1
    start: float | None = None

    @classmethod
    def continuous(cls, name: str, default: float, multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
                   stages: int = 1, start_at_default: bool = True) -> "HyperParameter":
        """Bases ``default x multipliers``; with ``start_at_default`` the encodings start where eq. 10 derives
        ``default`` (uniform encodings would derive the mean of the bases, about 3x the default with the paper's
        multipliers)."""
        bases = tuple(float(default) * float(m) for m in multipliers)
        start = float(default) if start_at_default and min(bases) < default < max(bases) else None
        return cls(name, bases, False, stages, start)

    @classmethod
    def choice(cls, name: str, choices: Sequence[Any], stages: int = 1) -> "HyperParameter":
        """A categorical hyper-parameter whose bases are its choices."""
        return cls(name, tuple(choices), True, stages)

    def stage_of(self, step: int, total_steps: int) -> int:
        """The stage (encoding row) that step ``step`` of ``total_steps`` uses."""
        return min(self.stages - 1, step * self.stages // max(1, total_steps))


def logits_for_mean(bases: Sequence[float], target: float) -> torch.Tensor:
    """Logits ``-beta * B / max(B)`` (m,) whose softmax weights the bases to ``sum_i P^_i B_i = target`` (bisection on
    beta; the weighted mean falls monotonically from the plain mean toward ``min(B)`` as beta grows)."""
    b = torch.tensor(bases, dtype=torch.float64) / max(bases)
    aim = target / max(bases)
    lo, hi = -200.0, 200.0
    for _ in range(100):
        beta = (lo + hi) / 2
        lo, hi = (beta, hi) if float((F.softmax(-beta * b, 0) * b).sum()) > aim else (lo, beta)
    return (-(lo + hi) / 2 * b).float()


class HyperEncoding(nn.Module):
    """The relaxed encodings ``P~`` of several hyper-parameters, one ``nn.Parameter`` (m,) per hyper-parameter and
    stage (``row(name, stage)``; separate parameters, so a stage not in use gets no gradient and Adam leaves it
    alone). Every stage starts at :func:`logits_for_mean` of the hyper-parameter's ``start`` when it has one, else
    at zeros (uniform ``P^``)."""

    def __init__(self, hyperparameters: Sequence[HyperParameter]) -> None:
        super().__init__()
        self.specs = {h.name: h for h in hyperparameters}
        self.logits = nn.ParameterDict({
            f"{h.name}_{s}": nn.Parameter(torch.zeros(len(h.bases)) if h.start is None else
                                          logits_for_mean(h.bases, h.start))
            for h in hyperparameters for s in range(h.stages)})

    def row(self, name: str, stage: int = 0) -> nn.Parameter:
        """The logits ``P~`` (m,) of one hyper-parameter's stage."""
        return self.logits[f"{name}_{stage}"]

    def bases(self, name: str) -> torch.Tensor:
        """(m,) float bases of a continuous hyper-parameter."""
        row = self.row(name)
        return torch.tensor(self.specs[name].bases, dtype=row.dtype, device=row.device)

    def probs(self, name: str, stage: int = 0) -> torch.Tensor:
        """``P^ = softmax(P~)`` (m,) of one stage (eq. 7)."""
        return F.softmax(self.row(name, stage), dim=-1)

    def sample(self, name: str, stage: int, tau: float, generator: torch.Generator | None = None,
               form: str = "log") -> torch.Tensor:
        """A hard one-hot ``P`` (m,) with straight-through gradient (eq. 6-8; ``form`` as in
        :func:`gumbel_one_hot`)."""
        return gumbel_one_hot(self.row(name, stage), tau, generator, form)

    def value(self, name: str, weights: torch.Tensor) -> Any:
        """``sum_i w_i B_i`` (a differentiable scalar) for a continuous hyper-parameter (eq. 3), the basis of the
        largest weight for a categorical one."""
        spec = self.specs[name]
        if spec.categorical:
            return spec.bases[int(weights.argmax())]
        return (weights * self.bases(name)).sum()

    def derive(self, name: str, stage: int = 0) -> Any:
        """Eq. 10: ``sum_i P^_i B_i`` (float) when continuous, ``B_argmax P^`` when categorical."""
        spec = self.specs[name]
        probs = self.probs(name, stage).detach()
        return spec.bases[int(probs.argmax())] if spec.categorical else float(self.value(name, probs))

    def derive_all(self) -> dict[str, Any]:
        """Every hyper-parameter derived (eq. 10): a value, or a list of per-stage values when staged."""
        out: dict[str, Any] = {}
        for name, spec in self.specs.items():
            values = [self.derive(name, s) for s in range(spec.stages)]
            out[name] = values if spec.stages > 1 else values[0]
        return out


def categorical_log_prob(logits: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``sum log softmax(logits)[chosen]`` over rows: logits (..., m), chosen (...) long -> scalar."""
    return F.log_softmax(logits, dim=-1).gather(-1, chosen.unsqueeze(-1)).sum()


def reinforce_surrogate(log_prob: torch.Tensor, loss: torch.Tensor | float, baseline: float = 0.0) -> torch.Tensor:
    """REINFORCE (the later AutoHAS version's estimator): ``(loss - baseline) * log p(sample)``, whose gradient
    w.r.t. the encodings is an unbiased estimate of ``grad E[loss]`` when the sample is drawn from ``p`` and the
    baseline does not depend on the sample (e.g. a moving average of earlier losses)."""
    return (torch.as_tensor(loss).detach() - baseline) * log_prob
