"""TNAS-OS (mobilekit/search/methods/tnas_os.py) end to end through the CLI on digits: the eq. 11 mixture in the
supernet's paths (epsilon rising with the sampler's refits), the proposals plot, and an exact resume."""

import json

import pytest

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
        every, inc = schedule(total, None, None, 0.8)
        refits_by_mid = (total // 2) // every
        assert every == total // DEFAULT_REFITS and epsilon(refits_by_mid, inc, 0.8) == pytest.approx(0.8)
        assert epsilon(refits_by_mid - 1, inc, 0.8) < 0.8
    assert schedule(4, None, None, 1.0) == (1, 0.5) and schedule(400, 10, 0.1, 1.0) == (10, 0.1)


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
