"""TNAS-OS (mobilekit/search/methods/tnas_os.py) end to end through the CLI on digits: the eq. 11 mixture in the
supernet's paths (epsilon rising with the sampler's refits), the proposals plot, and an exact resume."""

import json

import pytest
import torch

import mobilekit.search
from _synthetic_tables import SEARCH_WIDTH, synthetic_table
from mobilekit.cli import main

QUICK = ["--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "16", "--export", "none", "--no-progress",
         "--population", "4", "--generations", "1", "--bn-steps", "1", "--eval-samples", "64", "--tell-batch", "64",
         "--sampler-fit-steps", "5", "--final-epochs", "0", "--method", "tnas-os", "--train-resolution", "32"]


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _path_space():
    """The path space a search on the test table draws from (indices into each position's candidates)."""
    from mobilekit.latency.differentiable import ExpectedLatency
    from mobilekit.search.methods.spos import PathSpace

    table = synthetic_table(width=SEARCH_WIDTH)
    return PathSpace(ExpectedLatency(table), table.search_space())


def _uniform_inside(paths, target, n, seed=0):
    """``n`` uniform paths inside [0.9 T, T], and the share of uniform paths that fell there."""
    gen = torch.Generator().manual_seed(seed)
    inside, tries = [], 0
    while len(inside) < n:
        p, tries = paths.uniform(gen), tries + 1
        if 0.9 * target <= paths.latency_ms(p) <= target:
            inside.append(p)
    return inside, n / tries


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
    from mobilekit.search.methods.tnas_os import Options, schedule

    defaults = Options()
    steps = (10_000 // 64) * 8
    plan = schedule(steps, defaults.tell_every, defaults.eps_inc, defaults.eps_max, defaults.tell_paths)
    assert plan.refits == 8 and plan.told_per_refit >= 24
    told_so_far = [plan.told_per_refit * (k + 1) for k in range(plan.refits)]
    assert min(told_so_far) >= 24 and told_so_far[-1] >= 200
    # the share of uniform paths inside [0.9 T, T] on the test table (target mid-range): 0.26
    _, inside_share = _uniform_inside(_path_space(), target, 500)
    # the first refit sees only uniform draws (epsilon 0): expected in-window paths among its `every` steps
    assert min(plan.tell_paths, inside_share * plan.every) >= 24, (inside_share, plan.every)


def test_a_refit_tells_the_paths_inside_the_window_first_newest_first():
    from types import SimpleNamespace

    from mobilekit.search.methods.tnas_os import SamplerTeacher

    teacher = object.__new__(SamplerTeacher)             # only the window and the limit matter here
    teacher.sampler = SimpleNamespace(lo_ms=9.0, hi_ms=11.0)
    teacher.paths = SimpleNamespace(latency_ms=lambda p: float(sum(p)))
    recent = [[5], [10], [1], [9], [20], [11]]            # oldest first, as trained
    for limit, told in ((3, [[11], [9], [10]]), (5, [[11], [9], [10], [20], [1]]), (1, [[11]])):
        teacher.ctx = SimpleNamespace(config=SimpleNamespace(tell_paths=limit))
        assert teacher.choose_told(recent) == told


def _agreement(path, best):
    return sum(a == b for a, b in zip(path, best)) / len(best)


@pytest.fixture(scope="module")
def share_run(tmp_path_factory, table_path, target):
    """A tiny run of 64 steps at the default schedule (8 refits, epsilon up to eps_max 0.5 by mid-search) in which
    a told path's score is a toy with a known best: the share of positions where it takes the type of one fixed
    in-window path (instead of the supernet's batch accuracy; the supernet still trains). Returns (run folder,
    the best path, the run's sampler as the search left it, a fresh one as the search started with it)."""
    from mobilekit.search.methods import tnas_os

    made, real = [], tnas_os.make_sampler

    def keep(ctx, paths):
        made.extend([real(ctx, paths), real(ctx, paths)])           # the run's sampler and an untouched twin
        return made[0]

    best = _uniform_inside(_path_space(), target, 1, seed=123)[0][0]
    out = tmp_path_factory.mktemp("tnas-share") / "run"
    args = ["search", "--table", str(table_path), "--target-ms", str(target), "--out", str(out),
            "--epochs", "1", "--steps-per-epoch", "64", "--batch-size", "2", "--export", "none", "--no-progress",
            "--population", "2", "--generations", "0", "--bn-steps", "1", "--eval-samples", "8", "--tell-batch", "8",
            "--sampler-fit-steps", "100", "--final-epochs", "0", "--method", "tnas-os", "--eps-max", "0.5",
            "--train-resolution", "32"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tnas_os, "batch_accuracy", lambda net, paths, x, y: [_agreement(p, best) for p in paths])
        patch.setattr(tnas_os, "make_sampler", keep)
        assert main(args) == 0
    return out, best, made[0], made[1]


def test_the_share_of_sampler_drawn_paths_matches_the_schedule_within_sampling_error(share_run):
    from mobilekit.search.methods.tnas_os import schedule

    share_run = share_run[0]
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
    # every distinct path of the 8 steps between refits is told (tell_paths 32 > 8), in-window ones first
    assert len(told) == 8 and all(1 <= r["told"] <= 8 and r["told_inside"] <= r["told"] for r in told)
    assert sum(r["told_inside"] for r in told[4:]) > sum(r["told_inside"] for r in told[:4])   # sampler paths: inside


def test_the_sampler_learns_a_toy_score_s_best_path_over_the_search(share_run, target):
    """With a toy score whose best path is known, the sampler's proposals move toward it as it is told more, and
    end far closer to it than uniform paths in the window are."""
    out, best, trained, fresh = share_run
    assert trained.fits_ == 8 and fresh.fits_ == 0
    mean = lambda archs: sum(_agreement(p, best) for p in archs) / len(archs)
    before, after = mean(fresh.ask(200, seed=5)), mean(trained.ask(200, seed=5))
    uniform = mean(_uniform_inside(_path_space(), target, 400)[0])
    assert after > before + 0.05 and after > uniform + 0.05, (before, after, uniform)
    # the proposals the run recorded at its refits are scored by the same toy
    proposals = json.loads((out / "tnas_proposals.json").read_text())
    assert len(proposals) == 8 and all(len(p["accuracy"]) == 8 for p in proposals)
    assert all(a * len(best) == pytest.approx(round(a * len(best))) for p in proposals for a in p["accuracy"])


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
