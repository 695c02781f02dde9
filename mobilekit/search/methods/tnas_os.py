"""TNAS-OS (TNAS Sec. 4.2): one-shot search whose supernet paths come from a learned sampler.

As :mod:`mobilekit.search.methods.spos`, except that

- each training step draws its path from Gamma(alpha) = (1 - eps) U(alpha) + eps p_theta(alpha | z) (eq. 11):
  uniform with probability 1 - eps, else a proposal of the :class:`~mobilekit.search.methods.tnas_sampler.TNASSampler`
  (always inside [0.9 T, T]); eps = min(eps_max, eps_inc * refits so far), so it rises as the sampler learns (by default reaching
  eps_max by mid-search, whatever the search length);
- every ``tell_every`` steps (default: :data:`DEFAULT_REFITS` refits over the search, :func:`schedule`) up to
  ``tell_paths`` (32) of the distinct paths trained since the last tell, those inside the latency window first (only
  they weigh in the sampler's fit), are scored by the supernet on a fixed validation batch (``tell_batch`` 128
  images, batch-statistics BN, no recalibration: cheap) and told to the sampler, which refits its weighted ELBO
  (eq. 2) on everything told so far (its last 512 distinct architectures); a few fresh proposals are scored too
  and kept for the plot
  ``tnas_proposals.png`` (latency vs supernet accuracy per tell) and ``tnas_proposals.json``;
- the evolution starts from the sampler's proposals ("from p_theta(alpha | z) sampling initial seeds").

The sampler's network and optimiser are checkpointed with the supernet, its history in the phase state, so an
interrupted search resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from mobilekit import safewrite
from mobilekit.search.budget import WINDOW
from mobilekit.search.options import option
from mobilekit.search.outcome import SearchOutcome
from mobilekit.search.methods.tnas_sampler import TNASSampler, epsilon, mixture_draw
from mobilekit.search.methods.spos import (Options as SposOptions, OneShotPhase, PathSpace, initial_population, outcome,
                                   run_evolution, validation_subset)
from mobilekit.search.supernets import SampledPathNet
from mobilekit.search.training import SearchContext, load_batches

LATENCY_MODEL = "expected"
SUMMARY = "TNAS-OS: one-shot supernet with paths from a learned transformer-VAE sampler (eq. 11), then evolution"
PROPOSALS_FILE = "tnas_proposals.json"
PROPOSALS_PLOT = "tnas_proposals.png"
DEFAULT_REFITS = 8          # sampler refits over a search by default (eps at its maximum after the 4th: mid-search)


@dataclass(frozen=True)
class Schedule:
    """When the sampler refits and how epsilon (eq. 11) rises over a search of ``total_steps`` steps.

    A refit follows step ``s`` when ``(s + 1) % every == 0``; the path of step ``s`` is drawn with
    ``epsilon(s // every)`` (refits so far). Each refit tells at most ``told_per_refit`` distinct paths (at most
    one new path per step, at most ``tell_paths``)."""

    total_steps: int
    every: int
    eps_inc: float
    eps_max: float
    tell_paths: int = 32

    @property
    def refits(self) -> int:
        """Sampler refits over the search."""
        return self.total_steps // self.every

    def epsilon_at(self, step: int) -> float:
        """Epsilon (share of sampler draws in expectation) of the path drawn at ``step``."""
        return epsilon(step // self.every, self.eps_inc, self.eps_max)

    def expected_sampler_share(self) -> float:
        """Expected share of sampler-drawn paths over the search (the mean of epsilon over its steps)."""
        return sum(self.epsilon_at(s) for s in range(self.total_steps)) / max(1, self.total_steps)

    def sampler_share_sd(self) -> float:
        """Standard deviation of the measured share: the count of sampler draws is a sum of independent
        Bernoulli(epsilon_s) (a Poisson binomial), variance sum eps_s (1 - eps_s)."""
        var = sum(e * (1 - e) for e in map(self.epsilon_at, range(self.total_steps)))
        return var ** 0.5 / max(1, self.total_steps)

    @property
    def told_per_refit(self) -> int:
        """The most paths one refit can tell: distinct paths trained since the last refit, at most ``tell_paths``."""
        return min(self.tell_paths, self.every)


def schedule(total_steps: int, tell_every: int | None, eps_inc: float | None, eps_max: float,
             tell_paths: int = 32) -> Schedule:
    """The :class:`Schedule` of a search of ``total_steps`` steps: by default :data:`DEFAULT_REFITS` refits,
    epsilon reaching ``eps_max`` at the last refit of the first half."""
    every = tell_every or max(1, total_steps // DEFAULT_REFITS)
    inc = eps_inc if eps_inc is not None else eps_max / max(1, (total_steps // 2) // every)
    return Schedule(total_steps, every, inc, eps_max, tell_paths)


@dataclass
class Options(SposOptions):
    """TNAS-OS settings (recipe section ``[search.tnas-os]``); the evolution settings are those of spos."""

    eps_inc: float | None = option(None, "epsilon of eq. 11 grows by this per sampler refit (default: eps_max over "
                                         "the refits of the first half of the search, so it peaks by mid-search)",
                                   ge=0, le=1)
    eps_max: float = option(1.0, "... up to this", ge=0, le=1)
    tell_every: int | None = option(None, f"steps between sampler refits (default: the search's steps / "
                                          f"{DEFAULT_REFITS}, whatever its length)", ge=1)
    tell_paths: int = option(32, "distinct paths trained since the last refit scored and told to the sampler per "
                                 "refit (those inside the latency window first, most recent first)", ge=1)
    tell_batch: int = option(128, "validation images of the fixed batch that scores told paths", ge=1)
    sampler_fit_steps: int = option(100, "Adam steps of the sampler's weighted ELBO per refit (800 over a default "
                                         "search: see docs/methods/one-shot.md for the measured effect)", ge=1)
    sampler_latent_dim: int = option(8, "latent dimensions of the sampler's VAE", ge=1)


@torch.no_grad()
def batch_accuracy(net: SampledPathNet, paths: Sequence[Sequence[int]], x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Supernet accuracy of each path on one batch x (B, 3, R, R), y (B,), BN on the batch's statistics (running
    statistics untouched), dropout off."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = net.training
    saved = [m.momentum for m in norms]
    net.eval()
    for m in norms:
        m.train()
        m.momentum = 0.0                     # running = (1 - 0) * running: statistics unchanged
    out = []
    for indices in paths:
        net.fix(list(indices))
        out.append(float((net(x).argmax(1) == y).float().mean()))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    net.train(was_training)
    return out


class SamplerTeacher:
    """The TNAS-OS side of the supernet phase: the eq. 11 path draw and the periodic tell."""

    def __init__(self, ctx: SearchContext, net: SampledPathNet, paths: PathSpace, sampler: TNASSampler) -> None:
        self.ctx, self.net, self.paths, self.sampler = ctx, net, paths, sampler
        cfg = ctx.config
        val = validation_subset(ctx.splits.val, cfg.tell_batch, cfg.seed + 1)
        x, y = next(iter(load_batches(val, [torch.arange(min(len(val), cfg.tell_batch))], 0)))
        self.x, self.y = x.to(ctx.engine.device), y.to(ctx.engine.device)
        self.every, self.eps_inc = 1, cfg.eps_inc or 0.0     # set by :meth:`plan` once the search length is known

    def plan(self, total_steps: int) -> None:
        cfg = self.ctx.config
        plan = schedule(total_steps, cfg.tell_every, cfg.eps_inc, cfg.eps_max, cfg.tell_paths)
        self.every, self.eps_inc = plan.every, plan.eps_inc

    def choose_told(self, recent: list[list[int]]) -> list[list[int]]:
        """Up to ``tell_paths`` of the distinct paths trained since the last refit: those inside the latency window
        first (only they carry weight in the sampler's fit, :func:`~.tnas_sampler.rank_weights`), most recent
        first, then the most recent outside it."""
        newest = list(reversed(recent))
        inside = [self.inside(p) for p in newest]
        ordered = [p for p, ok in zip(newest, inside) if ok] + [p for p, ok in zip(newest, inside) if not ok]
        return ordered[:self.ctx.config.tell_paths]

    def inside(self, indices: Sequence[int]) -> bool:
        """Whether a path's table latency lies in the sampler's window [0.9 T, T]."""
        return self.sampler.lo_ms <= self.paths.latency_ms(indices) <= self.sampler.hi_ms

    def draw(self, step: int, generator: torch.Generator) -> tuple[list[int], str]:
        cfg = self.ctx.config
        eps = epsilon(self.sampler.fits_, self.eps_inc, cfg.eps_max)
        return mixture_draw(eps, lambda: self.paths.uniform(generator),
                            lambda: self.sampler.ask(1, seed=cfg.seed * 1_000_003 + step)[0], generator)

    def after_step(self, phase: OneShotPhase, step: int) -> dict[str, Any]:
        cfg, state = self.ctx.config, phase.state
        recent = state.setdefault("recent", [])
        active = self.net.active()
        if active in recent:
            recent.remove(active)
        recent.append(active)
        every = self.every
        record: dict[str, Any] = {"epsilon": epsilon(self.sampler.fits_, self.eps_inc, cfg.eps_max)}
        if (step + 1) % every:
            return record
        told = self.choose_told(recent)
        told_inside = sum(map(self.inside, told))
        agree = self.ctx.engine.agree           # rank 0's accuracies: every rank's sampler learns the same
        fit = self.sampler.tell(told, agree(batch_accuracy(self.net, told, self.x, self.y)))
        proposals = self.sampler.ask(8, seed=cfg.seed * 7 + step)
        accuracies = agree(batch_accuracy(self.net, proposals, self.x, self.y))
        state.setdefault("proposals", []).append({
            "step": step, "epoch": step // phase.batches_per_epoch, "fits": self.sampler.fits_,
            "latency_ms": [self.paths.latency_ms(p) for p in proposals], "accuracy": accuracies})
        state["recent"] = []
        state["sampler"] = self.sampler.state()
        self.net.fix(active)
        return {**record, **fit, "told": len(told), "told_inside": told_inside}


def make_sampler(ctx: SearchContext, paths: PathSpace) -> TNASSampler:
    cfg = ctx.config
    return TNASSampler(paths.sizes, paths.latency_matrix(), paths.fixed_ms, WINDOW[0] * cfg.target_ms,
                       WINDOW[1] * cfg.target_ms, seed=cfg.seed, latent_dim=cfg.sampler_latent_dim,
                       fit_steps=cfg.sampler_fit_steps, device=str(ctx.engine.device))


def plot_proposals(proposals: list[dict], target_ms: float, path) -> None:
    """Latency (ms) vs supernet batch accuracy of the sampler's proposals, one colour per refit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    cmap = plt.get_cmap("viridis")
    for i, entry in enumerate(proposals):
        ax.scatter(entry["latency_ms"], entry["accuracy"], s=14, color=cmap(i / max(1, len(proposals) - 1)),
                   label=(f"epoch {entry['epoch']} (refit {entry['fits']})"
                          if len(proposals) <= 8 or i in (0, len(proposals) - 1) else None))
    ax.axvspan(WINDOW[0] * target_ms, WINDOW[1] * target_ms, color="gray", alpha=0.15, label="[0.9T, T]")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("supernet accuracy (validation batch)")
    ax.set_title("TNAS sampler proposals over the search")
    ax.legend(fontsize=7)
    fig.tight_layout()
    safewrite.save_figure(fig, path, dpi=110)
    plt.close(fig)


def train_supernet(ctx: SearchContext) -> tuple[SampledPathNet, PathSpace, OneShotPhase, TNASSampler]:
    """Train (or resume) the supernet with eq. 11 paths and the sampler beside it; returns (supernet, its path
    space, the phase, the sampler)."""
    cfg = ctx.config
    torch.manual_seed(cfg.seed)
    paths = PathSpace(ctx.latency_model, ctx.train_space)
    net = SampledPathNet(ctx.train_space, paths.candidates, sharing=cfg.weight_sharing)
    sampler = make_sampler(ctx, paths)
    teacher = SamplerTeacher(ctx, net, paths, sampler)
    phase = OneShotPhase(net=net, paths=paths, draw=teacher.draw, after_step=teacher.after_step, config=cfg,
                         extra_modules={"sampler": sampler.model_}, extra_optimizers={"sampler": sampler.optimizer_},
                         **ctx.phase_kwargs("search"))
    teacher.plan(phase.total_steps)
    start = phase.restore(ctx.checkpoint)
    sampler.load_state(phase.state.get("sampler", {}))
    phase.run_loop(start)
    return net, paths, phase, sampler


def search(ctx: SearchContext) -> SearchOutcome:
    """Train the supernet with eq. 11 paths (resumable), then evolve from the sampler's proposals (cached)."""
    cfg = ctx.config
    net, paths, phase, sampler = train_supernet(ctx)
    seeds = []
    for p in sampler.ask(cfg.population, seed=cfg.seed):
        if p not in seeds:
            seeds.append(p)
    from_sampler = len(seeds)
    seeds += initial_population(ctx, paths, cfg.population - len(seeds))
    ranked, evolution_s = run_evolution(ctx, net, paths, seeds)
    proposals = phase.state.get("proposals", [])
    if ctx.engine.is_writer:
        ctx.run.write_json(PROPOSALS_FILE, proposals)
        if proposals:
            plot_proposals(proposals, cfg.target_ms, ctx.run.path(PROPOSALS_PLOT))
    sources = [r.get("path") for r in ctx.run.records() if r.get("phase") == "search"]
    plan = schedule(phase.total_steps, cfg.tell_every, cfg.eps_inc, cfg.eps_max, cfg.tell_paths)
    details = {"epsilon_final": epsilon(sampler.fits_, plan.eps_inc, cfg.eps_max), "sampler_fits": sampler.fits_,
               "tell_every": plan.every, "eps_inc": plan.eps_inc,
               "sampler_paths_share": (sources.count("sampler") / len(sources)) if sources else None,
               "sampler_paths_share_expected": plan.expected_sampler_share(),
               "evolution_seeds_from_sampler": from_sampler}
    return outcome(ctx, net, paths, phase, ranked, evolution_s, details)
