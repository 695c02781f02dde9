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
from mobilekit.search.penalty import LatencyPenalty, ramp_factor, steer_lambda

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


def test_other_methods_keep_the_plain_controller():
    penalty = LatencyPenalty(80.0, {})
    assert (penalty.nonnegative, penalty.ramp_steps) == (False, 0)
    assert penalty.steer(60.0) < 0


def test_ramp_steps_is_a_share_of_the_search_steps():
    assert ramp_steps(Options(), 248) == 25
    assert ramp_steps(Options(lambda_ramp_share=0.0), 248) == 0


def test_search_on_a_synthetic_table_meets_its_target_with_a_nonnegative_ramped_lambda(tmp_path, one_thread):
    """60 steps of 16 digits (12 of them warm-up): lambda never negative, rises over the ramp, R reaches the
    target during the search and the delivered network lies inside [0.9 T, T]."""
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
    assert min(lambdas) >= 0.0
    assert search[warm]["runtime_hard_ms"] > target and 0 < lambdas[warm] < max(lambdas[warm:warm + ramp + 1])
    assert min(r["runtime_hard_ms"] for r in search) <= target
    assert 0.9 * target <= summary["predicted_ms"] <= target
