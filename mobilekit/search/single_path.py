"""Single-path search (Stamoulis et al.): one superkernel network, loss ``CE + lambda * log R``, one optimiser
step that updates weights and thresholds together (no bi-level loop).

``R`` is :class:`~mobilekit.latency.runtime_loss.SuperkernelRuntime` of the current decisions. The paper fixes
``lambda`` and tunes it by hand to land near a target; here ``lambda`` is steered toward
``target_aim * target_ms`` by :func:`~mobilekit.search.budget.steer_lambda` (PI control; ``lambda_lr = 0`` and
``lambda_p = 0`` give the paper's fixed lambda).

Weights use Adam. Thresholds use SGD with momentum on gradients divided by one running RMS of the whole
threshold-gradient vector: a per-parameter normaliser (Adam) would move every threshold at the same speed and
flip decisions all at once, while this keeps their relative sizes, so a subset whose removal saves more
latency (for the accuracy it costs) crosses its threshold first. Both optimisers step on every batch after
the same backward pass.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from mobilekit.latency.runtime_loss import Decisions, SuperkernelRuntime
from mobilekit.search.budget import WINDOW, repair_to_window, steer_lambda
from mobilekit.search.superkernel import SuperNet, extract_subnet
from mobilekit.search.training import Phase, SearchContext, SearchOutcome, cosine_lr
from mobilekit.space import Architecture, LayerType


def arch_summary(arch: Architecture) -> str:
    """Counts of the searched choices, e.g. ``k5:7 e6:9 se:2 skip:4``."""
    ops = arch.searchable_choices
    return (f"k5:{sum(o.kernel == 5 for o in ops)} e6:{sum(o.expansion == 6 for o in ops)} "
            f"se:{sum(o.se_ratio > 0 for o in ops)} skip:{sum(o.is_skip for o in ops)}")


def hard(margins: Decisions) -> Decisions:
    """0/1 decisions of margins (``margin >= 0`` is on)."""
    return Decisions(*((m >= 0).float() for m in (margins.keep, margins.kernel, margins.expand, margins.se)))


class SinglePathPhase(Phase):
    """The search loop. State: ``lambda``. Records per step: ce, runtime_ms (R in the loss), runtime_hard_ms
    (R of the current discrete architecture), lambda, accuracy, arch (block strings), decisions, tau, lr."""

    GRAD_BETA = 0.99   # running mean of the squared threshold gradient

    def __init__(self, *, net: SuperNet, runtime: SuperkernelRuntime, target_ms: float, config, **kwargs: Any):
        optimizer = torch.optim.Adam(net.weight_parameters(), lr=config.lr)
        self.thresholds = [p for p in net.threshold_parameters() if p.numel()]
        threshold_opt = torch.optim.SGD(self.thresholds, lr=config.threshold_lr, momentum=config.threshold_momentum)
        super().__init__(modules={"net": net}, optimizers={"weights": optimizer, "thresholds": threshold_opt},
                         state={"lambda": config.lambda_init, "grad_sq": 0.0, "grad_steps": 0}, **kwargs)
        self.net, self.runtime, self.optimizer, self.threshold_opt, self.config = \
            net, runtime, optimizer, threshold_opt, config
        self.aim_ms = config.target_aim * target_ms

    def _normalize_threshold_grads(self) -> None:
        grads = [p.grad for p in self.thresholds if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.flatten() for g in grads])
        state = self.state
        state["grad_steps"] = int(state["grad_steps"]) + 1
        state["grad_sq"] = self.GRAD_BETA * float(state["grad_sq"]) + (1 - self.GRAD_BETA) * float(flat.pow(2).mean())
        rms = math.sqrt(state["grad_sq"] / (1 - self.GRAD_BETA ** state["grad_steps"]))
        for g in grads:
            g.div_(rms + 1e-12)

    def step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        cfg, net = self.config, self.net
        total = self.total_steps
        for group in self.optimizer.param_groups:
            group["lr"] = cosine_lr(cfg.lr, step, total)
        for group in self.threshold_opt.param_groups:
            group["lr"] = cosine_lr(cfg.threshold_lr, step, total)
        net.tau = cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** (step / max(1, total - 1))
        net.subset_dropout = cfg.subset_dropout if epoch < cfg.subset_dropout_epochs_ else 0.0
        net.train()
        results, inds, margins = net.decide()
        with torch.no_grad():
            hard_ms = float(self.runtime(hard(margins)))
            arch = net.architecture_from(hard(margins))
        lam = steer_lambda(self.state, hard_ms, self.aim_ms, cfg.lambda_lr, cfg.lambda_p)
        logits = net.forward_decided(x, results)
        runtime_ms = self.runtime(inds)
        ce = F.cross_entropy(logits, y)
        loss = ce + lam * torch.log(runtime_ms)
        self.optimizer.zero_grad(set_to_none=True)
        self.threshold_opt.zero_grad(set_to_none=True)
        loss.backward()
        self._normalize_threshold_grads()
        self.optimizer.step()
        self.threshold_opt.step()
        net.limit_thresholds(cfg.threshold_reach)
        record = {
            "ce": ce.item(), "runtime_ms": runtime_ms.item(), "runtime_hard_ms": hard_ms, "lambda": lam,
            "accuracy": float((logits.argmax(1) == y).float().mean()), "arch": arch.to_string(),
            "decisions": arch_summary(arch), "tau": net.tau, "lr": self.optimizer.param_groups[0]["lr"],
        }
        if self.progress is not None:
            self.progress.set_postfix_str(f"CE {record['ce']:.3f} R {hard_ms:.1f}ms λ {lam:.2f} {record['decisions']}")
        return record


def type_log_probs(net: SuperNet, runtime: SuperkernelRuntime):
    """score(position index, LayerType) = log P(type) with the soft indicators sigmoid(margin): the searcher's
    confidence, used to repair an architecture that ends outside the latency window."""
    with torch.no_grad():
        m = net.margins()
        soft = Decisions(*(torch.sigmoid(v.clamp(-30, 30)) for v in (m.keep, m.kernel, m.expand, m.se)))
        skip_w, mb_w = runtime.type_weights(soft)
    g = runtime.grid
    index = {p.index: l for l, p in enumerate(runtime.positions)}

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
    cfg, runtime = ctx.config, ctx.runtime
    torch.manual_seed(cfg.seed)
    net = SuperNet(ctx.train_space, runtime.grid, relax=cfg.relax, threshold_init=cfg.threshold_init)
    phase = SinglePathPhase(net=net, runtime=runtime, target_ms=cfg.target_ms, config=cfg,
                            **ctx.phase_kwargs("search"))
    phase.run_loop(phase.restore(ctx.checkpoint))
    derived = net.architecture()
    arch, repairs = repair_to_window(derived, runtime, WINDOW[0] * cfg.target_ms, WINDOW[1] * cfg.target_ms,
                                     type_log_probs(net, runtime))
    info = {"derived_arch": derived.to_string(), "derived_ms": runtime.lookup_ms(derived),
            "repairs": [r.to_dict() for r in repairs], "lambda_final": phase.state["lambda"],
            "search_steps": phase.total_steps}
    return SearchOutcome(arch, extract_subnet(net, arch), phase.elapsed_s, info)
