"""DiffAutoML ("Differentiable Joint Optimization for Efficient End-to-End Automated Machine Learning", Algorithm 1;
equation numbers refer to ``../shared/papers/diffautoml.txt``): the augmentation policy tau, the architecture
alpha, the hyper-parameters eta and the weights theta learned together in one run, whose network is the
deliverable (no retraining: ``final_epochs`` defaults to 0 for this method).

One step, on a training batch (and, with the hyper-gradient, a batch of a held-out 20 % of the train split):

1. augmentation (Sec. 3.1, :mod:`~mobilekit.search.methods.augment_policy`): one transformation (two successive
   operations of :mod:`mobilekit.data.augment_ops`, magnitudes uniform in [0, 10]) per image, drawn from
   ``p(tau)`` by Gumbel-max, applied to the [0, 1] pixels on the training device, then normalised;
2. architecture (Sec. 3.2): one child drawn from ``softmax(alpha)`` per searchable layer (DSNAS-style, one path
   of a :class:`~mobilekit.search.supernets.SampledPathNet`); its layers' outputs are multiplied by gates ``Z^s``
   that are 1 in value and carry ``grad log p(Z)``, so the training loss back-propagates the eq. 5 estimator
   ``grad_alpha log p(Z) * dL/dZ^s`` into alpha (one level: the training loss, no validation split), plus the
   engine's latency penalty ``lambda log E[R]`` (:class:`~mobilekit.search.penalty.LatencyPenalty`) on
   ``softmax(alpha)``;
3. one backward pass of ``CE + lambda log E[R] + L_DA`` gives the weights' gradient, alpha's (eq. 5) and tau's
   (eq. 2, the per-image losses detached);
4. hyper-parameters (Sec. 3.3, :mod:`~mobilekit.search.methods.hypergradient`): the validation loss of the look-ahead
   weights ``theta^{t+1}(eta)`` (eq. 6, the very step the optimiser then takes) is differentiated w.r.t. eta
   (the weight decay, and with ``hyper_lr`` a factor on the learning rate) and eta takes an Adam step (eq. 7);
5. the weights take the optimiser step with this step's eta; alpha (search stage only) and tau take Adam steps.

Stages (Fig. 2): for the first ``search_share`` of the steps alpha learns (search stage); then the architecture
is fixed -- the argmax of alpha, moved into [0.9 T, T] by the engine's repair -- and the child keeps training with
tau and eta still learning (tuning stage). The network at the end of the tuning stage is the deliverable.

Ablation switches: ``augment_search`` off trains on the batches as they come (no searched augmentation);
``hypergradient`` off keeps the starting weight decay (:func:`start_weight_decay`, the same as the full method's
start, so that the variants differ in the switched component only) and ``--lr``'s schedule fixed and trains on
the whole train split (no validation batches); both off is DSNAS-style NAS with the latency penalty only.

The run folder gets ``augment_policy.json`` / ``augment_policy.png`` (the transformation probabilities: each
operation's over the run, the final top transformations) and ``hyperparameters.json`` / ``hyperparameters.png``
(the weight-decay trajectory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mobilekit import safewrite
from mobilekit.data.augment_ops import OPERATION_NAMES, check_names, denormalize, normalize
from mobilekit.errors import ConfigError
from mobilekit.latency.differentiable import ExpectedLatency
from mobilekit.models.torch_builder import Skeleton
from mobilekit.search.budget import Repair
from mobilekit.search.methods.augment_policy import ESTIMATORS, AugmentPolicy, policy_loss
from mobilekit.search.methods.hypergradient import (
    WEIGHT_DECAY_RANGE,
    LearnedHyperparameters,
    hypergradient,
    lookahead_validation_loss,
)
from mobilekit.search.options import option
from mobilekit.search.outcome import SearchOutcome, TrainingHyperparameters, arch_summary, derive_in_window
from mobilekit.search.penalty import LatencyPenalty
from mobilekit.search.supernets import PathView, SampledPathNet, extract_network, weight_sharing_option
from mobilekit.search.training import (
    Phase,
    SearchContext,
    batch_count,
    batches,
    load_batches,
    make_optimizer,
    split_for_architecture,
)
from mobilekit.space import Architecture

LATENCY_MODEL = "expected"
SUMMARY = "DiffAutoML: augmentation policy + architecture (DSNAS sampling) + weight decay, one run, no retraining"
FINAL_EPOCHS = 0                     # the search's own network is the deliverable unless --final-epochs says otherwise
POLICY_JSON = "augment_policy.json"
POLICY_PNG = "augment_policy.png"
HYPERPARAMETERS_JSON = "hyperparameters.json"
HYPERPARAMETERS_PNG = "hyperparameters.png"
VALIDATION_SHARE = 0.2               # of the train split held out for the hyper-gradient's validation batches
DEFAULT_WEIGHT_DECAY = 1e-4          # start of every variant unless --wd-init / --weight-decay say
THETA_OPTIMIZER, THETA_LR, THETA_BATCH = "sgd", 0.5, 1024   # theta: SGD, lr 0.5 at batch 1024 (Appendix A)
ARCH_MOMENTUM, ARCH_WEIGHT_DECAY = 0.9, 5e-4                # alpha: SGD, momentum 0.9, weight decay 5e-4
POLICY_MOMENTUM = 0.9                # tau: SGD with momentum 0.9 and weight decay 5e-4 (Appendix A)
POLICY_WEIGHT_DECAY = 5e-4
ETA_BETAS = (0.9, 0.9)               # Adam of log eta: a short second-moment memory (see hypergradient.py)


@dataclass
class Options:
    """DiffAutoML settings (recipe section ``[search.diffautoml]``)."""

    augment_search: bool = option(True, "learn the augmentation policy tau (Sec. 3.1, eq. 2); off: no searched "
                                        "augmentation (ablation)")
    hypergradient: bool = option(True, "learn the weight decay by the hyper-gradient of the validation loss (eq. 6-7) "
                                       "on a held-out fifth of the train split; off: --weight-decay stays fixed and "
                                       "the whole train split trains the weights (ablation)")
    hyper_lr: bool = option(False, "with the hyper-gradient, also learn a factor (0.1-10) on the learning rate")
    search_share: float = option(0.5, "share of the steps in the search stage (alpha learned); the rest is the "
                                      "tuning stage (architecture fixed, the rest still learning)", gt=0, le=1)
    arch_lr: float = option(0.01, "learning rate of the architecture logits alpha (SGD, momentum 0.9, weight decay "
                                  "5e-4 as in the paper's Appendix A; see docs/methods/diffautoml.md for the scale)",
                            gt=0)
    policy_lr: float = option(0.2, "learning rate of the policy logits tau (SGD, momentum 0.9, weight decay 5e-4 as "
                                   "in the paper's Appendix A; see docs/methods/diffautoml.md for the scale)", gt=0)
    policy_entropy: float = option(1.0, "entropy weight beta (nats) of the policy loss: the policy tends to "
                                        "p ~ exp(L / beta), so no transformation runs away; 0: none", ge=0)
    policy_estimator: str = option("score", "policy gradient: score (eq. 2 with the importance weight of the draw, "
                                            "unbiased for E_p[L]) or eq2 (as printed, which favours whichever "
                                            "transformation is ahead)", choices=ESTIMATORS)
    policy_baseline: bool = option(True, "subtract the batch's mean loss in the policy loss (lower variance; for "
                                         "eq2, only loss differences then move the policy)")
    eta_lr: float = option(0.05, "Adam learning rate (beta of eq. 7) of log weight decay / log lr factor", gt=0)
    wd_init: float | None = option(None, "weight decay at the start of every variant (the hyper-gradient's start; "
                                         "with --no-hypergradient it stays there); default: --weight-decay when "
                                         "positive, else 1e-4", ge=WEIGHT_DECAY_RANGE[0], le=WEIGHT_DECAY_RANGE[1])
    policy_ops: tuple[str, ...] = option(OPERATION_NAMES, "augmentation operations, comma-separated (the paper's "
                                                          "14 by default; its Appendix C also uses ShearX,ShearY,"
                                                          "TranslateX,TranslateY)")
    weight_sharing: str = weight_sharing_option()

    def __post_init__(self) -> None:
        names = self.policy_ops.replace(" ", "").split(",") if isinstance(self.policy_ops, str) else self.policy_ops
        try:
            self.policy_ops = check_names(tuple(names))
        except (ValueError, TypeError):
            raise ConfigError(f"policy_ops: {self.policy_ops!r} must be distinct operation names among "
                              f"{','.join(OPERATION_NAMES)}") from None


def common_defaults(given: Mapping[str, Any]) -> dict[str, Any]:
    """DiffAutoML's own defaults for the weights' optimiser (Appendix A) where the user gave none: SGD (momentum
    0.9, :data:`mobilekit.search.training.OPTIMIZERS`' "sgd"), cosine schedule, lr 0.5 at the paper's batch of
    1024 scaled linearly to ours (``0.5 * batch_size / 1024``: 0.031 at the default 64)."""
    batch = int(given.get("batch_size", 64))
    return {"optimizer": THETA_OPTIMIZER, "lr_schedule": "cosine", "lr": THETA_LR * batch / THETA_BATCH}


def start_weight_decay(config: Any) -> float:
    """The weight decay every variant starts from (so that the ablation switches change one component only):
    ``wd_init`` when given, else ``--weight-decay`` when positive, else :data:`DEFAULT_WEIGHT_DECAY`. With the
    hyper-gradient it is eta's start (eq. 7 works in log space, so it must be positive); without, the weight decay
    of the whole run."""
    options = config.method_options
    if options.wd_init is not None:
        return float(options.wd_init)
    return float(config.weight_decay) if config.weight_decay > 0 else DEFAULT_WEIGHT_DECAY


def _gated_forward(net: SampledPathNet, x: torch.Tensor, gates: torch.Tensor | None) -> torch.Tensor:
    """x (N, 3, R, R) -> logits of the active path, each searchable layer's output times ``gates[l]`` (L,)."""
    return Skeleton.forward(net, x, [(None if gates is None else gates[l],) for l in range(len(net.candidates))])


def log_prob_gates(logits: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Eq. 5's gates: (L,) ones whose gradient w.r.t. ``logits`` (L, C) is ``grad log p_l(chosen_l)``, so that
    back-propagating a loss through ``gate_l * O_l(x)`` gives alpha ``sum_l dL/dZ_l^s grad log p(Z_l)``."""
    log_p = F.log_softmax(logits, dim=-1).gather(-1, chosen.view(-1, 1)).squeeze(1)
    return 1 + log_p - log_p.detach()


class DiffAutoMLPhase(Phase):
    """The DiffAutoML loop (see the module docstring). State: ``lambda`` (latency controller), ``arch`` (the
    fixed architecture of the tuning stage, once reached), ``derived_arch``, ``repairs``. Records: stage, ce,
    val_ce, accuracy, runtime_ms, runtime_hard_ms, lambda, lr, weight_decay, operation_probs, arch, decisions."""

    def __init__(self, *, net: SampledPathNet, policy: AugmentPolicy, eta: LearnedHyperparameters,
                 val_data: Dataset | None, latency_model: ExpectedLatency, config: Any,
                 mean: tuple[float, ...], std: tuple[float, ...], **kwargs: Any) -> None:
        engine = kwargs.get("engine")
        if engine is not None:
            engine.place(net)
            policy.to(engine.device)
            eta.to(engine.device)
            latency_model.to(engine.device)
        options = config.method_options
        weight_decay = float(eta.weight_decay().detach()) if options.hypergradient else start_weight_decay(config)
        weights_opt = make_optimizer(config.optimizer, net.weight_parameters(), config.lr, weight_decay)
        arch_opt = torch.optim.SGD(net.architecture_parameters(), lr=options.arch_lr, momentum=ARCH_MOMENTUM,
                                   weight_decay=ARCH_WEIGHT_DECAY)
        policy_opt = torch.optim.SGD(policy.parameters(), lr=options.policy_lr, momentum=POLICY_MOMENTUM,
                                     weight_decay=POLICY_WEIGHT_DECAY)
        eta_opt = torch.optim.Adam(eta.learned(), lr=options.eta_lr, betas=ETA_BETAS)
        super().__init__(modules={"net": net, "policy": policy, "eta": eta},
                         optimizers={"weights": weights_opt, "arch": arch_opt, "policy": policy_opt, "eta": eta_opt},
                         state={"lambda": config.lambda_init, "arch": None, "derived_arch": None, "repairs": []},
                         **kwargs)
        self.schedule("weights", weights_opt, config.lr_schedule)
        self.net, self.policy, self.eta, self.val_data = net, policy, eta, val_data
        self.latency_model, self.config, self.options = latency_model, config, options
        self.mean, self.std = mean, std
        self.weights_opt, self.arch_opt, self.policy_opt, self.eta_opt = weights_opt, arch_opt, policy_opt, eta_opt
        self.penalty = LatencyPenalty.from_config(config, self.state)
        self._fixed: Architecture | None = None

    def monitor(self) -> dict[str, Any]:
        """TensorBoard's view besides the records: how decided alpha is (:meth:`Phase.monitor`), and with
        ``augment_search`` the policy: ``augment/op/NAME`` every operation's probability (first or second of a
        pair) and ``augment/top`` the five most likely transformations as text."""
        out = super().monitor()
        if self.options.augment_search:
            summary = policy_summary(self.policy, top=5)
            for name, p in summary["operation_probs"].items():
                out[f"augment/op/{name}"] = p
            out["augment/top"] = "  \n".join(f"{i + 1}. {' then '.join(t['transformation'])}: {t['probability']:.4f}"
                                              for i, t in enumerate(summary["top"]))
            out["augment/top1_probability"] = summary["top"][0]["probability"]
        return out

    @property
    def search_steps(self) -> int:
        """Steps of the search stage (alpha learned); the tuning stage takes the rest."""
        return max(1, min(self.total_steps, round(self.options.search_share * self.total_steps)))

    # ---- the fixed architecture of the tuning stage -------------------------------------------------------------
    def fix_architecture(self) -> Architecture:
        """The tuning stage's architecture: the argmax of alpha moved into [0.9 T, T] (decided once, kept in the
        phase state so a resumed run tunes the same one)."""
        if self.state["arch"] is None:
            derived = self.net.architecture()
            arch, repairs = derive_in_window(derived, self.latency_model, self.config.target_ms, self.net.score())
            self.state.update(arch=arch.to_string(), derived_arch=derived.to_string(),
                              repairs=[[r.position, r.before, r.after, r.latency_ms] for r in repairs])
        if self._fixed is None or self._fixed.to_string() != self.state["arch"]:
            self._fixed = Architecture.from_string(self.net.space, self.state["arch"])
        return self._fixed

    def validation_model(self) -> PathView:
        """The network the search would deliver now, as a path of the supernet (eval mode): the most likely path
        (argmax of alpha) in the search stage, the fixed architecture in the tuning stage."""
        if self.state["arch"] is not None:
            return PathView.of(self.net, self.fix_architecture())
        return PathView.most_likely(self.net)

    def repairs(self) -> list[Repair]:
        return [Repair(*r) for r in self.state["repairs"]]

    # ---- data -----------------------------------------------------------------------------------------------------
    def _val_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        per_pass = batch_count(self.val_data, self.batch_size)
        index = batches(self.val_data, self.batch_size, self.seed + 1, step // per_pass)[step % per_pass]
        x, y = next(iter(load_batches(self.val_data, [index], self.workers)))
        return self.engine.batch(x, y)

    def _augment(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share x (n, 3, R, R) (normalised) -> (augmented, normalised; the transformation of each
        image (n,)). The draws cover the global batch, so N processes draw what one would."""
        n, rank = x.shape[0], self.engine.rank
        chosen, magnitude, sign = self.policy.draw(n * self.engine.world_size, generator)
        rows = slice(rank * n, (rank + 1) * n)
        pixels = self.policy.apply(denormalize(x, self.mean, self.std), chosen[rows], magnitude[:, rows],
                                   sign[:, rows])
        return normalize(pixels, self.mean, self.std), chosen[rows]

    # ---- one step of Algorithm 1 ------------------------------------------------------------------------------------
    def step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        net, options = self.net, self.options
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step + 500_009)
        searching = step < self.search_steps
        net.train()
        # 1. augmentation: one transformation per image from p(tau) (Sec. 3.1)
        transformations = None
        if options.augment_search:
            x, transformations = self._augment(x, generator)
        # 2. the child: one candidate per layer from softmax(alpha), gates carrying grad log p (eq. 5)
        if searching:
            chosen = torch.multinomial(net.probs().detach().cpu(), 1, generator=generator).squeeze(1)
            net.fix(chosen.tolist())
            gates = log_prob_gates(net.logits(), chosen.to(net.alpha.device))
        else:
            net.fix(self.fix_architecture())
            gates = None
        # 3. one backward pass: CE -> theta and alpha (eq. 5), lambda log E[R] -> alpha, eq. 2 -> tau
        for opt in (self.weights_opt, self.arch_opt, self.policy_opt, self.eta_opt):
            opt.zero_grad(set_to_none=True)
        with self.engine.autocast():
            logits = _gated_forward(net, x, gates)
            sample_losses = F.cross_entropy(logits, y, reduction="none")
        ce = sample_losses.float().mean()
        loss = ce
        lam = self.state["lambda"]
        if searching:
            expected_ms = self.latency_model(net.probs())
            lam = self.penalty.steer(float(expected_ms.detach()))
            loss = loss + self.penalty(expected_ms, lam)
            runtime_ms = float(expected_ms.detach())
        else:
            runtime_ms = self.latency_model.lookup_ms(self._fixed)
        if transformations is not None:
            loss = loss + policy_loss(self.policy.logits, transformations, sample_losses, options.policy_baseline,
                                      options.policy_entropy, options.policy_estimator)
        stepped = [self.weights_opt] + ([self.arch_opt] if searching else []) + \
            ([self.policy_opt] if transformations is not None else [])
        self.engine.backward(loss, [*net.parameters(), *self.policy.parameters()], stepped)
        # 4. eta by the hyper-gradient of the validation loss through the look-ahead step (eq. 6-7)
        group = self.weights_opt.param_groups[0]
        scheduled_lr = group["lr"]
        lr_now, wd_now = scheduled_lr, group["weight_decay"]
        val_ce = None
        if options.hypergradient:
            named = [(n, p) for n, p in net.named_parameters() if p.grad is not None and n != "alpha"]
            names, params = [n for n, _ in named], [p for _, p in named]
            lr_t, wd_t = self.eta.lr(scheduled_lr), self.eta.weight_decay()
            vx, vy = self._val_batch(step)
            buffers = {n: b.clone() for n, b in net.named_buffers()}        # BN running statistics left alone
            with self.engine.autocast():
                val = lookahead_validation_loss(net, self.weights_opt, names, params, [p.grad for p in params],
                                                lr_t, wd_t, lambda out: F.cross_entropy(out.float(), vy), (vx,),
                                                buffers)
            for p, g in zip(self.eta.learned(), hypergradient(self.eta, val)):
                p.grad = g
            self.engine.average_gradients(self.eta.learned())
            val_ce = float(val.detach())
            lr_now, wd_now = float(lr_t.detach()), float(wd_t.detach())
            for g in self.weights_opt.param_groups:
                g["lr"], g["weight_decay"] = lr_now, wd_now
        # 5. the weights with this step's eta (eq. 6), alpha (search stage) and tau; then eta (eq. 7)
        self.engine.step(stepped)
        for g in self.weights_opt.param_groups:
            g["lr"] = scheduled_lr                                   # the schedule goes on from its own value
        if options.hypergradient:
            self.eta_opt.step()
            self.eta.clamp_()
        arch = net.architecture() if searching else self._fixed
        record = {
            "stage": "search" if searching else "tune", "ce": ce.item(), "val_ce": val_ce,
            "accuracy": float((logits.argmax(1) == y).float().mean()), "runtime_ms": runtime_ms,
            "runtime_hard_ms": self.latency_model.lookup_ms(arch), "lambda": lam, "lr": lr_now,
            "weight_decay": wd_now, "arch": arch.to_string(), "decisions": arch_summary(arch),
        }
        if options.augment_search:
            record["operation_probs"] = [round(v, 6) for v in self.policy.operation_probs().tolist()]
        if self.progress is not None:
            self.progress.set_postfix_str(f"{record['stage']} CE {record['ce']:.3f} R {runtime_ms:.1f}ms "
                                          f"wd {wd_now:.2g}")
        return record


# ---- run-folder records ---------------------------------------------------------------------------------------------
def policy_summary(policy: AugmentPolicy, top: int = 15) -> dict[str, Any]:
    """The learned policy as JSON: operations, every transformation's probability, the ``top`` most likely."""
    probs = policy.probs().detach().cpu()
    order = probs.argsort(descending=True).tolist()
    pairs = policy.transformations
    return {"operations": list(policy.names),
            "operation_probs": dict(zip(policy.names, policy.operation_probs().tolist())),
            "top": [{"transformation": list(pairs[i]), "probability": float(probs[i])} for i in order[:top]],
            "probabilities": {f"{a},{b}": float(p) for (a, b), p in zip(pairs, probs.tolist())},
            "uniform_probability": 1.0 / len(pairs)}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _stage_line(ax, records: list[dict[str, Any]]) -> None:
    tuned = [r["step"] for r in records if r.get("stage") == "tune"]
    if tuned:
        ax.axvline(tuned[0], color="black", lw=0.8, ls=":", label="tuning stage")


def plot_policy(records: list[dict[str, Any]], summary: dict[str, Any], path: Any, title: str = "") -> Any:
    """Each operation's probability over the steps (top) and the final most likely transformations (bottom)."""
    plt = _pyplot()
    fig, (ax_ops, ax_top) = plt.subplots(2, 1, figsize=(8, 8))
    steps = [r["step"] for r in records if "operation_probs" in r]
    names = summary["operations"]
    for k, name in enumerate(names):
        ax_ops.plot(steps, [r["operation_probs"][k] for r in records if "operation_probs" in r], lw=1, label=name)
    ax_ops.axhline(1 / len(names), color="gray", lw=0.6, ls="--")
    _stage_line(ax_ops, records)
    ax_ops.set_xlabel("step")
    ax_ops.set_ylabel("P(operation in the drawn transformation)")
    ax_ops.legend(fontsize=7, ncol=3, loc="upper left")
    top = summary["top"]
    labels = [" + ".join(t["transformation"]) for t in top][::-1]
    ax_top.barh(labels, [t["probability"] for t in top][::-1], color="tab:blue")
    ax_top.axvline(summary["uniform_probability"], color="gray", lw=0.6, ls="--", label="uniform")
    ax_top.set_xlabel("final probability of the transformation")
    ax_top.tick_params(axis="y", labelsize=7)
    ax_top.legend(fontsize=7)
    fig.suptitle(title or "DiffAutoML augmentation policy")
    fig.tight_layout()
    safewrite.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def plot_hyperparameters(records: list[dict[str, Any]], path: Any, title: str = "") -> Any:
    """The weight decay (top) and the learning rate (bottom) used at every step."""
    plt = _pyplot()
    steps = [r["step"] for r in records]
    fig, (ax_wd, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    ax_wd.plot(steps, [r["weight_decay"] for r in records], lw=1, color="tab:purple")
    ax_lr.plot(steps, [r["lr"] for r in records], lw=1, color="tab:blue")
    for ax in (ax_wd, ax_lr):
        _stage_line(ax, records)
    if records and min(r["weight_decay"] for r in records) > 0:
        ax_wd.set_yscale("log")
    ax_wd.set_ylabel("weight decay")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    fig.suptitle(title or "DiffAutoML hyper-parameters")
    fig.tight_layout()
    safewrite.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


# ---- the searcher ---------------------------------------------------------------------------------------------------
def search(ctx: SearchContext) -> SearchOutcome:
    """Run (or resume) DiffAutoML on ``ctx``: search stage, tuning stage; the tuned child is the outcome's model."""
    cfg, options, latency_model = ctx.config, ctx.options, ctx.latency_model
    torch.manual_seed(cfg.seed)
    net = SampledPathNet(ctx.train_space, latency_model.candidates, sharing=cfg.weight_sharing)
    policy = AugmentPolicy(options.policy_ops)
    eta = LearnedHyperparameters(start_weight_decay(cfg), learn_lr=options.hyper_lr and options.hypergradient)
    if options.hypergradient:
        weight_data, val_data = split_for_architecture(ctx.splits.train, cfg.seed, VALIDATION_SHARE)
    else:
        weight_data, val_data = ctx.splits.train, None
    phase = DiffAutoMLPhase(net=net, policy=policy, eta=eta, val_data=val_data, latency_model=latency_model,
                            config=cfg, mean=ctx.splits.mean, std=ctx.splits.std,
                            **ctx.phase_kwargs("search", dataset=weight_data))
    phase.run_loop(phase.restore(ctx.checkpoint))
    arch = phase.fix_architecture()                # decided at the stage boundary (or now, with no tuning stage)
    derived = Architecture.from_string(net.space, phase.state["derived_arch"])
    records = [r for r in ctx.run.records() if r.get("phase") == "search"] if ctx.engine.is_writer else []
    final_wd = float(eta.weight_decay().detach()) if options.hypergradient else start_weight_decay(cfg)
    lr_factor = float(eta.log_lr_factor.detach().exp()) if eta.learn_lr else 1.0
    hyperparameters = TrainingHyperparameters(lr=cfg.lr * lr_factor, lr_schedule=cfg.lr_schedule, weight_decay=final_wd,
                                              optimizer=cfg.optimizer, augment=cfg.augment,
                                              source="diffautoml search" if options.hypergradient else "settings")
    searched = {"weight_decay": final_wd,
                "lr_factor": lr_factor,
                "hypergradient": options.hypergradient, "hyper_lr": eta.learn_lr,
                "trajectory": {"step": [r["step"] for r in records],
                               "weight_decay": [r["weight_decay"] for r in records],
                               "lr": [r["lr"] for r in records]}}
    details: dict[str, Any] = {
        "lambda_final": phase.state["lambda"], "search_steps": phase.total_steps,
        "search_stage_steps": phase.search_steps, "tuning_stage_steps": phase.total_steps - phase.search_steps,
        "augment_search": options.augment_search, "hypergradient": options.hypergradient,
        "searched_weight_decay": searched["weight_decay"]}
    if options.augment_search:
        learned = policy_summary(policy)
        details["augment_policy_top"] = [" + ".join(t["transformation"]) for t in learned["top"][:5]]
    if ctx.engine.is_writer:
        ctx.run.write_json(HYPERPARAMETERS_JSON, searched)
        title = f"DiffAutoML, target {cfg.target_ms:g} ms"
        plot_hyperparameters(records, ctx.run.path(HYPERPARAMETERS_PNG), f"{title}: hyper-parameters per step")
        if options.augment_search:
            ctx.run.write_json(POLICY_JSON, learned)
            plot_policy(records, learned, ctx.run.path(POLICY_PNG), f"{title}: augmentation policy")
    net.fix(arch)
    return SearchOutcome(arch, extract_network(net, arch), phase.elapsed_s, hyperparameters, derived,
                         phase.repairs(), details)
