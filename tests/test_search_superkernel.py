"""The single-path superkernel: threshold decisions, equivalence with the derived network, gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from _synthetic_tables import synthetic_table
from mobilekit.latency.differentiable import SuperkernelLatency
from mobilekit.search.superkernel import SuperNet, extract_subnet
from mobilekit.space import SKIP, LayerType, get_space

WIDTH = 0.35


@pytest.fixture(scope="module")
def latency_model():
    return SuperkernelLatency(synthetic_table(width=WIDTH))


def make_net(latency_model, seed=0, relax="sigmoid"):
    torch.manual_seed(seed)
    return SuperNet(get_space(width=WIDTH, resolution=32, num_classes=10), latency_model.grid, relax=relax)


def test_fresh_thresholds_choose_the_largest_type_everywhere(latency_model):
    arch = make_net(latency_model).architecture()
    assert set(arch.searchable_choices) == {LayerType(5, 6, 0.5)}


def test_thresholds_decode_to_the_architecture(latency_model):
    net = make_net(latency_model)
    layers = net.layers
    with torch.no_grad():
        layers[2].t_keep.fill_(5.0)                       # skip
        layers[5].t_kernel.fill_(5.0)                     # 3x3
        layers[6].t_expand.fill_(5.0)                     # e3
        layers[7].t_se[1] = 5.0                           # SE 0.25 (0.5 off)
        layers[9].t_se[0] = 5.0                           # no SE
        layers[9].t_kernel.fill_(5.0)
        layers[9].t_expand.fill_(5.0)
    choices = net.architecture().choices
    assert choices[2] == SKIP
    assert choices[5] == LayerType(3, 6, 0.5)
    assert choices[6] == LayerType(5, 3, 0.5)
    assert choices[7] == LayerType(5, 6, 0.25)
    assert choices[9] == LayerType(3, 3, 0.0)
    assert choices[10] == LayerType(5, 6, 0.5)


def test_supernet_at_hard_decisions_computes_the_derived_network(latency_model):
    net = make_net(latency_model, seed=1)
    with torch.no_grad():
        for t in net.threshold_parameters():
            t.uniform_(0.6, 1.4)                          # a mix of on and off decisions
    net.eval()
    arch = net.architecture()
    assert len(set(arch.searchable_choices)) > 3
    model = extract_subnet(net).eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(net(x), model(x), atol=1e-5)


def test_runtime_of_the_supernet_decisions_is_the_lookup_of_its_architecture(latency_model):
    net = make_net(latency_model, seed=2)
    with torch.no_grad():
        for t in net.threshold_parameters():
            t.uniform_(0.6, 1.4)
    _, inds, _ = net.decide()
    arch = net.architecture()
    assert latency_model(inds).item() == pytest.approx(latency_model.table.lookup_ms(arch.with_space(latency_model.space)), rel=1e-9)


@pytest.mark.parametrize("relax", ["sigmoid", "ste", "softmax"])
def test_gradients_of_the_loss_reach_every_threshold(latency_model, relax):
    net = make_net(latency_model, relax=relax)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    logits, inds = net.forward_with_decisions(x)
    loss = F.cross_entropy(logits, y) + 0.5 * torch.log(latency_model(inds))
    loss.backward()
    thresholds = [t for t in net.threshold_parameters() if t.numel()]
    searchable = net.space.searchable_positions          # t_k5, t_e6, t_se0.25, t_se0.5 (+ t_e3 where skip)
    assert sum(t.numel() for t in thresholds) == sum(4 + (SKIP in p.candidates) for p in searchable)
    for t in thresholds:
        assert t.grad is not None and torch.isfinite(t.grad).all() and (t.grad != 0).all()


def test_runtime_term_alone_pushes_every_threshold_up(latency_model):
    net = make_net(latency_model)
    _, inds, _ = net.decide()
    torch.log(latency_model(inds)).backward()
    for t in (t for t in net.threshold_parameters() if t.numel()):
        assert (t.grad < 0).all()                        # gradient descent raises t: fewer channels, lower R


def test_subset_dropout_changes_outputs_only_in_training(latency_model):
    net = make_net(latency_model)
    net.subset_dropout = 0.5
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    torch.manual_seed(0)
    a = net(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, net(x))


@pytest.mark.parametrize("mode", ["global", "per-decision"])
def test_threshold_gradient_normalisation_keeps_or_equalises_the_kinds(latency_model, mode):
    """global: one RMS for every threshold gradient (their relative sizes kept); per-decision: one RMS per kind
    of decision, so each kind's normalised gradients have RMS 1 whatever its latency saving."""
    from types import SimpleNamespace

    from mobilekit.search.methods.single_path import DECISION_KINDS, SinglePathPhase

    net = make_net(latency_model)
    kinds = {kind: [p for n, p in net.named_parameters() if n.rsplit(".", 1)[-1] == f"t_{kind}" and p.numel()]
             for kind in DECISION_KINDS}
    scale = {"keep": 2.0, "kernel": 0.1, "expand": 1.0, "se": 0.5}
    for kind, params in kinds.items():
        for p in params:
            p.grad = torch.full_like(p, scale[kind])
    phase = SimpleNamespace(state={"grad_sq": 0.0, "grad_steps": 0}, config=SimpleNamespace(threshold_normalization=mode),
                            thresholds=[p for ps in kinds.values() for p in ps], threshold_kinds=kinds,
                            GRAD_BETA=SinglePathPhase.GRAD_BETA)
    phase._normalize_group = lambda key, grads: SinglePathPhase._normalize_group(phase, key, grads)
    SinglePathPhase._normalize_threshold_grads(phase)
    rms = {kind: float(torch.cat([p.grad.flatten() for p in ps]).pow(2).mean().sqrt()) for kind, ps in kinds.items() if ps}
    assert {"keep", "kernel", "expand"} <= set(rms)
    if mode == "global":
        assert rms["kernel"] / rms["expand"] == pytest.approx(0.1) and rms["keep"] / rms["expand"] == pytest.approx(2.0)
    else:
        assert all(value == pytest.approx(1.0) for value in rms.values())


def _own_thresholds(layer, layer_type, value):
    """Raise only the thresholds that ``layer_type`` turns off (from the largest type) to ``value``."""
    g = layer.grid
    with torch.no_grad():
        if layer_type.is_skip:
            layer.t_keep.fill_(value)
            return
        layer.t_kernel[g.kernels.index(layer_type.kernel):] = value
        layer.t_expand[g.expansions.index(layer_type.expansion):] = value
        layer.t_se[g.se_ratios.index(layer_type.se_ratio):] = value


@pytest.mark.parametrize("with_se", [True, False])
def test_every_type_is_reachable_by_its_own_thresholds_at_the_search_defaults(with_se):
    """Issue 19: with the search's own threshold_init, raising only a type's own thresholds (by less than
    threshold_reach above the statistic) derives exactly that type: k3_e6 from k5_e6 by the kernel threshold
    alone, not a skip (the old keep/expand statistics, referenced with every ring on, fell to ~0.37)."""
    from mobilekit.search.methods.single_path import Options

    opts = Options()
    latency_model = SuperkernelLatency(synthetic_table(width=WIDTH, with_se=with_se))   # no SE: the Pixel 1 grid
    torch.manual_seed(0)
    space = get_space(width=WIDTH, resolution=32, num_classes=10)
    raised = 1.0 + opts.threshold_reach / 2                    # statistics start at 1
    layers = SuperNet(space, latency_model.grid, threshold_init=opts.threshold_init).superkernels
    g = latency_model.grid
    candidates = [[t for t in layer.position.candidates if t.is_skip or
                   (t.kernel in g.kernels and t.expansion in g.expansions and t.se_ratio in g.se_ratios)]
                  for layer in layers]
    for r in range(max(len(c) for c in candidates)):
        net = SuperNet(space, latency_model.grid, threshold_init=opts.threshold_init)
        wanted = {}
        for layer, cands in zip(net.superkernels, candidates):
            if r < len(cands):
                wanted[layer.position.index] = cands[r]
                _own_thresholds(layer, cands[r], raised)
        choices = net.architecture().choices
        for index, layer_type in wanted.items():
            assert choices[index] == layer_type, (index, layer_type, choices[index])


def test_non_finite_threshold_gradients_are_skipped_not_folded_into_the_rms(latency_model):
    """Issue 19 item 5: an inf threshold gradient (fp16 scaler's early steps) drops that step's threshold
    gradients and leaves the running RMS and step count untouched; the next finite step normalises as usual."""
    from types import SimpleNamespace

    from mobilekit.search.methods.single_path import DECISION_KINDS, SinglePathPhase

    net = make_net(latency_model)
    kinds = {kind: [p for n, p in net.named_parameters() if n.rsplit(".", 1)[-1] == f"t_{kind}" and p.numel()]
             for kind in DECISION_KINDS}
    thresholds = [p for ps in kinds.values() for p in ps]
    phase = SimpleNamespace(state={"grad_sq": 0.0, "grad_steps": 0}, config=SimpleNamespace(threshold_normalization="global"),
                            thresholds=thresholds, threshold_kinds=kinds, GRAD_BETA=SinglePathPhase.GRAD_BETA)
    phase._normalize_group = lambda key, grads: SinglePathPhase._normalize_group(phase, key, grads)
    for p in thresholds:
        p.grad = torch.ones_like(p)
    thresholds[3].grad[0] = float("inf")
    assert SinglePathPhase._normalize_threshold_grads(phase) is False
    assert all(p.grad is None for p in thresholds)
    assert phase.state == {"grad_sq": 0.0, "grad_steps": 0}
    for p in thresholds:
        p.grad = torch.full_like(p, 3.0)
    assert SinglePathPhase._normalize_threshold_grads(phase) is True
    assert phase.state["grad_steps"] == 1 and math.isfinite(phase.state["grad_sq"])
    assert all(torch.allclose(p.grad, torch.ones_like(p)) for p in thresholds)
