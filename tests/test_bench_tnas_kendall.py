"""``bench/tnas_kendall.py``'s sampler report: the share of sampler-drawn paths and the per-refit told counts it
writes into ``kendall.json`` come from the search's own metrics records (the smoke run of the whole script is in
``test_bench_smoke.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mobilekit.search.methods import tnas_os

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("_tnas_kendall_bench", ROOT / "bench" / "tnas_kendall.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sampler_report_counts_the_records_of_the_search_phase_only() -> None:
    plan = tnas_os.schedule(total_steps=12, tell_every=4, eps_inc=None, eps_max=0.6)
    sources = ["uniform"] * 4 + ["sampler", "uniform", "sampler", "sampler"] + ["sampler"] * 3 + ["uniform"]
    records = [{"phase": "search", "step": s, "path": src} for s, src in enumerate(sources)]
    for step, told, inside in ((3, 4, 1), (7, 3, 3), (11, 4, 2)):
        records[step].update(told=told, told_inside=inside)
    records += [{"phase": "standalone-0", "step": 0, "path": "sampler", "told": 9, "told_inside": 9}]
    report = _bench().sampler_report(records, plan)
    assert report["sampler_paths_share"] == pytest.approx(6 / 12)
    assert report["refits"] == 3 and report["told"] == [4, 3, 4] and report["told_inside"] == [1, 3, 2]
    assert report["tell_every"] == 4
    # epsilon 0 before the first refit, then 0.6 (reached by mid-search): (4 * 0 + 8 * 0.6) / 12
    assert report["sampler_paths_share_expected"] == pytest.approx(plan.expected_sampler_share())
    assert report["sampler_paths_share_expected"] == pytest.approx(0.4)
    assert report["sampler_paths_share_sd"] == pytest.approx((8 * 0.6 * 0.4) ** 0.5 / 12)


def test_sampler_report_of_a_search_without_records_has_no_share() -> None:
    plan = tnas_os.schedule(total_steps=8, tell_every=None, eps_inc=None, eps_max=0.5)
    report = _bench().sampler_report([], plan)
    assert report["sampler_paths_share"] is None and report["refits"] == 0 and report["told"] == []
