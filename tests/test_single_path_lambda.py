"""The single-path latency weight (issue 19): lambda projected to >= 0 with anti-windup, and ramped in after the
warm-up. Controller unit tests (:func:`steer_lambda`, :class:`LatencyPenalty`) and one short search on a
synthetic table that still meets its target with the single-path settings."""

from __future__ import annotations

import json
import math

import pytest

from mobilekit.latency.differentiable import SuperkernelLatency
from mobilekit.search import make_config, run_search
from mobilekit.search.methods.single_path import Options, ramp_steps
from mobilekit.errors import ConfigError
from mobilekit.search.penalty import LatencyPenalty, ramp_factor, steer_floor, steer_lambda

from _synthetic_tables import SEARCH_WIDTH, synthetic_table

AIM_MS = 76.0            # 0.95 * 80 ms
KI, KP = 0.1, 8.0        # the search's default gains (lambda_lr, lambda_p)


def _latencies() -> list[float]:
    """A run of R (ms) above, below, then far below, then above the aim (an overshooting search)."""
    return [130.0, 110.0, 90.0, 70.0, 60.0, 60.0, 65.0, 72.0, 80.0, 90.0, 75.0, 50.0, 50.0, 85.0]


def test_nonnegative_lambda_is_never_negative_where_the_plain_controller_is():
    plain, projected = {"lambda": 0.0}, {"lambda": 0.0}
    plain_values = [steer_lambda(plain, r, AIM_MS, KI, KP) for r in _latencies()]
    projected_values = [steer_lambda(projected, r, AIM_MS, KI, KP, nonnegative=True) for r in _latencies()]
    assert min(plain_values) < 0                      # the old controller rewards a slower network
    assert min(projected_values) >= 0.0
    assert projected["lambda"] >= 0.0                 # the integral is projected too
    # above the aim both controllers agree on the first step (same state, no clipping yet)
    assert projected_values[0] == pytest.approx(plain_values[0])
    assert projected_values[0] > 0


def test_anti_windup_lambda_reacts_to_an_overshoot_after_a_long_undershoot():
    """50 steps at half the aim, then 20 % above it: the projected controller acts on the first step above;
    clipping the plain controller's output instead would stay at 0 for many steps (its integral wound down)."""
    undershoot, overshoot = 0.5 * AIM_MS, 1.2 * AIM_MS
    projected, plain = {"lambda": 0.5}, {"lambda": 0.5}
    for _ in range(50):
        assert steer_lambda(projected, undershoot, AIM_MS, KI, KP, nonnegative=True) == 0.0
        steer_lambda(plain, undershoot, AIM_MS, KI, KP)
    assert projected["lambda"] == 0.5                 # the integral held while lambda was clipped at 0
    assert plain["lambda"] < -2.5                     # the plain integral wound down
    first = steer_lambda(projected, overshoot, AIM_MS, KI, KP, nonnegative=True)
    assert first == pytest.approx(0.5 + KP * math.log(1.2))
    clipped_plain = [max(0.0, steer_lambda(plain, overshoot, AIM_MS, KI, KP)) for _ in range(10)]
    assert clipped_plain == [0.0] * 10                # what anti-windup avoids


def test_anti_windup_integral_still_falls_while_lambda_is_positive():
    """Below the aim but with lambda > 0 (integral carried over), the integral comes down, not frozen."""
    state = {"lambda": 2.0, "last_error": math.log(0.95)}
    steer_lambda(state, 0.9 * AIM_MS, AIM_MS, KI, 1.0, nonnegative=True)
    assert 0.0 <= state["lambda"] < 2.0


@pytest.mark.parametrize("steps", [1, 5, 25])
def test_ramp_factor_is_monotone_and_reaches_one(steps):
    factors = [ramp_factor(k, steps) for k in range(1, steps + 10)]
    assert all(b >= a for a, b in zip(factors, factors[1:]))
    assert factors[0] == pytest.approx(1 / steps)
    assert factors[steps - 1] == 1.0 and factors[-1] == 1.0
    assert ramp_factor(3, 0) == 1.0


def test_penalty_ramps_lambda_in_and_resumes_the_ramp_from_its_state():
    """Constant R above the aim: the ramped lambda rises monotonically to the unramped controller's value;
    a penalty built on a copy of the state (a resumed checkpoint) continues the same sequence."""
    ramped = LatencyPenalty(80.0, {}, nonnegative=True, ramp_steps=10)
    full = LatencyPenalty(80.0, {}, nonnegative=True)
    values = [ramped.steer(100.0) for _ in range(6)]
    resumed = LatencyPenalty(80.0, json.loads(json.dumps(ramped.state)), nonnegative=True, ramp_steps=10)
    values += [resumed.steer(100.0) for _ in range(8)]
    unramped = [full.steer(100.0) for _ in range(14)]
    assert all(b > a for a, b in zip(values[:10], values[1:10]))
    assert values[0] == pytest.approx(unramped[0] / 10)
    assert values[9:] == pytest.approx(unramped[9:])
    assert all(v <= u for v, u in zip(values, unramped))


def test_floor_multiplier_is_zero_above_the_floor_and_pushes_back_below_it():
    """The lower multiplier mu of R >= floor: 0 while R is above the floor, > 0 (growing with the depth) below."""
    floor = 0.92 * 80.0
    state: dict = {}
    assert [steer_floor(state, r, floor, KI, KP) for r in (90.0, 80.0, 75.0)] == [0.0, 0.0, 0.0]
    shallow = steer_floor(state, 0.97 * floor, floor, KI, KP)
    deep = steer_floor(state, 0.8 * floor, floor, KI, KP)
    assert 0 < shallow < deep
    assert shallow == pytest.approx(KP * math.log(1 / 0.97))       # the proportional term on its first step


def test_two_sided_penalty_holds_the_window_from_both_sides():
    """With a floor: lambda > 0 above the aim, 0 between floor and aim, < 0 below the floor; without it the
    same latencies never give a negative lambda (what let R drift below 0.9 T, issue 19)."""
    two_sided = LatencyPenalty(80.0, {}, nonnegative=True, floor=0.92)
    one_sided = LatencyPenalty(80.0, {}, nonnegative=True)
    run = [100.0, 90.0, 74.5, 74.0, 65.0, 60.0, 65.0, 74.0, 74.0]
    two = [two_sided.steer(r) for r in run]
    one = [one_sided.steer(r) for r in run]
    assert two[0] > 0 and two[1] > 0
    assert two[2] == two[3] == 0.0                                    # inside [0.92 T, 0.95 T]: no push either way
    assert two[4] < 0 and two[5] < two[4] and two[6] < 0              # below the floor: subsets pushed back on
    assert min(one) >= 0.0 and one[4:7] == [0.0, 0.0, 0.0]
    assert two_sided.state["lambda_floor"] >= 0.0
    resumed = LatencyPenalty(80.0, json.loads(json.dumps(two_sided.state)), nonnegative=True, floor=0.92)
    assert resumed.steer(60.0) == pytest.approx(two_sided.steer(60.0))


def test_floor_needs_the_projected_controller_and_a_floor_below_the_aim():
    with pytest.raises(ValueError):
        LatencyPenalty(80.0, {}, floor=0.9)
    with pytest.raises(ValueError):
        LatencyPenalty(80.0, {}, nonnegative=True, aim=0.9, floor=0.92)


def test_a_floor_at_or_above_the_aim_is_a_config_error_naming_both():
    with pytest.raises(ConfigError, match="target_floor 0.96 must lie below target_aim 0.95"):
        make_config(table="t.json", target_ms=80, out="run", target_floor=0.96)
    assert make_config(table="t.json", target_ms=80, out="run", target_floor=0.0).target_floor == 0.0


def test_other_methods_keep_the_plain_controller():
    penalty = LatencyPenalty(80.0, {})
    assert (penalty.nonnegative, penalty.ramp_steps) == (False, 0)
    assert penalty.steer(60.0) < 0


def test_ramp_steps_is_a_share_of_the_search_steps():
    assert ramp_steps(Options(), 248) == 25
    assert ramp_steps(Options(lambda_ramp_share=0.0), 248) == 0


def test_search_on_a_synthetic_table_meets_its_target_with_a_nonnegative_ramped_lambda(tmp_path):
    """60 steps of 16 digits (12 of them warm-up): lambda negative only once R went below the floor (0.92 T) and never above the aim, rises
    over the ramp, R reaches the target during the search and the delivered network lies inside [0.9 T, T]."""
    table = synthetic_table(width=SEARCH_WIDTH)
    path = table.save(tmp_path / "synthetic.json")
    fastest, slowest = SuperkernelLatency(table).bounds_ms()
    target = round(fastest + 0.7 * (slowest - fastest), 1)
    out = tmp_path / "run"
    summary = run_search(make_config(table=str(path), target_ms=target, out=str(out), data="digits", epochs=1,
                                     steps_per_epoch=60, batch_size=16, final_epochs=0, export=(), threads=1,
                                     seed=0, threshold_lr=0.01, warmup_share=0.2, lambda_ramp_share=0.1,
                                     train_resolution=32))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    search = [r for r in records if r.get("phase") == "search"]
    lambdas = [r["lambda"] for r in search]
    warm, ramp = 12, 6
    assert lambdas[:warm] == [0.0] * warm
    floor = Options().target_floor * target
    below = [i for i, r in enumerate(search) if i >= warm and r["runtime_hard_ms"] < floor]
    negative = [i for i, r in enumerate(search) if r["lambda"] < 0]
    assert not negative or (below and below[0] <= negative[0])     # lambda < 0 only once R went below the floor
    assert all(r["lambda"] >= 0.0 for r in search if r["runtime_hard_ms"] > 0.95 * target)   # never above the aim
    assert all(r["lambda"] < 0.0 for r in search[warm:] if r["runtime_hard_ms"] < 0.9 * floor)
    assert search[warm]["runtime_hard_ms"] > target and 0 < lambdas[warm] < max(lambdas[warm:warm + ramp + 1])
    assert min(r["runtime_hard_ms"] for r in search) <= target
    assert 0.9 * target <= summary["predicted_ms"] <= target
