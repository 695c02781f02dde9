"""Benchmarks that do not rot: every ``bench/*.py`` runs in its ``--smoke`` mode (seconds each) and exits 0.

The scripts run two at a time (this machine has two cores) when pytest runs alone, one at a time beside ``make
test``'s other pytest-xdist worker (more would oversubscribe the cores), one torch thread each, each in its own
temporary working folder with the repository's ``latency_tables/``, ``devices/`` and ``search/`` linked in, so that
a script that writes ``runs/...`` writes nothing into the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Scripts whose --smoke mode is still to be written (issue 24 stays open for them): listed here, not skipped
# silently; the test below fails as soon as the list and the scripts disagree, so it can only shrink.
NO_SMOKE_YET: set[str] = set()
ALL_SCRIPTS = sorted((ROOT / "bench").glob("*.py"))
SCRIPTS = [s for s in ALL_SCRIPTS if s.name not in NO_SMOKE_YET]


def test_the_list_of_scripts_without_a_smoke_mode_is_exact() -> None:
    lacking = {s.name for s in ALL_SCRIPTS if "--smoke" not in s.read_text(encoding="utf-8")}
    assert lacking == NO_SMOKE_YET


def _run(script: Path, work: Path) -> tuple[Path, int, str, float]:
    work.mkdir()
    for name in ("latency_tables", "devices", "search", "bench"):
        (work / name).symlink_to(ROOT / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MOBILEKIT_CACHE": str(work / "cache"),
           "MPLBACKEND": "Agg"}
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(script), "--smoke"], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300)
        code, output = done.returncode, done.stdout[-1500:] + done.stderr[-2500:]
    except subprocess.TimeoutExpired:
        code, output = -1, "timed out after 300 s"
    return script, code, output, time.perf_counter() - started


def test_every_bench_script_has_a_smoke_mode_that_runs(tmp_path: Path) -> None:
    assert len(SCRIPTS) >= 12
    beside_other_workers = "PYTEST_XDIST_WORKER" in os.environ
    with ThreadPoolExecutor(max_workers=1 if beside_other_workers else 2) as pool:
        results = list(pool.map(lambda s: _run(s, tmp_path / s.stem), SCRIPTS))
    failed = [f"bench/{s.name} --smoke: exit {code} after {seconds:.0f} s\n{output}"
              for s, code, output, seconds in results if code != 0]
    assert not failed, "\n\n".join(failed)
