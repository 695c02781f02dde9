"""The differentiable latency model (Single-Path NAS eq. 12-17) and the categorical expected latency."""

import random

import pytest
import torch

from _synthetic_tables import PIXEL1, synthetic_table
from mobilekit.errors import TableError
from mobilekit.latency.differentiable import (
    Decisions, ExpectedLatency, SuperkernelLatency, indicator, se_scaling_factors,
)
from mobilekit.latency_table import LatencyTable
from mobilekit.space import SKIP, Architecture, LayerType, reference_architecture, sample_architecture


@pytest.fixture(scope="module")
def full():
    return synthetic_table()


@pytest.fixture(scope="module")
def pixel1():
    return LatencyTable.load(PIXEL1)


def arch_with(space, index: int, layer_type: LayerType) -> Architecture:
    """All searchable positions ir_k3_e6 except one."""
    choices = list(Architecture.from_string(space, ",".join(["ir_k3_e6"] * 20)).choices)
    choices[index] = layer_type
    return Architecture(space, tuple(choices))


def decisions_from_thresholds(latency_model: SuperkernelLatency, arch: Architecture) -> tuple[Decisions, list]:
    """Indicators of ``stat - t`` with stat = 1 and t = 0 (on) or 2 (off), as the superkernel forms them."""
    target = latency_model.decisions_for(arch)
    thresholds = [torch.where(v > 0.5, 0.0, 2.0).requires_grad_(True) for v in
                  (target.keep, target.kernel, target.expand, target.se)]
    return Decisions(*(indicator(1.0 - t) for t in thresholds)), thresholds


def test_every_type_at_every_position_reproduces_the_full_table_exactly(full):
    latency_model = SuperkernelLatency(full)
    space = latency_model.space
    checked = 0
    for l, position in enumerate(latency_model.positions):
        assert len(position.candidates) in (12, 13)
        for layer_type in position.candidates:
            decisions, _ = decisions_from_thresholds(latency_model, arch_with(space, position.index, layer_type))
            assert latency_model.layer_ms(decisions)[l].item() == full.latency_ms(position.index, layer_type)
            checked += 1
    assert checked == 5 * 12 + 15 * 13


def test_every_non_se_type_reproduces_the_pixel1_table_exactly(pixel1):
    latency_model = SuperkernelLatency(pixel1)
    assert not latency_model.include_se
    for l, position in enumerate(latency_model.positions):
        for layer_type in (t for t in position.candidates if not t.se_ratio):
            decisions, _ = decisions_from_thresholds(latency_model, arch_with(latency_model.space, position.index, layer_type))
            assert latency_model.layer_ms(decisions)[l].item() == pixel1.latency_ms(position.index, layer_type)


@pytest.mark.parametrize("seed", range(5))
def test_runtime_of_a_decoded_architecture_equals_the_table_lookup(full, pixel1, seed):
    rng = random.Random(seed)
    for table, allow in ((full, None), (pixel1, {t for t in full.search_space().all_layer_types if not t.se_ratio})):
        latency_model = SuperkernelLatency(table)
        arch = sample_architecture(latency_model.space, rng, allow)
        assert latency_model(latency_model.decisions_for(arch)).item() == pytest.approx(table.lookup_ms(arch), rel=1e-12)


def test_fixed_positions_with_own_entries_are_counted(full):
    covered = synthetic_table(cover_fixed=True)
    arch = reference_architecture(full.search_space())
    r_own = SuperkernelLatency(full)(SuperkernelLatency(full).decisions_for(arch)).item()
    r_cov = SuperkernelLatency(covered)(SuperkernelLatency(covered).decisions_for(arch)).item()
    assert r_own == pytest.approx(full.lookup_ms(arch))
    assert r_own - r_cov == pytest.approx(full.latency_ms(0, LayerType(3, 1)) + full.latency_ms(21, LayerType(3, 6)))


def test_product_form_equals_the_nested_equations_in_value_and_gradient(full):
    latency_model = SuperkernelLatency(full)
    gen = torch.Generator().manual_seed(0)
    soft = [torch.rand(shape, generator=gen, dtype=torch.float64).requires_grad_(True) for shape in
            ((20,), (20, 1), (20, 1), (20, 2))]
    d = Decisions(*soft)
    a, b = latency_model(d), latency_model.nested_ms(d)
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    grads_a = torch.autograd.grad(a, soft)
    grads_b = torch.autograd.grad(b, soft)
    for ga, gb in zip(grads_a, grads_b):
        assert torch.allclose(ga, gb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("table_name", ["full", "pixel1"])
def test_raising_any_threshold_of_the_largest_network_lowers_runtime(request, table_name):
    table = request.getfixturevalue(table_name)
    latency_model = SuperkernelLatency(table)
    g = latency_model.grid
    largest = Architecture(latency_model.space, tuple(
        LayerType(g.kernels[-1], g.expansions[-1], g.se_ratios[-1]) if p.searchable else p.candidates[0]
        for p in latency_model.space.positions))
    decisions, thresholds = decisions_from_thresholds(latency_model, largest)
    latency_model(decisions).backward()
    keep_grad = thresholds[0].grad
    assert torch.isfinite(keep_grad).all()
    assert (keep_grad[latency_model.skippable] < 0).all() and (keep_grad[~latency_model.skippable] == 0).all()
    for t in thresholds[1:]:
        assert torch.isfinite(t.grad).all() and (t.grad < 0).all()


def test_gradient_of_an_inner_decision_vanishes_when_the_outer_one_is_off(full):
    latency_model = SuperkernelLatency(full)
    skip_at_2 = arch_with(latency_model.space, 2, SKIP)
    decisions, thresholds = decisions_from_thresholds(latency_model, skip_at_2)
    latency_model(decisions).backward()
    l = [p.index for p in latency_model.positions].index(2)
    assert thresholds[0].grad[l] < 0                  # turning the block back on would cost time
    assert thresholds[1].grad[l].abs().sum() == 0     # its kernel choice does not matter while skipped


def test_se_scaling_factors_fill_a_table_without_se(full):
    no_se = synthetic_table(with_se=False)
    factors = se_scaling_factors(full)
    assert factors[3]["ir_k5_e6_se0.25"] == pytest.approx(
        full.latency_ms(3, LayerType(5, 6, 0.25)) / full.latency_ms(3, LayerType(5, 6)))
    filled = SuperkernelLatency(no_se, include_se=True, se_factors=factors)
    assert filled.include_se
    arch = arch_with(full.search_space(), 7, LayerType(3, 6, 0.5))
    assert filled(filled.decisions_for(arch)).item() == pytest.approx(full.lookup_ms(arch), rel=1e-12)


def test_pixel1_with_se_and_no_factors_is_refused(pixel1):
    with pytest.raises(TableError, match="SE types were not measured"):
        SuperkernelLatency(pixel1, include_se=True)


def test_se_factors_need_a_table_with_se(pixel1):
    with pytest.raises(TableError, match="no SE entries"):
        se_scaling_factors(pixel1)


def test_bounds_are_the_fastest_and_slowest_networks(pixel1):
    fastest, slowest = SuperkernelLatency(pixel1).bounds_ms()
    assert fastest == pytest.approx(41.132)
    assert slowest == pytest.approx(131.4579)


def test_expected_latency_of_one_hot_probabilities_is_the_lookup(full, pixel1):
    rng = random.Random(3)
    for table in (full, pixel1):
        expected = ExpectedLatency(table)
        allow = None if expected.include_se else {t for t in full.search_space().all_layer_types if not t.se_ratio}
        arch = sample_architecture(expected.space, rng, allow)
        assert expected(expected.one_hot(arch)).item() == pytest.approx(table.lookup_ms(arch), rel=1e-12)


def test_expected_latency_is_linear_in_the_probabilities(pixel1):
    expected = ExpectedLatency(pixel1)
    probs = expected.mask.double() / expected.mask.sum(1, keepdim=True)
    means = sum(sum(pixel1.latency_ms(p.index, t) for t in types) / len(types)
                for p, types in zip(expected.positions, expected.candidates))
    assert expected(probs).item() == pytest.approx(19.6 + means)
    logits = torch.zeros_like(probs, requires_grad=True)
    expected(torch.softmax(logits.masked_fill(~expected.mask, -1e4), -1)).backward()
    assert torch.isfinite(logits.grad).all()


def test_indicator_is_hard_forward_with_the_chosen_backward():
    x = torch.tensor([-0.5, 0.0, 2.0], requires_grad=True)
    y = indicator(x, "sigmoid")
    assert y.tolist() == [0.0, 1.0, 1.0]
    y.sum().backward()
    s = torch.sigmoid(x.detach())
    assert torch.allclose(x.grad, s * (1 - s))
    x.grad = None
    indicator(x, "ste").sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]
    assert torch.allclose(indicator(x, "softmax", tau=0.5), torch.sigmoid(x / 0.5))
    with pytest.raises(ValueError, match="unknown relaxation"):
        indicator(x, "gumbel")
