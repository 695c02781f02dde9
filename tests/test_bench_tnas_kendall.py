"""``bench/tnas_kendall.py``'s sampler report: the share of sampler-drawn paths and the per-refit told counts it
writes into ``kendall.json`` come from the search's own metrics records (the smoke run of the whole script is in
``test_bench_smoke.py``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
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


def _run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    for name in ("latency_tables", "bench"):
        (cwd / name).symlink_to(ROOT / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "MOBILEKIT_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "bench/tnas_kendall.py", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_an_unknown_method_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = _run_script("--smoke", "--methods", "spos,darts", cwd=tmp_path)
    assert done.returncode == 2
    assert "--methods 'spos,darts': give a comma-separated subset of spos,tnas-os" in done.stderr
    assert "Traceback" not in done.stderr


def test_one_method_with_another_standalone_seed_writes_only_its_results(tmp_path: Path) -> None:
    done = _run_script("--smoke", "--methods", "spos", "--standalone-seed", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    written = Path(done.stdout.strip().splitlines()[-1].removeprefix("written "))
    report = json.loads(written.read_text())
    assert set(report) == {"settings", "spos"}
    assert report["settings"]["standalone_seed"] == 1
    rows = report["spos"]["archs"]
    assert len(rows) == 3 and all(r["standalone_s"] >= 0 and 0 <= r["standalone_test_accuracy"] <= 1 for r in rows)
