"""Single-path search (Stamoulis et al.): one superkernel network, loss ``CE + lambda * log R``, one optimiser
step that updates weights and thresholds together (no bi-level loop).

``R`` is :class:`~mobilekit.latency.differentiable.SuperkernelLatency` of the current decisions. The paper fixes
``lambda`` and tunes it by hand to land near a target; here ``lambda`` is steered toward
``target_aim * target_ms`` by :class:`~mobilekit.search.penalty.LatencyPenalty` (PI control; ``lambda_lr = 0`` and
``lambda_p = 0`` give the paper's fixed lambda).

Weights use Adam. Thresholds use SGD with momentum on gradients divided by one running RMS of the whole
threshold-gradient vector: a per-parameter normaliser (Adam) would move every threshold at the same speed and
flip decisions all at once, while this keeps their relative sizes, so a subset whose removal saves more
latency (for the accuracy it costs) crosses its threshold first. Both optimisers step on every batch after
the same backward pass, after a warm-up.

Schedule (from the authors' ``nas-search/``: ``build_runtime_lambda`` and ``build_dropout_rate`` switch at
6255 of 10008 steps). The first ``warmup_share`` (0.6) of the steps train the weights only: lambda = 0, the
thresholds fixed (the reference lets the cross-entropy move them too; with our normalised threshold gradients
that would drag every threshold down before the runtime term starts), and each subset dropped with probability
``subset_dropout`` (the reference keeps 0.6 of them). Subset dropout therefore only runs while the runtime term is
off, so R and the forward pass never disagree on a dropped indicator. Then the PI-steered runtime term starts,
ramped in linearly over ``lambda_ramp_share`` (0.1) of the steps, with lambda projected to >= 0 and an integral
that does not wind up while lambda is clipped at 0 (a network below the aim is never rewarded for being slower;
the cross-entropy alone brings subsets back), the temperature anneals over the remaining steps, and the threshold learning rate stays constant (the reference's
decays only mildly), so decisions can still move at the end. ``threshold_normalization = "per-decision"`` divides each kind of decision (keep, kernel,
expansion, SE) by its own running RMS instead, so that a kind whose latency saving per layer is small (the
kernel ring: about 1 ms on the Pixel 1 table, against 2-3 ms for expansion and skip) still moves at the speed of
the others; the kinds keep their relative sizes within themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mobilekit.latency.differentiable import RELAX_MODES, Decisions, SuperkernelLatency
from mobilekit.search.options import option
from mobilekit.search.outcome import SearchOutcome, TrainingHyperparameters, arch_summary, derive_in_window
from mobilekit.search.penalty import LatencyPenalty
from mobilekit.search.supernets import SuperNet, extract_network
from mobilekit.search.training import Phase, SearchContext, make_optimizer
from mobilekit.space import LayerType

LATENCY_MODEL = "superkernel"
SUMMARY = "Single-Path NAS: one superkernel, thresholds decide kernel/expansion/SE/skip (CE + lambda log R)"


NORMALIZATIONS = ("global", "per-decision")
DECISION_KINDS = ("keep", "kernel", "expand", "se")


@dataclass
class Options:
    """Single-path settings (recipe section ``[search.single-path]``)."""

    relax: str = option("sigmoid", "relaxation of the threshold indicators", choices=RELAX_MODES)
    threshold_lr: float = option(0.003, "threshold learning rate (SGD + momentum on normalised gradients)", gt=0)
    threshold_momentum: float = option(0.9, "SGD momentum of the thresholds", ge=0, lt=1)
    threshold_init: float = option(0.9, "initial thresholds (statistics start at 1: every subset on)")
    threshold_reach: float = option(0.25, "a threshold stays at most this far above its statistic", gt=0)
    tau_start: float = option(1.0, "temperature of the softmax relaxation, annealed geometrically ...", gt=0)
    tau_end: float = option(0.1, "... to this", gt=0)
    warmup_share: float = option(0.6, "share of the search steps that train the weights only (runtime term off, "
                                 "thresholds fixed) before the decisions start", ge=0, lt=1)
    lambda_ramp_share: float = option(0.1, "after the warm-up, lambda rises linearly to its steered value over this "
                                      "share of the search steps (0: full strength at once)", ge=0, lt=1)
    subset_dropout: float = option(0.1, "drop weight subsets with this probability ...", ge=0, lt=1)
    subset_dropout_epochs: int | None = option(None, "... during the first epochs (default: during the warm-up)",
                                               ge=0)
    threshold_normalization: str = option("global", "threshold gradients divided by one running RMS (global) or "
                                          "one per decision kind (per-decision)", choices=NORMALIZATIONS)


def warmup_steps(config: Any, total_steps: int) -> int:
    """Steps of the warm-up (weights only), ``round(warmup_share * total_steps)``."""
    return int(round(getattr(config, "warmup_share", 0.0) * total_steps))


def ramp_steps(config: Any, total_steps: int) -> int:
    """Steps over which lambda ramps up after the warm-up, ``round(lambda_ramp_share * total_steps)``."""
    return int(round(getattr(config, "lambda_ramp_share", 0.0) * total_steps))


def dropout_active(config: Any, epoch: int, step: int, total_steps: int) -> bool:
    """Subset dropout is on during the warm-up (the reference's schedule), or the first ``subset_dropout_epochs``."""
    if config.subset_dropout_epochs is None:
        return step < warmup_steps(config, total_steps)
    return epoch < config.subset_dropout_epochs


def hard(margins: Decisions) -> Decisions:
    """0/1 decisions of margins (``margin >= 0`` is on)."""
    return Decisions(*((m >= 0).float() for m in (margins.keep, margins.kernel, margins.expand, margins.se)))


class SinglePathPhase(Phase):
    """The search loop. State: the latency penalty's ``lambda``. Records per step: ce, runtime_ms (R in the loss),
    runtime_hard_ms (R of the current discrete architecture), lambda, accuracy, arch (block strings), decisions,
    tau, lr."""

    GRAD_BETA = 0.99   # running mean of the squared threshold gradient

    def __init__(self, *, net: SuperNet, target_ms: float, config, latency_model: SuperkernelLatency | None = None,
                 runtime: SuperkernelLatency | None = None, **kwargs: Any):
        latency_model = latency_model if latency_model is not None else runtime
        engine = kwargs.get("engine")
        if engine is not None:
            engine.place(net)
            latency_model.to(engine.device)
        optimizer = make_optimizer(config.optimizer, net.weight_parameters(), config.lr, config.weight_decay)
        self.thresholds = [p for p in net.threshold_parameters() if p.numel()]
        self.threshold_kinds = {kind: [p for n, p in net.named_parameters()
                                       if n.rsplit(".", 1)[-1] == f"t_{kind}" and p.numel()] for kind in DECISION_KINDS}
        threshold_opt = torch.optim.SGD(self.thresholds, lr=config.threshold_lr, momentum=config.threshold_momentum)
        super().__init__(modules={"net": net}, optimizers={"weights": optimizer, "thresholds": threshold_opt},
                         state={"lambda": config.lambda_init, "grad_sq": 0.0, "grad_steps": 0}, **kwargs)
        self.schedule("weights", optimizer, config.lr_schedule)
        self.schedule("thresholds", threshold_opt, "constant")   # decisions stay movable to the end
        self.net, self.latency_model, self.optimizer, self.threshold_opt, self.config = \
            net, latency_model, optimizer, threshold_opt, config
        # lambda >= 0 (a slower network is never rewarded) with anti-windup, ramped in after the warm-up
        self.penalty = LatencyPenalty(target_ms, self.state, config.target_aim, config.lambda_init, config.lambda_lr,
                                      config.lambda_p, nonnegative=True,
                                      ramp_steps=ramp_steps(config, self.total_steps))

    def _normalize_threshold_grads(self) -> bool:
        """Divide the threshold gradients by their running RMS; False (and no threshold step) when any of them is
        not finite (fp16 with a gradient scaler gives inf on its early steps): the gradients are dropped so that
        they poison neither the running RMS nor the momentum."""
        grads = [p.grad for p in self.thresholds if p.grad is not None]
        if grads and not bool(torch.isfinite(torch.cat([g.flatten() for g in grads])).all()):
            for p in self.thresholds:
                p.grad = None
            return False
        state = self.state
        state["grad_steps"] = int(state["grad_steps"]) + 1
        if self.config.threshold_normalization == "global":
            self._normalize_group("grad_sq", grads)
            return True
        for kind, params in self.threshold_kinds.items():
            self._normalize_group(f"grad_sq_{kind}", [p.grad for p in params if p.grad is not None])
        return True

    def _normalize_group(self, key: str, grads: list[torch.Tensor]) -> None:
        """Divide ``grads`` by the running RMS kept in ``state[key]`` (bias-corrected by the step count)."""
        if not grads:
            return
        flat = torch.cat([g.flatten() for g in grads])
        state = self.state
        state[key] = self.GRAD_BETA * float(state.get(key, 0.0)) + (1 - self.GRAD_BETA) * float(flat.pow(2).mean())
        rms = math.sqrt(state[key] / (1 - self.GRAD_BETA ** state["grad_steps"]))
        for g in grads:
            g.div_(rms + 1e-12)

    def validation_model(self) -> nn.Module:
        """The supernet with its current decisions (eval mode: no subset dropout) -- the network the search
        would derive now."""
        return self.net

    def step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        cfg, net = self.config, self.net
        total = self.total_steps
        warm = warmup_steps(cfg, total)
        searching = step >= warm
        progress = max(0, step - warm) / max(1, total - warm - 1)     # the temperature anneals after the warm-up
        net.tau = cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** min(1.0, progress)
        net.subset_dropout = cfg.subset_dropout if dropout_active(cfg, epoch, step, total) else 0.0
        net.train()
        results, inds, margins = net.decide()
        with torch.no_grad():
            hard_ms = float(self.latency_model(hard(margins)))
            arch = net.architecture_from(hard(margins))
        lam = self.penalty.steer(hard_ms) if searching else 0.0       # runtime term off during the warm-up
        with self.engine.autocast():
            logits = net.forward_decided(x, results)
            ce = F.cross_entropy(logits, y)
        latency_ms = self.latency_model(inds)
        loss = ce + self.penalty(latency_ms, lam)
        self.optimizer.zero_grad(set_to_none=True)
        self.threshold_opt.zero_grad(set_to_none=True)
        optimizers = [self.optimizer, self.threshold_opt]
        self.engine.backward(loss, net.parameters(), optimizers)
        if searching:
            self._normalize_threshold_grads()
        else:                                                          # warm-up: thresholds stay where they are
            for p in self.thresholds:
                p.grad = None
        self.engine.step(optimizers)
        net.limit_thresholds(cfg.threshold_reach)
        record = {
            "ce": ce.item(), "runtime_ms": latency_ms.item(), "runtime_hard_ms": hard_ms, "lambda": lam,
            "accuracy": float((logits.argmax(1) == y).float().mean()), "arch": arch.to_string(),
            "decisions": arch_summary(arch), "tau": net.tau, "lr": self.optimizer.param_groups[0]["lr"],
        }
        if self.progress is not None:
            self.progress.set_postfix_str(f"CE {record['ce']:.3f} R {hard_ms:.1f}ms λ {lam:.2f} {record['decisions']}")
        return record


def type_log_probs(net: SuperNet, latency_model: SuperkernelLatency):
    """score(position index, LayerType) = log P(type) with the soft indicators sigmoid(margin): the searcher's
    confidence, used to repair an architecture that ends outside the latency window."""
    with torch.no_grad():
        m = net.margins()
        soft = Decisions(*(torch.sigmoid(v.clamp(-30, 30)) for v in (m.keep, m.kernel, m.expand, m.se)))
        skip_w, mb_w = latency_model.type_weights(soft)
        skip_w, mb_w = skip_w.cpu(), mb_w.cpu()
    g = latency_model.grid
    index = {p.index: l for l, p in enumerate(latency_model.positions)}

    def score(position: int, layer_type: LayerType) -> float:
        l = index[position]
        if layer_type.is_skip:
            p = float(skip_w[l])
        else:
            p = float(mb_w[l, g.kernels.index(layer_type.kernel), g.expansions.index(layer_type.expansion),
                           g.se_ratios.index(layer_type.se_ratio)])
        return math.log(max(p, 1e-30))

    return score


def search(ctx: SearchContext) -> SearchOutcome:
    """Run (or resume) the single-path search of ``ctx`` and derive its architecture and network."""
    cfg, latency_model = ctx.config, ctx.latency_model
    torch.manual_seed(cfg.seed)
    net = SuperNet(ctx.train_space, latency_model.grid, relax=cfg.relax, threshold_init=cfg.threshold_init)
    phase = SinglePathPhase(net=net, latency_model=latency_model, target_ms=cfg.target_ms, config=cfg,
                            **ctx.phase_kwargs("search"))
    phase.run_loop(phase.restore(ctx.checkpoint))
    derived = net.architecture()
    arch, repairs = derive_in_window(derived, latency_model, cfg.target_ms, type_log_probs(net, latency_model))
    details = {"lambda_final": phase.state["lambda"], "search_steps": phase.total_steps,
               "architecture_params_max_diff": ctx.engine.max_difference(net.architecture_parameters())}
    return SearchOutcome(arch, extract_network(net, arch), phase.elapsed_s, TrainingHyperparameters.from_config(cfg),
                         derived, repairs, details)
