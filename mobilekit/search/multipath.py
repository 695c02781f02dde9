"""Multi-path baseline (FBNet / ProxylessNAS style): a separate MBConv path per candidate type at every
searchable position, mixed by Gumbel-softmax architecture weights.

Steps alternate: a weight step on a batch of the weight split (paths' weights, Gumbel samples of the fixed
architecture weights), then an architecture step on a batch of the held-out architecture split (20 % of the
training split) with loss ``CE + lambda * log E[R]``, ``E[R]`` from
:class:`~mobilekit.latency.runtime_loss.ExpectedLatency` of ``softmax(alpha)``. As in FBNet, the first
``arch_warmup_epochs`` train the weights only. ``lambda`` is steered toward the target as in the single-path
search (:func:`~mobilekit.search.budget.steer_lambda`), from ``E[R]`` (the argmax of a fresh, uniform alpha
says nothing). All paths are
computed in every step (as FBNet does), which is what the memory benchmark compares against.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from mobilekit.latency.runtime_loss import ExpectedLatency
from mobilekit.models.torch_builder import MBConv, MobileNet, Head, Stem
from mobilekit.search.budget import WINDOW, repair_to_window, steer_lambda
from mobilekit.search.single_path import arch_summary
from mobilekit.search.training import Phase, SearchContext, SearchOutcome, batches, cosine_lr
from mobilekit.space import Architecture, LayerSpec, LayerType, SearchSpace

MASKED = -1e4   # logit of padded candidate columns


class MultiPathNet(nn.Module):
    """Stem, fixed MBConvs, one ``ModuleList`` of candidate paths per searchable position, head.

    ``alpha`` (L, C): architecture logits, padded columns masked. forward(x (N, 3, R, R), weights (L, C))
    -> logits; each searchable layer outputs ``sum_c weights[l, c] * path_c(x)``.
    """

    def __init__(self, space: SearchSpace, candidates: list[tuple[LayerType, ...]], dropout: float = 0.2) -> None:
        super().__init__()
        self.space = space
        self.candidates = candidates
        self.stem = Stem(space)
        rows = iter(candidates)
        self.layers = nn.ModuleList(
            nn.ModuleList(MBConv(LayerSpec(p, t)) for t in next(rows)) if p.searchable
            else MBConv(LayerSpec(p, p.candidates[0])) for p in space.positions)
        self.head = Head(space, dropout)
        width = max(len(c) for c in candidates)
        mask = torch.zeros(len(candidates), width, dtype=torch.bool)
        for l, row in enumerate(candidates):
            mask[l, :len(row)] = True
        self.register_buffer("mask", mask)
        self.alpha = nn.Parameter(torch.zeros(len(candidates), width))

    def logits(self) -> torch.Tensor:
        return self.alpha.masked_fill(~self.mask, MASKED)

    def probs(self) -> torch.Tensor:
        return F.softmax(self.logits(), dim=-1)

    def sample_weights(self, tau: float) -> torch.Tensor:
        return F.gumbel_softmax(self.logits(), tau=tau, hard=False, dim=-1)

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "alpha"]

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        weights = self.probs() if weights is None else weights
        x = self.stem(x)
        l = 0
        for layer in self.layers:
            if isinstance(layer, nn.ModuleList):
                x = sum(weights[l, c] * path(x) for c, path in enumerate(layer))
                l += 1
            else:
                x = layer(x)
        return self.head(x)

    def architecture(self) -> Architecture:
        """argmax of alpha at every searchable position (in the training space)."""
        best = self.logits().argmax(-1).tolist()
        chosen = iter(row[c] for row, c in zip(self.candidates, best))
        return Architecture(self.space, tuple(next(chosen) if p.searchable else p.candidates[0]
                                              for p in self.space.positions))

    @torch.no_grad()
    def extract(self, arch: Architecture, dropout: float = 0.2) -> MobileNet:
        """A :class:`MobileNet` of ``arch`` with the chosen paths' weights."""
        model = MobileNet(arch.with_space(self.space), dropout)
        model.stem.load_state_dict(self.stem.state_dict())
        model.head.load_state_dict(self.head.state_dict())
        l = 0
        for spec, target, source in zip(arch.layers(), model.layers, self.layers):
            if isinstance(source, nn.ModuleList):
                target.load_state_dict(source[self.candidates[l].index(spec.op)].state_dict())
                l += 1
            else:
                target.load_state_dict(source.state_dict())
        return model

    def score(self):
        """score(position index, LayerType) = log softmax(alpha), for the latency-window repair."""
        log_p = F.log_softmax(self.logits(), dim=-1).detach()
        index = {p.index: l for l, p in enumerate(self.space.searchable_positions)}
        return lambda position, layer_type: float(log_p[index[position], self.candidates[index[position]].index(layer_type)])


def split_for_architecture(dataset: TensorDataset, seed: int, share: float = 0.2) -> tuple[TensorDataset, TensorDataset]:
    """(weight split, architecture split) of a training set, seeded."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    cut = max(2, int(len(order) * share))
    x, y = dataset.tensors
    return TensorDataset(x[order[cut:]], y[order[cut:]]), TensorDataset(x[order[:cut]], y[order[:cut]])


class MultiPathPhase(Phase):
    """Alternating weight / architecture steps. State: ``lambda``. Records: ce (weight step), arch_ce,
    runtime_ms (E[R]), runtime_hard_ms (argmax architecture), lambda, accuracy, arch, decisions, tau."""

    def __init__(self, *, net: MultiPathNet, runtime: ExpectedLatency, arch_data: TensorDataset,
                 target_ms: float, config, **kwargs: Any) -> None:
        weights_opt = torch.optim.Adam(net.weight_parameters(), lr=config.lr)
        arch_opt = torch.optim.Adam([net.alpha], lr=config.arch_lr)
        super().__init__(modules={"net": net}, optimizers={"weights": weights_opt, "arch": arch_opt},
                         state={"lambda": config.lambda_init}, **kwargs)
        self.net, self.runtime, self.arch_data, self.config = net, runtime, arch_data, config
        self.weights_opt, self.arch_opt = weights_opt, arch_opt
        self.aim_ms = config.target_aim * target_ms

    def step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        cfg, net = self.config, self.net
        total = self.total_steps
        tau = cfg.gumbel_tau_start * (cfg.gumbel_tau_end / cfg.gumbel_tau_start) ** (step / max(1, total - 1))
        for group in self.weights_opt.param_groups:
            group["lr"] = cosine_lr(cfg.lr, step, total)
        net.train()
        # weight step
        logits = net(x, net.sample_weights(tau).detach())
        ce = F.cross_entropy(logits, y)
        self.weights_opt.zero_grad(set_to_none=True)
        ce.backward()
        self.weights_opt.step()
        # architecture step on the held-out split (after the weight-only warm-up epochs)
        arch_ce, expected_ms, lam = float("nan"), self.runtime(net.probs()).detach(), float(self.state["lambda"])
        if epoch >= cfg.arch_warmup_epochs_:
            per_pass = len(batches(self.arch_data, self.batch_size, self.seed + 1, 0))
            index = batches(self.arch_data, self.batch_size, self.seed + 1, step // per_pass)[step % per_pass]
            ax, ay = self.arch_data.tensors[0][index], self.arch_data.tensors[1][index]
            lam = steer_lambda(self.state, expected_ms.item(), self.aim_ms, cfg.lambda_lr, cfg.lambda_p)
            for p in net.weight_parameters():
                p.requires_grad_(False)
            arch_loss = F.cross_entropy(net(ax, net.sample_weights(tau)), ay)
            expected_ms = self.runtime(net.probs())
            loss = arch_loss + lam * torch.log(expected_ms)
            self.arch_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.arch_opt.step()
            for p in net.weight_parameters():
                p.requires_grad_(True)
            arch_ce = arch_loss.item()
        arch = net.architecture()
        hard_ms = self.runtime.lookup_ms(arch)
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
    cfg, runtime = ctx.config, ctx.runtime
    torch.manual_seed(cfg.seed)
    net = MultiPathNet(ctx.train_space, runtime.candidates)
    weight_data, arch_data = split_for_architecture(ctx.splits.train, cfg.seed)
    phase = MultiPathPhase(net=net, runtime=runtime, arch_data=arch_data, target_ms=cfg.target_ms, config=cfg,
                           **ctx.phase_kwargs("search", dataset=weight_data))
    phase.run_loop(phase.restore(ctx.checkpoint))
    derived = net.architecture()
    arch, repairs = repair_to_window(derived, runtime, WINDOW[0] * cfg.target_ms, WINDOW[1] * cfg.target_ms,
                                     net.score())
    info = {"derived_arch": derived.to_string(), "derived_ms": runtime.lookup_ms(derived),
            "repairs": [r.to_dict() for r in repairs], "lambda_final": phase.state["lambda"],
            "search_steps": phase.total_steps}
    return SearchOutcome(arch, net.extract(arch), phase.elapsed_s, info)
