"""TNAS-OS (mobilekit/search/methods/tnas_os.py) end to end through the CLI on digits: the eq. 11 mixture in the
supernet's paths (epsilon rising with the sampler's refits), the proposals plot, and an exact resume."""

import json

import pytest
import torch

import mobilekit.search
from _synthetic_tables import synthetic_table
from mobilekit.cli import main

QUICK = ["--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "16", "--export", "none", "--no-progress",
         "--population", "4", "--generations", "1", "--bn-steps", "1", "--eval-samples", "64", "--tell-batch", "64",
         "--sampler-fit-steps", "5", "--final-epochs", "0", "--method", "tnas-os"]


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, table_path, target):
    """One uninterrupted run with eps_inc 1: uniform paths in epoch 0, sampler paths after the first refit."""
    out = tmp_path_factory.mktemp("tnas") / "run"
    args = ["search", "--table", str(table_path), "--target-ms", str(target), "--out", str(out), *QUICK,
            "--eps-inc", "1.0", "--tell-every", "2"]
    assert main(args) == 0
    return args, out


def test_tnas_os_mixes_uniform_and_sampler_paths_as_epsilon_rises(full_run, target):
    _, out = full_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "tnas-os" and summary["within_window"]
    assert summary["sampler_fits"] == 2 and summary["epsilon_final"] == 1.0
    search = [r for r in _records(out) if r["phase"] == "search"]
    assert [r["path"] for r in search] == ["uniform", "uniform", "sampler", "sampler"]
    assert [r["epsilon"] for r in search] == [0.0, 0.0, 1.0, 1.0]
    # the sampler only proposes paths inside the window
    assert all(0.9 * target <= r["runtime_hard_ms"] <= target for r in search if r["path"] == "sampler")
    assert summary["evolution_seeds_from_sampler"] >= 1


def test_the_default_schedule_peaks_by_mid_search_whatever_its_length():
    from mobilekit.search.methods.tnas_os import DEFAULT_REFITS, schedule
    from mobilekit.search.methods.tnas_sampler import epsilon

    for total in (40, 400, 4000):
        plan = schedule(total, None, None, 0.8)
        refits_by_mid = (total // 2) // plan.every
        assert plan.every == total // DEFAULT_REFITS and plan.refits == DEFAULT_REFITS
        assert epsilon(refits_by_mid, plan.eps_inc, 0.8) == pytest.approx(0.8)
        assert epsilon(refits_by_mid - 1, plan.eps_inc, 0.8) < 0.8
        assert plan.epsilon_at(0) == 0.0 and plan.epsilon_at(total // 2) == pytest.approx(0.8)
        assert plan.epsilon_at(total - 1) == pytest.approx(0.8)
    assert (schedule(4, None, None, 1.0).every, schedule(4, None, None, 1.0).eps_inc) == (1, 0.5)
    assert (schedule(400, 10, 0.1, 1.0).every, schedule(400, 10, 0.1, 1.0).eps_inc) == (10, 0.1)


def test_each_refit_of_a_realistic_search_fits_on_dozens_of_told_in_window_architectures(table_path, target):
    """A 10 000-image search (batch 64, 8 epochs: 1 248 steps) at the defaults: every refit tells dozens of paths,
    and the uniform draws between two refits alone put dozens inside the window (told first), so even the first
    refit fits on dozens of architectures that carry weight. Computed from the schedule and the path space, no
    training. Round 1's schedule (16 told per refit, window-blind) told 16 at the first refit, ~3 inside."""
    from mobilekit.latency.differentiable import ExpectedLatency
    from mobilekit.search.methods.spos import PathSpace
    from mobilekit.search.methods.tnas_os import Options, schedule

    defaults = Options()
    steps = (10_000 // 64) * 8
    plan = schedule(steps, defaults.tell_every, defaults.eps_inc, defaults.eps_max, defaults.tell_paths)
    assert plan.refits == 8 and plan.told_per_refit >= 24
    told_so_far = [plan.told_per_refit * (k + 1) for k in range(plan.refits)]
    assert min(told_so_far) >= 24 and told_so_far[-1] >= 200
    # the share of uniform paths inside [0.9 T, T] on the test table (the middle of its range)
    table = synthetic_table(width=0.35)
    paths = PathSpace(ExpectedLatency(table), table.search_space())
    gen = torch.Generator().manual_seed(0)
    draws = [paths.latency_ms(paths.uniform(gen)) for _ in range(2000)]
    inside_share = sum(0.9 * target <= ms <= target for ms in draws) / len(draws)
    # the first refit sees only uniform draws (epsilon 0): expected in-window paths among its `every` steps
    assert min(plan.tell_paths, inside_share * plan.every) >= 24, (inside_share, plan.every)


@pytest.fixture(scope="module")
def share_run(tmp_path_factory, table_path, target):
    """A tiny run of 64 steps at the default schedule (8 refits, epsilon up to eps_max 0.5 by mid-search)."""
    out = tmp_path_factory.mktemp("tnas-share") / "run"
    args = ["search", "--table", str(table_path), "--target-ms", str(target), "--out", str(out),
            "--epochs", "1", "--steps-per-epoch", "64", "--batch-size", "2", "--export", "none", "--no-progress",
            "--population", "2", "--generations", "0", "--bn-steps", "1", "--eval-samples", "8", "--tell-batch", "8",
            "--tell-paths", "4", "--sampler-fit-steps", "1", "--final-epochs", "0", "--method", "tnas-os",
            "--eps-max", "0.5"]
    assert main(args) == 0
    return out


def test_the_share_of_sampler_drawn_paths_matches_the_schedule_within_sampling_error(share_run):
    from mobilekit.search.methods.tnas_os import schedule

    summary = json.loads((share_run / "summary.json").read_text())
    search = [r for r in _records(share_run) if r["phase"] == "search"]
    plan = schedule(len(search), None, None, 0.5)
    assert (summary["tell_every"], summary["eps_inc"], summary["sampler_fits"]) == (8, 0.125, 8)
    # each step's epsilon is the schedule's (deterministic: catches a refit counted early or late)
    assert [r["epsilon"] for r in search] == pytest.approx([plan.epsilon_at(r["step"]) for r in search])
    measured = sum(r["path"] == "sampler" for r in search) / len(search)
    assert summary["sampler_paths_share"] == pytest.approx(measured)
    expected = plan.expected_sampler_share()            # 0.34375: 22 of 64 paths in expectation
    assert summary["sampler_paths_share_expected"] == pytest.approx(expected)
    # Poisson-binomial sampling error (sd 0.055 here); 3 sd, plus half a draw for the discreteness
    assert abs(measured - expected) <= 3 * plan.sampler_share_sd() + 0.5 / len(search), (measured, expected)
    # and the draws follow epsilon over the search: none while it is 0, more once it is at its maximum
    first, last = [[r["path"] == "sampler" for r in search if lo <= r["step"] < hi] for lo, hi in ((0, 8), (32, 64))]
    assert not any(first) and sum(last) / len(last) >= 0.5 - 3 * (0.25 / len(last)) ** 0.5
    told = [r for r in search if "told" in r]
    assert len(told) == 8 and all(r["told"] == 4 and 0 <= r["told_inside"] <= 4 for r in told)


def test_tnas_os_writes_the_proposals_over_the_search(full_run, target):
    _, out = full_run
    proposals = json.loads((out / "tnas_proposals.json").read_text())
    assert [p["epoch"] for p in proposals] == [0, 1] and [p["fits"] for p in proposals] == [1, 2]
    assert all(0.9 * target <= ms <= target for p in proposals for ms in p["latency_ms"])
    assert all(0 <= a <= 1 for p in proposals for a in p["accuracy"])
    assert (out / "tnas_proposals.png").stat().st_size > 0


def test_interrupted_tnas_os_resumes_to_the_same_search(full_run, tmp_path, monkeypatch, capsys):
    args, full = full_run
    out = tmp_path / "run"
    args = [a if a != str(full) else str(out) for a in args]
    real = mobilekit.search.run_search

    def interrupted(config, **kwargs):
        def stop(record):
            if record["step"] == 2:                         # after the first refit, inside the second epoch
                raise KeyboardInterrupt
        return real(config, **kwargs, on_step=stop)

    monkeypatch.setattr(mobilekit.search, "run_search", interrupted)
    assert main(args) == 130
    monkeypatch.setattr(mobilekit.search, "run_search", real)
    assert main(args + ["--resume"]) == 0
    strip = lambda records: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records if r["phase"] == "search"]
    assert strip(_records(out)) == strip(_records(full))
    assert json.loads((out / "tnas_proposals.json").read_text()) == json.loads((full / "tnas_proposals.json").read_text())
    same = ("arch", "supernet_accuracy", "candidates_scored", "sampler_fits")
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, full))
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
