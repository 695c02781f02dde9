"""Latency budgets: the target check, the random baseline's window, the repair of a result outside [0.9T, T]."""

import random

import pytest

from _synthetic_tables import PIXEL1
from mobilekit.errors import SearchError
from mobilekit.latency.differentiable import ExpectedLatency
from mobilekit.latency_table import LatencyTable
from mobilekit.search import make_config, run_search
from mobilekit.search.budget import check_target, repair_to_window, sample_in_window
from mobilekit.search.penalty import steer_lambda
from mobilekit.space import Architecture


@pytest.fixture(scope="module")
def pixel1_runtime():
    return ExpectedLatency(LatencyTable.load(PIXEL1))


@pytest.mark.parametrize("target", [30.0, 140.0])
def test_target_outside_the_table_stops_at_once_naming_both_bounds(tmp_path, target):
    config = make_config(table=str(PIXEL1), target_ms=target, out=str(tmp_path / "run"))
    with pytest.raises(SearchError, match=r"fastest network takes 41\.1 ms and the slowest 131\.5 ms"):
        run_search(config)
    assert not (tmp_path / "run").exists()


def test_target_inside_the_table_passes(pixel1_runtime):
    assert check_target(pixel1_runtime, 80.0) == pytest.approx((41.132, 131.4579))


@pytest.mark.parametrize("target", [50.0, 80.0, 120.0])
def test_random_baseline_samples_inside_the_window(pixel1_runtime, target):
    table = pixel1_runtime.table
    rng = random.Random(0)
    for _ in range(10):
        arch = sample_in_window(pixel1_runtime, pixel1_runtime.space, 0.95 * target, target, rng)
        assert 0.95 * target <= table.lookup_ms(arch) <= target
        assert not any(t.se_ratio for t in arch.searchable_choices)     # Pixel 1 has no SE entries


def test_repair_moves_a_too_slow_architecture_into_the_window(pixel1_runtime):
    space = pixel1_runtime.space
    largest = Architecture.from_string(space, ",".join(["ir_k5_e6"] * 20))
    prefer_big = lambda position, layer_type: float(layer_type.expansion + layer_type.kernel)  # noqa: E731
    arch, repairs = repair_to_window(largest, pixel1_runtime, 72.0, 80.0, prefer_big)
    assert 72.0 <= pixel1_runtime.table.lookup_ms(arch) <= 80.0
    assert repairs and repairs[-1].latency_ms == pytest.approx(pixel1_runtime.table.lookup_ms(arch))
    assert all(not t.is_skip for t in arch.searchable_choices)        # the score kept blocks, shrank them


def test_repair_leaves_an_architecture_inside_the_window_alone(pixel1_runtime):
    arch = sample_in_window(pixel1_runtime, pixel1_runtime.space, 76.0, 80.0, random.Random(1))
    same, repairs = repair_to_window(arch, pixel1_runtime, 72.0, 80.0, lambda *_: 0.0)
    assert same == arch and repairs == []


def test_lambda_rises_above_the_aim_and_falls_below_it():
    state = {"lambda": 1.0}
    above = steer_lambda(state, 90.0, 80.0, integral_gain=0.5, proportional_gain=2.0)
    assert above > 1.0 and state["lambda"] > 1.0
    state = {"lambda": 1.0}
    below = steer_lambda(state, 70.0, 80.0, integral_gain=0.5, proportional_gain=2.0)
    assert below < 1.0 and state["lambda"] < 1.0
    fixed = {"lambda": 0.3}
    assert steer_lambda(fixed, 200.0, 80.0, 0.0, 0.0) == 0.3 and fixed["lambda"] == 0.3


def test_lambda_integral_holds_while_the_runtime_moves_toward_the_aim():
    state = {"lambda": 0.0}
    steer_lambda(state, 120.0, 80.0, integral_gain=0.5, proportional_gain=0.0)
    wound = state["lambda"]
    steer_lambda(state, 100.0, 80.0, integral_gain=0.5, proportional_gain=0.0)   # closer: hold
    assert state["lambda"] == wound
    steer_lambda(state, 100.0, 80.0, integral_gain=0.5, proportional_gain=0.0)   # stalled: integrate
    assert state["lambda"] > wound
