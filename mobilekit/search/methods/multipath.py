"""Multi-path baseline (FBNet / ProxylessNAS style): a separate MBConv path per candidate type at every
searchable position, mixed by Gumbel-softmax architecture weights.

Steps alternate: a weight step on a batch of the weight split (paths' weights, Gumbel samples of the fixed
architecture weights), then an architecture step on a batch of the held-out architecture split (20 % of the
training split) with loss ``CE + lambda * log E[R]``, ``E[R]`` from
:class:`~mobilekit.latency.differentiable.ExpectedLatency` of ``softmax(alpha)``. As in FBNet, the first
``arch_warmup_epochs`` train the weights only. ``lambda`` is steered toward the target as in the single-path
search (:class:`~mobilekit.search.penalty.LatencyPenalty`), from ``E[R]`` (the argmax of a fresh, uniform alpha
says nothing). All paths are
computed in every step (as FBNet does), which is what the memory benchmark compares against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mobilekit.latency.differentiable import ExpectedLatency
from mobilekit.search.options import option
from mobilekit.search.outcome import SearchOutcome, TrainingHyperparameters, arch_summary, derive_in_window
from mobilekit.search.penalty import LatencyPenalty
from mobilekit.search.supernets import MultiPathNet, PathView, extract_network
from mobilekit.search.training import (Phase, SearchContext, batch_count, batches, load_batches,
                                       make_optimizer, split_for_architecture)

LATENCY_MODEL = "expected"
SUMMARY = "multi-path baseline (FBNet/ProxylessNAS): every candidate path, Gumbel-softmax weights, E[R] penalty"

__all__ = ["MultiPathNet", "MultiPathPhase", "Options", "search"]


@dataclass
class Options:
    """Multi-path settings (recipe section ``[search.multipath]``)."""

    arch_lr: float = option(0.05, "learning rate of the architecture weights (Adam)", gt=0)
    gumbel_tau_start: float = option(5.0, "Gumbel-softmax temperature at the start (FBNet starts at 5) ...", gt=0)
    gumbel_tau_end: float = option(1.0, "... annealed to this", gt=0)
    arch_warmup_epochs: int | None = option(None, "weight-only epochs first (default: a quarter of them)", ge=0)


def search_network(space, latency_model: ExpectedLatency) -> MultiPathNet:
    """The network a search step trains, every candidate path of ``latency_model`` at every searchable position
    (for the memory estimate, :mod:`mobilekit.search.memory`: its activations are about 2.7x the widest path's)."""
    return MultiPathNet(space, latency_model.candidates)


def warmup_epochs(config: Any) -> int:
    return config.epochs // 4 if config.arch_warmup_epochs is None else config.arch_warmup_epochs


class MultiPathPhase(Phase):
    """Alternating weight / architecture steps. State: ``lambda``. Records: ce (weight step), arch_ce,
    runtime_ms (E[R]), runtime_hard_ms (argmax architecture), lambda, accuracy, arch, decisions, tau."""

    def __init__(self, *, net: MultiPathNet, arch_data: Dataset, target_ms: float, config,
                 latency_model: ExpectedLatency | None = None, runtime: ExpectedLatency | None = None,
                 **kwargs: Any) -> None:
        latency_model = latency_model if latency_model is not None else runtime
        engine = kwargs.get("engine")
        if engine is not None:
            engine.place(net)
            latency_model.to(engine.device)
        weights_opt = make_optimizer(config.optimizer, net.weight_parameters(), config.lr, config.weight_decay)
        arch_opt = torch.optim.Adam([net.alpha], lr=config.arch_lr)
        super().__init__(modules={"net": net}, optimizers={"weights": weights_opt, "arch": arch_opt},
                         state={"lambda": config.lambda_init}, **kwargs)
        self.schedule("weights", weights_opt, config.lr_schedule)
        self.net, self.latency_model, self.arch_data, self.config = net, latency_model, arch_data, config
        self.weights_opt, self.arch_opt = weights_opt, arch_opt
        self.penalty = LatencyPenalty(target_ms, self.state, config.target_aim, config.lambda_init, config.lambda_lr,
                                      config.lambda_p)

    def validation_model(self) -> PathView:
        """The most likely path (argmax of alpha at every layer, only its candidates computed, eval mode): the
        network the search would derive now."""
        return PathView.most_likely(self.net)

    def _arch_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        per_pass = batch_count(self.arch_data, self.batch_size)
        index = batches(self.arch_data, self.batch_size, self.seed + 1, step // per_pass)[step % per_pass]
        x, y = next(iter(load_batches(self.arch_data, [index], self.workers)))
        return self.engine.batch(x, y)

    def step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        cfg, net = self.config, self.net
        total = self.total_steps
        tau = cfg.gumbel_tau_start * (cfg.gumbel_tau_end / cfg.gumbel_tau_start) ** (step / max(1, total - 1))
        net.train()
        # weight step
        with self.engine.autocast():
            logits = net(x, net.sample_weights(tau).detach())
            ce = F.cross_entropy(logits, y)
        self.weights_opt.zero_grad(set_to_none=True)
        self.engine.backward(ce, net.weight_parameters(), [self.weights_opt])
        self.engine.step([self.weights_opt])
        # architecture step on the held-out split (after the weight-only warm-up epochs)
        arch_ce, expected_ms = float("nan"), self.latency_model(net.probs()).detach()
        lam = float(self.state["lambda"])
        if epoch >= warmup_epochs(cfg):
            ax, ay = self._arch_batch(step)
            lam = self.penalty.steer(expected_ms.item())
            for p in net.weight_parameters():
                p.requires_grad_(False)
            with self.engine.autocast():
                arch_loss = F.cross_entropy(net(ax, net.sample_weights(tau)), ay)
            expected_ms = self.latency_model(net.probs())
            loss = arch_loss + self.penalty(expected_ms, lam)
            self.arch_opt.zero_grad(set_to_none=True)
            self.engine.backward(loss, [net.alpha], [self.arch_opt])
            self.engine.step([self.arch_opt])
            for p in net.weight_parameters():
                p.requires_grad_(True)
            arch_ce = arch_loss.item()
        arch = net.architecture()
        hard_ms = self.latency_model.lookup_ms(arch)
        record = {
            "ce": ce.item(), "arch_ce": arch_ce, "runtime_ms": expected_ms.item(), "runtime_hard_ms": hard_ms,
            "lambda": lam, "accuracy": float((logits.argmax(1) == y).float().mean()), "arch": arch.to_string(),
            "decisions": arch_summary(arch), "tau": tau,
        }
        if self.progress is not None:
            self.progress.set_postfix_str(f"CE {record['ce']:.3f} E[R] {float(expected_ms):.1f}ms "
                                          f"argmax {hard_ms:.1f}ms λ {lam:.2f} {record['decisions']}")
        return record


def search(ctx: SearchContext) -> SearchOutcome:
    """Run (or resume) the multi-path search of ``ctx``; the architecture is the argmax of alpha."""
    cfg, latency_model = ctx.config, ctx.latency_model
    torch.manual_seed(cfg.seed)
    net = MultiPathNet(ctx.train_space, latency_model.candidates)
    weight_data, arch_data = split_for_architecture(ctx.splits.train, cfg.seed)
    phase = MultiPathPhase(net=net, latency_model=latency_model, arch_data=arch_data, target_ms=cfg.target_ms,
                           config=cfg, **ctx.phase_kwargs("search", dataset=weight_data))
    phase.run_loop(phase.restore(ctx.checkpoint))
    derived = net.architecture()
    arch, repairs = derive_in_window(derived, latency_model, cfg.target_ms, net.score())
    details = {"lambda_final": phase.state["lambda"], "search_steps": phase.total_steps,
               "architecture_params_max_diff": ctx.engine.max_difference(net.architecture_parameters())}
    return SearchOutcome(arch, extract_network(net, arch), phase.elapsed_s, TrainingHyperparameters.from_config(cfg),
                         derived, repairs, details)
