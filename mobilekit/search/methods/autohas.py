"""AutoHAS (Dong et al., "AutoHAS: Differentiable Hyper-parameter and Architecture Search" and its later version;
equation numbers refer to ``../shared/papers/autohas.txt``): the architecture and the training hyper-parameters --
a learning rate per stage of the schedule and the L2 weight decay -- searched together under a latency target.

Encodings: the architecture logits of a :class:`~mobilekit.search.supernets.SampledPathNet` (one shared-weight
path per step) and the hyper-parameter logits of a :class:`~mobilekit.search.methods.hyperencoding.HyperEncoding` (bases
``default x multipliers``). One search step (Algorithm 1) on a training batch and a batch of the held-out
architecture split (20 % of the training split):

1. sample an architecture ``P^a`` (eq. 6-8: hard one-hot forward, Gumbel-softmax gradient, ``tau``) and activate
   its path; compute the training-loss gradient ``g`` of the path's weights ``W``;
2. encodings (eq. 4-5), ``--estimator gumbel``: temporary weights ``W_B = f_B(W, g)`` (one step of the weight
   optimiser with basis ``B``; :mod:`~mobilekit.search.temporary_weights`), mixed ``W' = sum_B P^h_B W_B`` with
   sampled one-hot ``P^h``; the validation loss of ``W'`` on the sampled path (``W'`` swapped into the active
   path's parameter slots for the forward pass, as ``torch.func.functional_call`` would) plus
   ``lambda log E[R]`` (``E[R]`` of ``softmax(P~^a)``) is back-propagated to both encodings (Adam,
   ``encoding_lr``). ``--estimator reinforce`` (the later version): architecture and bases
   are drawn from ``softmax(P~)``, ``W'`` is the temporary weight of the drawn basis, and the encodings follow the
   REINFORCE gradient ``(L_val(W') - b) grad log p`` with a moving-average baseline ``b``;
3. weights (eq. 9): one optimiser step of ``W`` with ``g`` and the hyper-parameters derived from the current
   encodings (eq. 10: the probability-weighted bases; for the learning rate, the current stage's encoding).

At the end the architecture is the argmax (eq. 10), repaired into [0.9 T, T]; the hyper-parameters (eq. 10) go to
the final training as a per-stage learning-rate schedule and a weight decay. The run folder gets
``hyperparameters.json`` and ``hyperparameters.png`` (their trajectories over the search, as the paper's Fig. 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from mobilekit import safewrite
from mobilekit.errors import ConfigError
from mobilekit.latency.differentiable import ExpectedLatency
from mobilekit.models.torch_builder import Skeleton
from mobilekit.search.methods.hyperencoding import (
    HyperEncoding,
    HyperParameter,
    categorical_log_prob,
    gumbel_one_hot,
    reinforce_surrogate,
)
from mobilekit.search.options import option
from mobilekit.search.outcome import SearchOutcome, TrainingHyperparameters, arch_summary, derive_in_window
from mobilekit.search.penalty import LatencyPenalty
from mobilekit.search.supernets import PathView, SampledPathNet, extract_network, weight_sharing_option
from mobilekit.search.temporary_weights import (affine_direction, affine_mixed_step, affine_step, mixed_lr_step,
                                                optimizer_direction, optimizer_step)
from mobilekit.search.training import (
    Phase,
    SearchContext,
    batch_count,
    batches,
    load_batches,
    make_optimizer,
    schedule_factor,
    split_for_architecture,
)

LATENCY_MODEL = "expected"
WEIGHT_OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
# Defaults per weight optimiser: (learning rate, weight decay). Under SGD the L2 term adds wd * W to the
# gradient, so 1e-5..1e-3 (the bases of 1e-4) span "none" to "strong" (the paper's 1.5e-4 and 8.4e-4, A.2); under
# AdamW the decay is lr * wd * W per step, so its bases sit around 0.05.
WEIGHT_DEFAULTS: dict[str, tuple[float, float]] = {"sgd": (0.05, 1e-4), "adamw": (float("nan"), 0.05)}
# The paper's search length on its smaller vision datasets (appendix: "9000 iterations"; ImageNet, 30 epochs at
# batch 4096, is about as many), over which its Adam 0.002 moves an encoding logit at most 18.
PAPER_SEARCH_STEPS = 9000
# The largest Adam step of the hyper-parameter encodings that the budget scaling gives (the behavioural toy tests'
# step size): a logit moves at most this per step.
HP_ENCODING_LR_MAX = 0.1
SUMMARY = "AutoHAS: architecture + learning-rate schedule + weight decay, sampled path, temporary weights"
HYPERPARAMETERS_JSON = "hyperparameters.json"
HYPERPARAMETERS_PNG = "hyperparameters.png"


@dataclass
class Options:
    """AutoHAS settings (recipe section ``[search.autohas]``)."""

    estimator: str = option("gumbel", "encoding gradient: Gumbel-softmax straight-through (eq. 6-8) or REINFORCE",
                            choices=("gumbel", "reinforce"))
    tau: float = option(10.0, "Gumbel-softmax temperature of the hyper-parameter encodings (the paper's 10)", gt=0)
    arch_tau: float = option(1.0, "Gumbel-softmax temperature of the architecture encodings: the straight-through "
                             "gradient reaching alpha scales as P(1-P)/tau, so at the paper's 10 the validation "
                             "loss moves alpha ~13x less than the latency term (measured), at 1 ~2.7x more", gt=0)
    gumbel_form: str = option("log", "where the Gumbel noise goes: log-probabilities (GDAS; the choice is drawn "
                              "from softmax of the encodings) or the probabilities as eq. 7 is printed (the "
                              "top choice is then drawn at most e/(e+m-1) of the time)", choices=("log", "printed"))
    encoding_lr: float = option(0.002, "Adam learning rate of the encodings (the paper's 0.002); the "
                                "hyper-parameter encodings get it scaled by --hp-encoding-steps", gt=0)
    hp_encoding_steps: int = option(PAPER_SEARCH_STEPS, "the hyper-parameter encodings' Adam lr is encoding_lr x "
                                    "this / search steps, at least encoding_lr and at most 0.1, so over a short "
                                    "search they can move about as far as at the paper's 0.002 over its 9000 "
                                    "iterations (Adam moves a logit at most its lr per step); 0 keeps encoding_lr",
                                    ge=0)
    lr_stages: int = option(4, "learning-rate encodings over the schedule (one per stage)", ge=1)
    multipliers: tuple[str, ...] = option(("0.1", "0.25", "0.5", "0.75", "1", "2.5", "5", "7.5", "10"),
                                          "bases = default x these multipliers (comma-separated)")
    weight_optimizer: str = option("sgd", "optimiser of the weights during the search and of the deliverable: "
                                   "Nesterov momentum-0.9 SGD with L2 weight decay (the paper's appendix A.2) or "
                                   "AdamW (decoupled weight decay)", choices=WEIGHT_OPTIMIZERS)
    weight_lr: float | None = option(None, "default learning rate the lr bases multiply (default: 0.05 for sgd, "
                                     "--lr for adamw)", gt=0)
    wd_default: float | None = option(None, "weight decay the weight-decay bases multiply (default: 1e-4 for sgd, "
                                      "0.05 for adamw, where it is decoupled and scaled by the lr)", gt=0)
    encoding_start: str = option("default", "initial encodings: derive the defaults (eq. 10) or uniform (derive "
                                 "the mean of the bases)", choices=("default", "uniform"))
    weight_sharing: str = weight_sharing_option()
    baseline_momentum: float = option(0.9, "REINFORCE: moving-average factor of the loss baseline", ge=0, lt=1)


def multipliers(options: Any) -> tuple[float, ...]:
    """The ``multipliers`` option as floats; :class:`ConfigError` naming it otherwise."""
    try:
        values = tuple(float(m) for m in options.multipliers)
    except ValueError:
        raise ConfigError(f"multipliers: {','.join(options.multipliers)!r} must be comma-separated positive "
                          "numbers, e.g. 0.1,0.5,1,5,10") from None
    if not values or min(values) <= 0:
        raise ConfigError(f"multipliers: {values} must be positive numbers, e.g. 0.1,0.5,1,5,10")
    return values


def weight_settings(config: Any) -> tuple[str, float, float]:
    """(optimiser name, default lr, default weight decay) of the searched weights: ``weight_optimizer`` with
    ``weight_lr`` / ``wd_default``, or their per-optimiser defaults (:data:`WEIGHT_DEFAULTS`; AdamW's lr is
    ``--lr``)."""
    name = config.weight_optimizer
    lr, wd = WEIGHT_DEFAULTS[name]
    lr = config.weight_lr if config.weight_lr is not None else (config.lr if name == "adamw" else lr)
    wd = config.wd_default if config.wd_default is not None else wd
    return name, float(lr), float(wd)


def hyperparameter_space(config: Any) -> list[HyperParameter]:
    """The searched hyper-parameters: ``lr`` (``lr_stages`` encodings, bases ``config.lr x multipliers``) and
    ``weight_decay`` (bases ``wd_default x multipliers``), starting at the defaults unless ``encoding_start`` is
    "uniform"."""
    m, at_default = multipliers(config.method_options), config.encoding_start == "default"
    _, lr, wd = weight_settings(config)
    return [HyperParameter.continuous("lr", lr, m, stages=config.lr_stages, start_at_default=at_default),
            HyperParameter.continuous("weight_decay", wd, m, start_at_default=at_default)]


def hp_encoding_lr(encoding_lr: float, reference_steps: int, search_steps: int) -> float:
    """Adam learning rate of the hyper-parameter encodings: ``encoding_lr x max(1, reference_steps /
    search_steps)`` (``reference_steps`` 0: ``encoding_lr``). Adam moves a logit by at most its learning rate per
    step (about lr x |mean| / rms of the gradient), so at the paper's 0.002 a search of a few hundred steps cannot
    move the derived values: from the start encodings, making the 10x basis dominate needs its logit up by ~3.4
    (measured in ``docs/methods/autohas.md``). Scaled, every search gives the encodings the paper's reach
    (``0.002 x 9000``), up to :data:`HP_ENCODING_LR_MAX` per step so that one noisy step of a very short search
    cannot flip an encoding (the scale is never below ``encoding_lr``). Each lr stage sees only its share of the
    steps, so it gets a stage's share of that reach."""
    if reference_steps <= 0:
        return encoding_lr
    scaled = encoding_lr * reference_steps / max(1, search_steps)
    return max(encoding_lr, min(scaled, HP_ENCODING_LR_MAX))


def delivered_ms(latency_model: ExpectedLatency, logits: torch.Tensor) -> float:
    """Latency (ms) of what the search would deliver now, the argmax of the architecture logits (L, C; masked
    entries at ``-inf``), which steers lambda. A layer whose largest logit is tied (at the start every logit is 0)
    has no argmax yet: it counts at its expected latency under ``softmax(logits)`` rather than at whichever tied
    candidate comes first (the first is skip, which made the first steps steer lambda far below 0)."""
    logits = logits.detach()
    probs = F.softmax(logits, dim=-1)
    top = logits.topk(min(2, logits.shape[-1]), dim=-1).values
    decided = (top[:, 0] > top[:, 1]) if top.shape[-1] > 1 else torch.ones(len(logits), dtype=torch.bool)
    hard = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(probs.dtype)
    return float(latency_model(torch.where(decided[:, None].to(probs.device), hard, probs)))


def mixed_temporary_weights(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[torch.Tensor],
                            lr_bases: tuple[float, ...], wd_bases: tuple[float, ...], p_lr: torch.Tensor,
                            p_wd: torch.Tensor) -> list[torch.Tensor]:
    """Eq. 4-5: ``W' = sum_ij P_i P_j W_ij``, ``W_ij`` one step of ``optimizer``'s rule from ``params`` with
    gradient ``grads``, learning rate ``lr_bases[i]`` and weight decay ``wd_bases[j]``; differentiable w.r.t. the
    encodings ``p_lr`` (m_lr,) and ``p_wd`` (m_wd,). SGD and AdamW use the affine direction per tensor (one inner
    product per term backward for all bases, ``torch._foreach_*``), Adam one direction per weight-decay basis
    (:mod:`~mobilekit.search.temporary_weights`). The optimiser's state is read, not changed; the gradients and
    momentum buffers are referenced, not copied, so the encodings' backward pass must run before the weight
    step (as the phase does)."""
    affine = affine_direction(optimizer, params, grads)
    if affine is not None:
        return affine_mixed_step(affine, params, lr_bases, wd_bases, p_lr, p_wd)
    return mixed_lr_step(lambda wd: optimizer_direction(optimizer, params, grads, wd), params, lr_bases, wd_bases,
                         p_lr, p_wd)


def temporary_weight(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[torch.Tensor],
                     lr: float, weight_decay: float) -> list[torch.Tensor]:
    """One temporary weight ``W_ij`` (eq. 4; REINFORCE draws one basis of each): ``params - lr D(weight_decay)``."""
    affine = affine_direction(optimizer, params, grads)
    if affine is not None:
        return affine_step(affine, params, lr, weight_decay)
    return optimizer_step(optimizer, params, grads, lr, weight_decay)


def active_parameters(net: SampledPathNet, named: list[tuple[str, nn.Parameter]] | None = None,
                      cache: dict[tuple[int, int], frozenset[int]] | None = None) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the active path: stem, fixed blocks, head and each layer's active candidate.
    ``named``: the net's ``named_parameters()`` without alpha, when the caller keeps them (saves a module walk);
    ``cache``: the ids of the parameters each (layer, candidate) leaves unused, filled as candidates are met
    (saves a walk of every searchable block per step)."""
    inactive: set[int] = set()
    for layer, block in enumerate(net.paths):
        ids = None if cache is None else cache.get((layer, block.active))
        if ids is None:
            ids = frozenset(id(p) for p in block.inactive_parameters())
            if cache is not None:
                cache[layer, block.active] = ids
        inactive |= ids
    if named is None:
        named = [(n, p) for n, p in net.named_parameters() if n != "alpha"]
    return [(n, p) for n, p in named if id(p) not in inactive]


class AutoHASPhase(Phase):
    """One AutoHAS search loop (see the module docstring). State: ``lambda``, ``baseline``. Records: ce, val_ce,
    accuracy, runtime_ms (E[R]), runtime_hard_ms (argmax architecture), lambda, lr (this step's), lr_stage,
    lr_stages (every stage's derived value), weight_decay, arch, decisions, lr_probs (the current lr stage's
    softmax after the step), grad_lr, grad_wd_abs, grad_alpha_abs (the hyper-gradients, see
    :meth:`_encoding_gradients`)."""

    def __init__(self, *, net: SampledPathNet, encoding: HyperEncoding, arch_data: Dataset,
                 latency_model: ExpectedLatency, config: Any, **kwargs: Any) -> None:
        engine = kwargs.get("engine")
        if engine is not None:
            engine.place(net)
            encoding.to(engine.device)
            latency_model.to(engine.device)
        name, lr, wd = weight_settings(config)
        weights_opt = make_optimizer(name, net.weight_parameters(), lr, wd)
        encoding_opt = torch.optim.Adam([{"params": [net.alpha]}, {"params": list(encoding.parameters())}],
                                        lr=config.encoding_lr)
        super().__init__(modules={"net": net, "encoding": encoding},
                         optimizers={"weights": weights_opt, "encoding": encoding_opt},
                         state={"lambda": config.lambda_init, "baseline": None}, **kwargs)
        self.net, self.encoding, self.arch_data, self.config = net, encoding, arch_data, config
        self.latency_model, self.weights_opt, self.encoding_opt = latency_model, weights_opt, encoding_opt
        encoding_opt.param_groups[1]["lr"] = hp_encoding_lr(config.encoding_lr, config.hp_encoding_steps,
                                                            self.total_steps)
        self.penalty = LatencyPenalty.from_config(config, self.state)
        # cached once (the module tree does not change during the search): the weights, every slot a weight is
        # registered in (a module's parameter dict and key; a tied weight has several), and each module's buffer
        # dict with the ids of its own parameters, so the validation pass swaps in the temporary weights and copies
        # of the active path's buffers without a module walk
        self._weights = net.weight_parameters()
        self._named_weights = [(n, p) for n, p in net.named_parameters() if n != "alpha"]
        self._slots: dict[int, list[tuple[dict, str]]] = {}
        for m in net.modules():
            for key, p in m._parameters.items():
                if p is not None:
                    self._slots.setdefault(id(p), []).append((m._parameters, key))
        self._inactive: dict[tuple[int, int], frozenset[int]] = {}
        self._arch_order: tuple[int, list[torch.Tensor]] | None = None
        self._module_buffers = [({id(p) for p in m.parameters(recurse=False)}, m._buffers,
                                 [k for k, b in m._buffers.items() if b is not None])
                                for m in net.modules() if next(m.buffers(recurse=False), None) is not None]

    def validation_model(self) -> PathView:
        """The most likely path (argmax of alpha at every layer, eval mode): the network the search would derive
        now (before the latency-window repair)."""
        return PathView.most_likely(self.net)

    def _arch_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        per_pass = batch_count(self.arch_data, self.batch_size)
        if self._arch_order is None or self._arch_order[0] != step // per_pass:
            self._arch_order = (step // per_pass, batches(self.arch_data, self.batch_size, self.seed + 1,
                                                          step // per_pass))
        index = self._arch_order[1][step % per_pass]
        x, y = next(iter(load_batches(self.arch_data, [index], self.workers)))
        return self.engine.batch(x, y)

    def _arch_logits(self) -> torch.Tensor:
        return self.net.alpha.masked_fill(~self.net.mask, float("-inf"))

    def _val_loss(self, params: list[torch.Tensor], weights: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                  gates: torch.Tensor | None) -> torch.Tensor:
        """CE of the active path with ``weights`` in place of its parameters ``params`` (BN statistics left
        untouched), ``gates`` (L,) multiplying each searchable layer's output when given.

        What ``torch.func.functional_call`` does, for the active path only and without its per-call machinery
        (measured on a digits path at batch 32: functional_call 2.2 ms over the bare forward pass, this 1.1 ms,
        buffer copies included): each weight is put into the module slots of its parameter for the forward pass
        and the parameters are put back before returning (also on an error); the buffers the
        active path updates (BN statistics) go in as copies: a module's buffers when it has no parameters of its
        own or one of them is active (an inactive candidate's BN is not run). The graph refers to the weights, so
        the backward pass needs no swapping."""
        swapped: list[tuple[dict, str, torch.Tensor]] = []
        try:
            for p, w in zip(params, weights):
                for slots, key in self._slots[id(p)]:
                    swapped.append((slots, key, p))
                    slots[key] = w
            active = {id(p) for p in params}
            for ids, buffers, keys in self._module_buffers:
                if not ids or ids & active:
                    for key in keys:
                        swapped.append((buffers, key, buffers[key]))
                        buffers[key] = buffers[key].clone()
            with self.engine.autocast():
                block_args = [(None if gates is None else gates[l],) for l in range(len(self.net.candidates))]
                return F.cross_entropy(Skeleton.forward(self.net, x, block_args), y)
        finally:
            for slots, key, original in reversed(swapped):
                slots[key] = original

    def _encoding_gradients(self, stage: int) -> dict[str, Any]:
        """The hyper-gradient that reached the encodings this step (before Adam): ``grad_lr`` (m,) of the current
        lr stage's logits, ``grad_wd_abs`` and ``grad_alpha_abs`` the mean |gradient| of the weight-decay logits and
        of the searchable architecture logits (unmasked entries), for comparing their scales."""
        def grad(p: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(p) if p.grad is None else p.grad.detach()

        alpha = grad(self.net.alpha)[self.net.mask]
        return {"grad_lr": grad(self.encoding.row("lr", stage)).cpu().tolist(),
                "grad_wd_abs": float(grad(self.encoding.row("weight_decay")).abs().mean()),
                "grad_alpha_abs": float(alpha.abs().mean()) if alpha.numel() else 0.0}

    def step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        cfg, net, enc = self.config, self.net, self.encoding
        stage = enc.specs["lr"].stage_of(step, self.total_steps)
        # the lr bases sit around the default schedule at this step (the paper: "around the default learning rate
        # at each step"): B_i(t) = schedule(t) x lr x m_i
        sched = schedule_factor(cfg.lr_schedule, step, self.total_steps)
        lr_bases = tuple(b * sched for b in enc.specs["lr"].bases)
        wd_bases = enc.specs["weight_decay"].bases
        if not net.training:       # train() walks every module of the supernet (~18 ms a step on a CPU)
            net.train()
        # 1. sample an architecture, activate its path, training gradient of its weights
        if cfg.estimator == "gumbel":
            arch_onehot = gumbel_one_hot(self._arch_logits(), cfg.arch_tau, form=cfg.gumbel_form)
            chosen = arch_onehot.detach().argmax(-1)
        else:
            chosen = torch.multinomial(net.probs().detach().cpu(), 1).squeeze(1).to(net.alpha.device)
        net.fix(chosen.tolist())
        params = [p for _, p in active_parameters(net, self._named_weights, self._inactive)]
        self.weights_opt.zero_grad(set_to_none=True)
        with self.engine.autocast():
            logits = net(x)
            ce = F.cross_entropy(logits, y)
        self.engine.backward(ce, self._weights, [self.weights_opt])
        grads = [p.grad for p in params]            # no graph: the backward pass is not create_graph
        # 2. encodings through the temporary weights (eq. 4-5)
        vx, vy = self._arch_batch(step)
        expected_ms = self.latency_model(net.probs())
        # lambda is steered on the latency of what is delivered (the argmax architecture, as single-path does),
        # not on E[R] under softmax(alpha): the two differ when the encodings are spread out
        lam = self.penalty.steer(delivered_ms(self.latency_model, self._arch_logits()))
        wd_probs = enc.probs("weight_decay")
        if cfg.estimator == "gumbel":
            gates = arch_onehot[torch.arange(len(chosen)), chosen]
            p_lr = enc.sample("lr", stage, cfg.tau, form=cfg.gumbel_form)
            p_wd = enc.sample("weight_decay", 0, cfg.tau, form=cfg.gumbel_form)
            mixed = mixed_temporary_weights(self.weights_opt, params, grads, lr_bases, wd_bases, p_lr, p_wd)
            val_ce = self._val_loss(params, mixed, vx, vy, gates)
            loss = val_ce + self.penalty(expected_ms, lam)
        else:
            i = int(torch.multinomial(enc.probs("lr", stage).detach().cpu(), 1))
            j = int(torch.multinomial(wd_probs.detach().cpu(), 1))
            temporary = temporary_weight(self.weights_opt, params, grads, lr_bases[i], wd_bases[j])
            with torch.no_grad():
                val_ce = self._val_loss(params, temporary, vx, vy, None)
            log_prob = (categorical_log_prob(self._arch_logits(), chosen)
                        + torch.log(enc.probs("lr", stage)[i]) + torch.log(wd_probs[j]))
            baseline = self.state["baseline"]
            loss = reinforce_surrogate(log_prob, val_ce, 0.0 if baseline is None else baseline) \
                + self.penalty(expected_ms, lam)
            m = cfg.baseline_momentum
            self.state["baseline"] = float(val_ce) if baseline is None else m * baseline + (1 - m) * float(val_ce)
        self.encoding_opt.zero_grad(set_to_none=True)
        self.engine.backward(loss, [net.alpha, *enc.parameters()], [self.encoding_opt])
        grad_probe = self._encoding_gradients(stage)
        # 3. the shared weights: one step with the derived hyper-parameters (eq. 9, 10)
        lr_now, wd_now = enc.derive("lr", stage) * sched, enc.derive("weight_decay")
        for group in self.weights_opt.param_groups:
            group["lr"], group["weight_decay"] = lr_now, wd_now
        self.engine.step([self.weights_opt, self.encoding_opt])
        arch = net.architecture()
        hard_ms = self.latency_model.lookup_ms(arch)   # after this step's update (the steering used the one before)
        record = {
            "ce": ce.item(), "val_ce": float(val_ce.detach()), "accuracy": float((logits.argmax(1) == y).float().mean()),
            "runtime_ms": float(expected_ms.detach()), "runtime_hard_ms": hard_ms, "lambda": lam, "lr": lr_now,
            "lr_stage": stage, "lr_stages": [enc.derive("lr", s) for s in range(enc.specs["lr"].stages)],
            "weight_decay": enc.derive("weight_decay"), "arch": arch.to_string(), "decisions": arch_summary(arch),
            "lr_probs": enc.probs("lr", stage).detach().cpu().tolist(), **grad_probe,
        }
        if self.progress is not None:
            self.progress.set_postfix_str(f"CE {record['ce']:.3f} val {record['val_ce']:.3f} E[R] "
                                          f"{record['runtime_ms']:.1f}ms lr {lr_now:.2g} wd {record['weight_decay']:.2g}")
        return record


def searched_hyperparameters(encoding: HyperEncoding, config: Any) -> TrainingHyperparameters:
    """Eq. 10 applied to the encodings: the per-stage learning rates (peak values, applied on top of the
    ``lr_schedule`` the search used, so the deliverable trains with the searched schedule) and the weight decay."""
    derived = encoding.derive_all()
    stages = derived["lr"] if isinstance(derived["lr"], list) else [derived["lr"]]
    return TrainingHyperparameters(lr=stages[0], lr_schedule=config.lr_schedule, weight_decay=derived["weight_decay"],
                                   optimizer=config.weight_optimizer, augment=config.augment, source="autohas search",
                                   lr_stages=tuple(stages))


def plot_hyperparameters(records: list[dict[str, Any]], path: Any, title: str = "") -> Any:
    """The derived learning rate of every stage and the weight decay over the search steps (paper Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, (ax_lr, ax_wd) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    if records:
        for s in range(len(records[0]["lr_stages"])):
            ax_lr.plot(steps, [r["lr_stages"][s] for r in records], lw=1, label=f"stage {s + 1}")
        ax_lr.plot(steps, [r["lr"] for r in records], lw=2, color="black", alpha=0.4, label="lr used")
        ax_wd.plot(steps, [r["weight_decay"] for r in records], lw=1, color="tab:purple")
    ax_lr.set_ylabel("learning rate (eq. 10)")
    ax_wd.set_ylabel("weight decay (eq. 10)")
    ax_wd.set_xlabel("search step")
    ax_lr.legend(loc="upper right", fontsize=8)
    fig.suptitle(title or "AutoHAS hyper-parameters")
    fig.tight_layout()
    safewrite.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def search(ctx: SearchContext) -> SearchOutcome:
    """Run (or resume) the AutoHAS search of ``ctx``."""
    cfg, latency_model = ctx.config, ctx.latency_model
    torch.manual_seed(cfg.seed)
    net = SampledPathNet(ctx.train_space, latency_model.candidates, sharing=cfg.weight_sharing)
    encoding = HyperEncoding(hyperparameter_space(cfg))
    weight_data, arch_data = split_for_architecture(ctx.splits.train, cfg.seed)
    phase = AutoHASPhase(net=net, encoding=encoding, arch_data=arch_data, latency_model=latency_model, config=cfg,
                         **ctx.phase_kwargs("search", dataset=weight_data))
    phase.run_loop(phase.restore(ctx.checkpoint))
    derived = net.architecture()
    arch, repairs = derive_in_window(derived, latency_model, cfg.target_ms, net.score())
    hyperparameters = searched_hyperparameters(encoding, cfg)
    searched = {**hyperparameters.to_dict(), "bases": {n: list(s.bases) for n, s in encoding.specs.items()},
                "probabilities": {n: [encoding.probs(n, s).tolist() for s in range(spec.stages)]
                                  for n, spec in encoding.specs.items()}, "estimator": cfg.estimator}
    if ctx.engine.is_writer:
        ctx.run.write_json(HYPERPARAMETERS_JSON, searched)
        records = [r for r in ctx.run.records() if r.get("phase") == "search"]
        plot_hyperparameters(records, ctx.run.path(HYPERPARAMETERS_PNG),
                             f"AutoHAS ({cfg.estimator}) hyper-parameters, target {cfg.target_ms:g} ms")
    net.fix(arch)
    details = {"lambda_final": phase.state["lambda"], "search_steps": phase.total_steps,
               "searched_hyperparameters": hyperparameters.to_dict(), "estimator": cfg.estimator}
    return SearchOutcome(arch, extract_network(net, arch), phase.elapsed_s, hyperparameters, derived, repairs, details)
