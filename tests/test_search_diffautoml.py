"""DiffAutoML (mobilekit/search/methods/diffautoml.py; equation numbers refer to ../shared/papers/diffautoml.txt): the
policy loss (eq. 2), the architecture gradient estimator (eq. 5), the look-ahead step and the hyper-gradient
(eq. 6-7), then `--method diffautoml` end to end through the CLI: no retraining, the run-folder records, the
ablation switches, resume."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilekit.cli import main
from mobilekit.latency.differentiable import ExpectedLatency
from mobilekit.latency_table import LatencyTable
from mobilekit.search.methods.augment_policy import AugmentPolicy, policy_loss
from mobilekit.search.methods import diffautoml
from mobilekit.search.methods.diffautoml import _gated_forward, log_prob_gates
from mobilekit.search.methods.hypergradient import LearnedHyperparameters, hypergradient, lookahead_validation_loss
from mobilekit.search.supernets import SampledPathNet
from mobilekit.search.temporary_weights import lookahead_step
from mobilekit.search.training import make_optimizer
from mobilekit.space import get_space


# ---- eq. 2: the augmentation policy -----------------------------------------------------------------------------------
def test_eq_2_gradients_of_both_estimators_and_the_entropy_term():
    policy = AugmentPolicy(("Identity", "Rotate"))
    with torch.no_grad():
        policy.logits.copy_(torch.tensor([0.3, -0.2, 0.1, 0.5]))
    chosen, losses = torch.tensor([0, 3, 3, 1]), torch.tensor([0.5, 2.0, 1.0, 0.7])
    p = F.softmax(policy.logits.detach(), -1)
    jacobian = torch.diag(p) - torch.outer(p, p)          # d p_i / d tau_j; d log p_i / d tau_j = jacobian[i] / p_i
    entropy_grad = -(jacobian @ (torch.log(p) + 1))       # d H / d tau
    for baseline, centred in ((False, losses), (True, losses - losses.mean())):
        for estimator, weight in (("eq2", torch.ones(4)), ("score", 1 / p[chosen])):   # per image
            policy.logits.grad = None
            policy_loss(policy.logits, chosen, losses, baseline, 0.3, estimator).backward()
            expected = -sum(l * w * jacobian[c] for c, l, w in zip(chosen.tolist(), centred.tolist(),
                                                                       weight.tolist())) / 4
            expected = expected - 0.3 * entropy_grad
            assert torch.allclose(policy.logits.grad, expected, atol=1e-6)


def test_eq_2_a_transformation_with_higher_training_loss_gains_probability():
    for estimator in ("score", "eq2"):
        policy = AugmentPolicy(("Identity", "Rotate"))                 # 4 transformations, uniform at the start
        chosen = torch.tensor([0, 0, 3, 3])                           # as many images of each
        losses = torch.tensor([0.2, 0.4, 1.5, 1.9])                   # transformation 3 gives the harder images
        opt = torch.optim.SGD(policy.parameters(), lr=1.0)
        policy_loss(policy.logits, chosen, losses, estimator=estimator).backward()
        opt.step()
        p = policy.probs().detach()
        assert p[3] > 0.25 > p[0] and p[1] == pytest.approx(p[2])     # the untouched ones stay level


HARD = torch.arange(0, 196, 20)[:10]          # 10 of the 196 transformations add +1 nat to the training loss


def _policy_after(steps, opt_of, **loss_kwargs):
    """The policy after ``steps`` steps of 64 images, losses 2 (+1 for the HARD transformations) + N(0, 0.5)."""
    torch.manual_seed(0)
    policy = AugmentPolicy()
    opt = opt_of(policy.parameters())
    gen = torch.Generator().manual_seed(1)
    extra = torch.zeros(196)
    extra[HARD] = 1.0
    for _ in range(steps):
        chosen = policy.sample(64, gen)
        opt.zero_grad()
        policy_loss(policy.logits, chosen, 2 + extra[chosen] + 0.5 * torch.randn(64, generator=gen),
                    **loss_kwargs).backward()
        opt.step()
    return policy.probs().detach()


def _old_default(params):
    return torch.optim.Adam(params, lr=0.05)


def _default(params):
    return torch.optim.SGD(params, lr=diffautoml.Options().policy_lr, momentum=diffautoml.POLICY_MOMENTUM,
                           weight_decay=diffautoml.POLICY_WEIGHT_DECAY)


def test_eq_2_as_printed_with_adam_collapses_onto_one_hard_pair():
    """The issue's reproduction: the former defaults (eq. 2 as printed, Adam 0.05, baseline) put 99 % of the mass
    on the 10 hard transformations after 300 steps, almost all of it on one of them."""
    p = _policy_after(300, _old_default, estimator="eq2")
    assert p[HARD].sum() > 0.95 and p.max() > 0.9


def test_the_default_policy_learns_the_hard_transformations_but_cannot_collapse():
    """At the defaults (score estimator, entropy 1 nat, SGD momentum 0.9, weight decay 5e-4) the policy tends to
    p ~ exp(L): the hard ones each get e / (186 + 10 e) = 1.27 % (uniform: 0.51 %), 12.7 % together."""
    options = diffautoml.Options()
    p = _policy_after(300, _default, entropy=options.policy_entropy, estimator=options.policy_estimator)
    assert p.max() < 0.025                                          # no pair above 2.5 % (collapse: 97 %)
    assert 0.09 < p[HARD].sum() < 0.16                              # the Gibbs share, 12.7 %, within noise
    easy = torch.ones(196, dtype=torch.bool)
    easy[HARD] = False
    assert p[HARD].min() > p[easy].max() * 0.9 and p[HARD].mean() > 2 * p[easy].mean()   # the hard ones favoured


def test_without_loss_differences_the_default_policy_stays_near_uniform():
    options = diffautoml.Options()
    torch.manual_seed(0)
    policy = AugmentPolicy()
    opt = _default(policy.parameters())
    gen = torch.Generator().manual_seed(3)
    for _ in range(300):
        chosen = policy.sample(64, gen)
        opt.zero_grad()
        policy_loss(policy.logits, chosen, 2 + 0.5 * torch.randn(64, generator=gen),
                    entropy=options.policy_entropy).backward()
        opt.step()
    assert policy.probs().max() < 2.5 / 196


def test_the_paper_s_own_learning_rate_freezes_the_policy():
    """Appendix A's SGD lr 1e-5 on eq. 2 summed over a batch is 1e-5 * 64 on our mean: nothing moves (why the
    default learning rate is larger; the entropy term is what keeps it from collapsing)."""
    p = _policy_after(300, lambda ps: torch.optim.SGD(ps, lr=64e-5, momentum=0.9, weight_decay=5e-4),
                      estimator="eq2")
    assert abs(float(p[HARD].sum()) - 10 / 196) < 1e-3


def test_transformations_are_drawn_from_the_policy():
    policy = AugmentPolicy(("Identity", "Rotate"))
    with torch.no_grad():
        policy.logits.copy_(torch.tensor([1.0, 0.0, -1.0, 0.5]))
    drawn = policy.sample(20000, torch.Generator().manual_seed(0))
    frequency = torch.bincount(drawn, minlength=4).float() / 20000
    # binomial standard error at n = 20000 is <= 0.0036; 4 of them
    assert torch.allclose(frequency, policy.probs().detach(), atol=4 * 0.0036)


def test_a_transformation_applies_its_two_operations_in_order():
    policy = AugmentPolicy(("Identity", "Solarize", "Brightness"))
    x = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    chosen = torch.tensor([0, 5, 7])        # Identity+Identity, Solarize+Brightness, Brightness+Solarize
    magnitude, sign = torch.tensor([[3.0, 10.0, 0.0], [8.0, 0.0, 10.0]]), torch.ones(2, 3)
    out = policy.apply(x, chosen, magnitude, sign)
    assert torch.equal(out[0], x[0])
    assert torch.allclose(out[1], (1 - x[1]) * 0.1)                              # solarize all, then darken
    assert torch.allclose(out[2], 1 - (x[2] * 0.1))                              # darken, then solarize all


# ---- eq. 5: the architecture gradient -----------------------------------------------------------------------------------
def test_eq_5_gates_give_alpha_the_log_probability_gradient_times_dl_dz():
    logits = torch.tensor([[0.2, -0.4, 0.9], [0.0, 0.5, -0.1]], requires_grad=True)
    chosen = torch.tensor([2, 0])
    outputs = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]])                # O_l of each candidate
    w = torch.tensor([0.7, -1.3])                                                  # the rest of the network
    gates = log_prob_gates(logits, chosen)
    assert torch.equal(gates.detach(), torch.ones(2))                              # Z^s = 1 in the forward pass
    z = gates.detach().clone().requires_grad_(True)
    loss_of = lambda g: (w * g * outputs[torch.arange(2), chosen]).sum() ** 2   # noqa: E731 - nonlinear in Z
    loss_of(gates).backward()
    dl_dz = torch.autograd.grad(loss_of(z), z)[0]
    p = F.softmax(logits.detach(), -1)
    expected = dl_dz[:, None] * (F.one_hot(chosen, 3) - p)                        # grad log p(Z_l) dL/dZ_l^s
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_eq_5_is_unbiased_for_a_loss_linear_in_z_and_descent_favours_the_cheaper_candidate():
    logits = torch.tensor([[0.3, -0.2, 0.1]], requires_grad=True)
    cost = torch.tensor([2.0, 0.5, 1.0])                                           # dL/dZ^s of each candidate
    expected_grad = torch.zeros(1, 3)
    p = F.softmax(logits.detach(), -1)[0]
    for s in range(3):                                                             # E_Z over every sample
        logits.grad = None
        gates = log_prob_gates(logits, torch.tensor([s]))
        (gates * cost[s]).sum().backward()
        expected_grad += p[s] * logits.grad
    exact = torch.autograd.grad((F.softmax(logits, -1)[0] * cost).sum(), logits)[0]   # grad of E_Z[L]
    assert torch.allclose(expected_grad, exact, atol=1e-6)
    assert int((-expected_grad).argmax()) == 1           # descent raises the lowest-loss candidate's logit most


@pytest.fixture(scope="module")
def small_net(table_path):
    latency = ExpectedLatency(LatencyTable.load(table_path))
    space = get_space(latency.space.name, width=latency.space.width, resolution=32, num_classes=4)
    torch.manual_seed(0)
    return SampledPathNet(space, latency.candidates)


def test_eq_5_through_a_sampled_path_network(small_net):
    net = small_net
    with torch.no_grad():
        net.alpha.normal_()
    chosen = torch.multinomial(net.probs().detach(), 1, generator=torch.Generator().manual_seed(2)).squeeze(1)
    net.fix(chosen.tolist())
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    net.zero_grad(set_to_none=True)
    torch.manual_seed(5)                                                           # the same dropout mask twice
    F.cross_entropy(_gated_forward(net, x, log_prob_gates(net.logits(), chosen)), y).backward()
    z = torch.ones(len(chosen), requires_grad=True)
    torch.manual_seed(5)
    dl_dz = torch.autograd.grad(F.cross_entropy(_gated_forward(net, x, z), y), z)[0]
    p = net.probs().detach()
    expected = dl_dz[:, None] * (F.one_hot(chosen, p.shape[1]) - p) * net.mask    # padded columns get nothing
    assert torch.allclose(net.alpha.grad, expected, atol=1e-5)


# ---- eq. 6-7: look-ahead step and hyper-gradient ----------------------------------------------------------------------
def _tiny_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    vx, vy = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    return model, x, y, vx, vy


def _warm_optimizer(model, name, x, y):
    """The optimiser after one real step (so momentum / Adam moments are not empty), and fresh training grads."""
    opt = make_optimizer(name, model.parameters(), lr=0.05, weight_decay=0.01)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if _ == 0:
            opt.step()
    return opt


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_eq_6_the_look_ahead_step_is_the_step_the_optimizer_takes(name):
    model, x, y, _, _ = _tiny_problem()
    opt = _warm_optimizer(model, name, x, y)
    params = list(model.parameters())
    ahead = lookahead_step(opt, params, [p.grad for p in params], 0.03, 0.002)
    for group in opt.param_groups:
        group["lr"], group["weight_decay"] = 0.03, 0.002
    opt.step()
    for new, p in zip(ahead, params):
        assert torch.allclose(new, p.detach(), atol=1e-12)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_eq_7_hypergradient_matches_a_finite_difference_of_the_validation_loss(name):
    model, x, y, vx, vy = _tiny_problem()
    opt = _warm_optimizer(model, name, x, y)
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    grads = [p.grad.clone() for p in params]
    eta = LearnedHyperparameters(0.003, learn_lr=True).double()
    val = lookahead_validation_loss(model, opt, names, params, grads, eta.lr(0.05), eta.weight_decay(),
                                    lambda out: F.cross_entropy(out, vy), (vx,))
    d_log_wd, d_log_lr = hypergradient(eta, val)

    def val_after_real_step(lr, wd):       # eq. 6 by the optimiser itself, on copies
        m, o = copy.deepcopy((model, opt))
        for p, g in zip(m.parameters(), grads):
            p.grad = g.clone()
        for group in o.param_groups:
            group["lr"], group["weight_decay"] = lr, wd
        o.step()
        return F.cross_entropy(m(vx), vy).item()

    h, wd, lr = 1e-4, 0.003, 0.05
    fd_wd = (val_after_real_step(lr, wd * (1 + h)) - val_after_real_step(lr, wd * (1 - h))) / (2 * h)
    fd_lr = (val_after_real_step(lr * (1 + h), wd) - val_after_real_step(lr * (1 - h), wd)) / (2 * h)
    assert float(d_log_wd) == pytest.approx(fd_wd, rel=1e-4, abs=1e-10)     # d/d log wd = wd d/d wd
    assert float(d_log_lr) == pytest.approx(fd_lr, rel=1e-4, abs=1e-10)
    assert abs(fd_wd) > 1e-8                                                  # a real signal, not two zeros
    assert all(p.grad is not None and torch.equal(p.grad, g) for p, g in zip(params, grads))   # untouched


def _eta_after(steps, noise, true_scale, wd_start, n_train):
    """Weight decay after ``steps`` DiffAutoML steps on a linear regression y = x w* + noise (40 inputs): the
    weights take the default optimiser's step (SGD, momentum 0.9) with eta's weight decay, eta the hyper-gradient
    of the validation loss through that step (eq. 6-7) with the searcher's Adam (``eta_lr``, ``ETA_BETAS``)."""
    gen = torch.Generator().manual_seed(0)
    w_true = true_scale * torch.randn(40, 1, generator=gen)
    def data(n):
        x = torch.randn(n, 40, generator=gen)
        return x, x @ w_true + noise * torch.randn(n, 1, generator=gen)
    (x, y), (vx, vy) = data(n_train), data(256)
    torch.manual_seed(0)
    model = nn.Linear(40, 1, bias=False)
    eta = LearnedHyperparameters(wd_start)
    weights_opt = make_optimizer(diffautoml.THETA_OPTIMIZER, model.parameters(), 0.02, wd_start)
    eta_opt = torch.optim.Adam(eta.learned(), lr=diffautoml.Options().eta_lr, betas=diffautoml.ETA_BETAS)
    names, params = [n for n, _ in model.named_parameters()], list(model.parameters())
    for _ in range(steps):
        weights_opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        val = lookahead_validation_loss(model, weights_opt, names, params, [p.grad for p in params], 0.02,
                                        eta.weight_decay(), lambda out: F.mse_loss(out, vy), (vx,))
        eta_opt.zero_grad()
        for p, g in zip(eta.learned(), hypergradient(eta, val)):
            p.grad = g
        for group in weights_opt.param_groups:
            group["weight_decay"] = float(eta.weight_decay().detach())
        weights_opt.step()
        eta_opt.step()
        eta.clamp_()
    return float(eta.weight_decay().detach())


def test_eta_moves_up_where_a_larger_weight_decay_lowers_the_validation_loss():
    """20 noisy training points for 40 weights, a small true signal: fitting the noise hurts, decay helps."""
    assert _eta_after(150, noise=1.0, true_scale=0.05, wd_start=1e-4, n_train=20) > 10 * 1e-4


def test_eta_moves_down_where_a_smaller_weight_decay_lowers_the_validation_loss():
    """Plenty of clean training points, a large true signal: decay only pulls the weights off the answer."""
    assert _eta_after(150, noise=0.0, true_scale=1.0, wd_start=1e-2, n_train=400) < 0.2 * 1e-2


# ---- end to end ---------------------------------------------------------------------------------------------------------
QUICK = ["--data", "digits", "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "16", "--threads", "1",
         "--no-progress", "--train-resolution", "32"]


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _args(out, table_path, target, *extra):
    return ["search", "--method", "diffautoml", "--table", str(table_path), "--target-ms", str(target), "--out",
            str(out), "--export", "none", *QUICK, *extra]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, table_path, target):
    """One uninterrupted run, checkpointed every step (the end-to-end checks and the resume reference)."""
    out = tmp_path_factory.mktemp("diffautoml") / "straight"
    return out, main(_args(out, table_path, target, "--checkpoint-every", "1"))


def test_diffautoml_runs_end_to_end_without_retraining_and_records_what_it_learned(straight):
    out, code = straight
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "diffautoml" and summary["within_window"]
    assert summary["final_epochs"] == 0 and summary["final_hyperparameters"] is None and summary["final_train_s"] == 0
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    records = _records(out)
    assert {r["phase"] for r in records} == {"search"}                              # nothing retrained
    assert [r["stage"] for r in records] == ["search", "search", "tune", "tune"]
    assert {r["arch"] for r in records if r["stage"] == "tune"} == {summary["arch"]}  # the delivered one
    assert summary["search_stage_steps"] == 2 and summary["tuning_stage_steps"] == 2
    policy = json.loads((out / "augment_policy.json").read_text())
    assert len(policy["operations"]) == 14 and len(policy["probabilities"]) == 196
    assert sum(policy["operation_probs"].values()) == pytest.approx(1.0)
    assert all(len(r["operation_probs"]) == 14 for r in records)
    hyper = json.loads((out / "hyperparameters.json").read_text())
    assert hyper["trajectory"]["weight_decay"] == [r["weight_decay"] for r in records]
    assert hyper["trajectory"]["weight_decay"][0] == pytest.approx(1e-4)             # --wd-init
    assert len(set(hyper["trajectory"]["weight_decay"])) > 1                          # eq. 7 moved it
    assert all(r["val_ce"] is not None for r in records)
    for name in ("augment_policy.png", "hyperparameters.png", "search.png", "weights.pt"):
        assert (out / name).stat().st_size > 0


def test_alpha_moves_to_cheaper_candidates_under_a_latency_penalty_and_to_dearer_ones_under_a_reward(tmp_path,
                                                                                                     table_path, target):
    """The full method end to end with a fixed lambda (no steering) large enough to outweigh the eq. 5 term:
    the expected latency of softmax(alpha) falls at every step with lambda = +50 and rises with -50, from the
    same start (measured 64.15 -> 63.40 ms and -> 64.77 ms in 4 steps)."""
    latency = {}
    for lam in (50, -50):
        out = tmp_path / f"lambda{lam}"
        assert main(_args(out, table_path, target, "--epochs", "1", "--steps-per-epoch", "4", "--batch-size", "8",
                          "--lambda", str(lam), "--lambda-lr", "0", "--lambda-p", "0", "--search-share", "1",
                          "--arch-lr", "0.05")) == 0
        records = _records(out)
        assert [r["stage"] for r in records] == ["search"] * 4 and {r["lambda"] for r in records} == {lam}
        latency[lam] = [r["runtime_ms"] for r in records]
    down, up = latency[50], latency[-50]
    assert down[0] == pytest.approx(up[0])
    assert all(b < a for a, b in zip(down, down[1:])) and all(b > a for a, b in zip(up, up[1:])), (down, up)
    assert down[0] - down[-1] > 0.3 and up[-1] - up[0] > 0.3


def test_both_switches_off_is_nas_only_at_the_given_weight_decay(tmp_path, table_path, target):
    out = tmp_path / "run"
    code = main(_args(out, table_path, target, "--no-augment-search", "--no-hypergradient", "--weight-decay", "0.0005",
                      "--search-share", "1"))
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["within_window"] and not summary["augment_search"] and not summary["hypergradient"]
    records = _records(out)
    assert [r["stage"] for r in records] == ["search"] * 4
    assert all(r["weight_decay"] == 0.0005 and r["val_ce"] is None and "operation_probs" not in r for r in records)
    assert not (out / "augment_policy.json").exists()


def test_every_ablation_variant_starts_from_the_same_weight_decay(table_path, target):
    from mobilekit.search import make_config

    def start(**keys):
        config = make_config(None, method="diffautoml", table=str(table_path), target_ms=target, out="unused",
                             **keys)
        return diffautoml.start_weight_decay(config)

    variants = ({}, {"augment_search": False}, {"hypergradient": False},
                {"augment_search": False, "hypergradient": False})
    assert {start(**v) for v in variants} == {diffautoml.DEFAULT_WEIGHT_DECAY}
    assert {start(weight_decay=5e-4, **v) for v in variants} == {5e-4}
    assert {start(weight_decay=5e-4, wd_init=2e-3, **v) for v in variants} == {2e-3}


def test_a_final_training_when_asked_uses_the_learned_weight_decay_and_lr_factor(tmp_path, table_path, target):
    out = tmp_path / "run"
    code = main(_args(out, table_path, target, "--epochs", "1", "--final-epochs", "1", "--hyper-lr",
                      "--policy-ops", "ShearX,ShearY,TranslateX,TranslateY"))
    assert code == 0
    learned = json.loads((out / "hyperparameters.json").read_text())
    final = json.loads((out / "summary.json").read_text())["final_hyperparameters"]
    assert learned["lr_factor"] != 1.0 and final["source"] == "diffautoml search"
    assert final["lr"] == pytest.approx(0.5 * 16 / 1024 * learned["lr_factor"])       # Appendix A, scaled
    assert final["weight_decay"] == learned["weight_decay"]
    assert len(json.loads((out / "augment_policy.json").read_text())["probabilities"]) == 16      # 4 x 4 pairs
    assert [r["phase"] for r in _records(out)] == ["search", "search", "final", "final"]


def test_an_interrupted_diffautoml_run_resumes_to_the_same_result(tmp_path, table_path, target, straight,
                                                                  monkeypatch):
    import mobilekit.search

    def args(out):
        return _args(out, table_path, target, "--checkpoint-every", "1")

    reference, code = straight
    assert code == 0
    real = mobilekit.search.run_search

    def interrupted(config, **kwargs):
        def stop(record):
            if record["step"] == 2:                 # the first tuning step: the fixed architecture is in the state
                raise KeyboardInterrupt
        return real(config, **kwargs, on_step=stop)

    monkeypatch.setattr(mobilekit.search, "run_search", interrupted)
    assert main(args(tmp_path / "resumed")) == 130
    monkeypatch.setattr(mobilekit.search, "run_search", real)
    assert main(args(tmp_path / "resumed") + ["--resume"]) == 0
    for name in ("augment_policy.json", "hyperparameters.json"):
        assert json.loads((tmp_path / "resumed" / name).read_text()) == json.loads((reference / name).read_text())
    summaries = [json.loads((d / "summary.json").read_text()) for d in (reference, tmp_path / "resumed")]
    assert summaries[0]["arch"] == summaries[1]["arch"]
    assert summaries[0]["test_accuracy"] == summaries[1]["test_accuracy"]
    assert [r["step"] for r in _records(tmp_path / "resumed")] == [0, 1, 2, 3]


def test_an_unknown_policy_operation_is_one_line_exit_2(tmp_path, table_path, target, capsys):
    code = main(_args(tmp_path / "run", table_path, target, "--policy-ops", "Rotate,Blur"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "policy_ops" in err and "ShearX" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
