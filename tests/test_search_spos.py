"""SPOS (mobilekit/search/methods/spos.py): uniform single-path one-shot supernet, then evolution inside [0.9T, T],
end to end through the CLI on digits; the evolution itself on a toy score."""

import json
import random
from types import SimpleNamespace

import pytest

from _synthetic_tables import synthetic_table
from mobilekit.cli import main
from mobilekit.errors import SearchError
from mobilekit.search.methods.spos import evolve

QUICK = ["--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "16", "--export", "none", "--no-progress",
         "--population", "4", "--generations", "1", "--bn-steps", "1", "--eval-samples", "64", "--train-resolution", "32"]


def test_spos_runs_end_to_end_through_the_cli(tmp_path, table_path, target):
    out = tmp_path / "run"
    code = main(["search", "--method", "spos", "--table", str(table_path), "--target-ms", str(target), "--out",
                 str(out), "--final-epochs", "1", *QUICK])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "spos" and summary["within_window"] and summary["repairs"] == []
    assert summary["candidates_scored"] >= 4 and summary["search_steps"] == 4
    top = summary["evolution_top"]
    assert top[0]["arch"] == summary["arch"] and top[0]["supernet_accuracy"] == summary["supernet_accuracy"]
    assert all(0.9 * target <= c["predicted_ms"] <= target for c in top)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["path"] for r in records if r["phase"] == "search"] == ["uniform"] * 4
    evolution = json.loads((out / "evolution.json").read_text())
    assert len(evolution["scores"]) == summary["candidates_scored"] and len(evolution["generations"]) == 2


def _toy_paths(sizes=(3,) * 8):
    return SimpleNamespace(sizes=list(sizes), latency_ms=lambda idx: float(sum(c + 1 for c in idx)))


def test_evolution_stays_in_the_window_improves_and_repeats_from_the_seed():
    paths = _toy_paths()
    options = SimpleNamespace(population=8, generations=5, parents=None, mutation_prob=0.2)
    score = lambda idx: float(idx[0] * 10 + idx[1] - idx[2])             # best: [2, 2, 0, ...] if the window allows
    rng = random.Random(0)
    initial = []
    while len(initial) < 8:
        p = [rng.randrange(3) for _ in range(8)]
        if 14 <= paths.latency_ms(p) <= 18:
            initial.append(p)
    ranked = evolve(paths, score, initial, 14, 18, options, seed=3)
    assert all(14 <= paths.latency_ms(p) <= 18 for _, p in ranked)
    assert ranked[0][0] > max(score(p) for p in initial)
    assert ranked == evolve(paths, score, initial, 14, 18, options, seed=3)
    assert len({tuple(p) for _, p in ranked}) == len(ranked)             # nothing scored twice


def test_evolution_without_an_initial_architecture_in_the_window_is_refused():
    options = SimpleNamespace(population=4, generations=1, parents=None, mutation_prob=0.1)
    with pytest.raises(SearchError, match=r"no initial architecture lies in \[30\.00, 31\.00\] ms"):
        evolve(_toy_paths(), lambda idx: 0.0, [[0] * 8], 30, 31, options, seed=0)
