"""``mobilekit compare``: equal budgets, the fixed retraining recipe, the report files, resume, bad settings."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from _synthetic_tables import synthetic_table

import mobilekit.search
from mobilekit.cli import main
from mobilekit.compare import CompareSettings, run_comparison
from mobilekit.compare.budget import method_settings, split_budget
from mobilekit.compare.retrain import Recipe, retrain
from mobilekit.data import load_dataset
from mobilekit.errors import ConfigError
from mobilekit.latency.differentiable import SuperkernelLatency
from mobilekit.space import get_space, reference_architecture

WIDTH = 0.35
TINY = dict(data="digits", seeds=2, budget_epochs=2, retrain_epochs=1, protocol_samples=2, train_subset=64,
            batch_size=16, steps_per_epoch=2, methods=("single-path", "random"))


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    return str(synthetic_table(width=WIDTH).save(tmp_path_factory.mktemp("tables") / "synthetic.json"))


@pytest.fixture(scope="module")
def target(table_path):
    fastest, slowest = SuperkernelLatency(synthetic_table(width=WIDTH)).bounds_ms()
    return round(fastest + 0.5 * (slowest - fastest), 1)


def tiny(table_path, target, out, **overrides):
    return CompareSettings(table=table_path, target_ms=target, out=str(out), **{**TINY, **overrides})


@pytest.fixture(scope="module")
def finished(tmp_path_factory, table_path, target):
    settings = tiny(table_path, target, tmp_path_factory.mktemp("compare") / "out")
    return settings, run_comparison(settings)


# ---- budget ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [4, 8, 16])
def test_every_method_sees_the_same_images_when_the_budget_allows(budget):
    seen = {m: method_settings(m, budget, 0.5)[1]["images_epochs"] for m in ("single-path", "random", "multipath")}
    assert seen["single-path"] == seen["random"] == budget
    assert seen["multipath"] <= budget and (budget != 8 or seen["multipath"] == 8)


def test_budget_rules_translate_into_each_searchers_settings():
    assert method_settings("single-path", 8, 0.5)[0] == {"epochs": 4, "final_epochs": 4}
    assert method_settings("random", 8, 0.5)[0] == {"epochs": 4, "random_samples": 4, "proxy_epochs": 1,
                                                    "final_epochs": 4}
    keys = method_settings("multipath", 8, 0.5)[0]
    assert 0.8 * (2 * keys["epochs"] - keys["arch_warmup_epochs"]) == 4 and keys["arch_warmup_epochs"] < keys["epochs"]


def test_a_method_without_a_budget_rule_says_what_was_assumed():
    keys, facts = method_settings("toy", 6, 0.5)          # a searcher registered later, with no rule yet
    assert keys == {"epochs": 3, "final_epochs": 3} and "assumed" in facts["rule"]


@pytest.mark.parametrize("budget", [2, 8, 16])
def test_diffautoml_gets_the_whole_budget_counting_its_validation_batches(budget):
    keys, facts = method_settings("diffautoml", budget, 0.5)
    # a training batch from 80 % of the train split plus a validation batch per step: 1.6 passes per epoch
    assert keys == {"epochs": int(budget / 1.6), "final_epochs": 0} and facts["final_epochs"] == 0
    assert facts["images_epochs"] == pytest.approx(1.6 * keys["epochs"]) and facts["images_epochs"] <= budget
    assert budget - facts["images_epochs"] < 1.6                   # no whole epoch left unused
    no_hypergradient = method_settings("diffautoml", budget, 0.5, {"hypergradient": False})
    assert no_hypergradient[0] == {"epochs": budget, "final_epochs": 0}   # only training batches, whole split
    assert no_hypergradient[1]["images_epochs"] == budget


def test_budget_below_two_epochs_is_refused():
    with pytest.raises(ConfigError, match="--budget 2 or more"):
        split_budget(1, 0.5)


# ---- fixed recipe ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits32():
    return load_dataset("digits", resolution=32, seed=0)


def test_retraining_is_seeded(digits32):
    arch = reference_architecture(get_space(width=WIDTH, resolution=32, num_classes=10))
    recipe = Recipe(epochs=1, batch_size=16, steps_per_epoch=3)
    losses = [retrain(arch, digits32.train, recipe, seed=seed)["last_loss"] for seed in (0, 0, 1)]
    assert losses[0] == losses[1] != losses[2]


def test_retraining_learns(digits32):
    arch = reference_architecture(get_space(width=WIDTH, resolution=32, num_classes=10))
    result = retrain(arch, digits32.train, Recipe(epochs=2, batch_size=32), seed=0, evaluate_on={"test": digits32.test})
    assert result["test_accuracy"] > 0.3                       # chance is 0.1


# ---- the comparison ----------------------------------------------------------------------------------------------
def test_comparison_has_a_row_per_method_and_seed_plus_the_protocol(finished):
    settings, report = finished
    cells = {(r["method"], r["seed"]) for r in report["rows"]}
    assert cells == {(m, s) for m in ("single-path", "random", "random-protocol") for s in (0, 1)}
    assert list(report["methods"]) == ["single-path", "random", "random-protocol"]


def test_method_aggregates_are_mean_and_sample_std_of_the_rows(finished):
    _, report = finished
    for method, entry in report["methods"].items():
        values = [r["retrain_test_accuracy"] for r in report["rows"] if r["method"] == method]
        assert entry["retrain_test_accuracy"] == pytest.approx([np.mean(values), np.std(values, ddof=1)])
        assert entry["runs"] == 2


def test_searched_rows_carry_deliverable_and_retrained_accuracy_and_seconds(finished, target):
    _, report = finished
    for row in report["rows"]:
        assert 0 <= row["retrain_test_accuracy"] <= 1 and row["predicted_ms"] > 0
        if row["kind"] == "search":
            assert 0 <= row["test_accuracy"] <= 1 and row["total_s"] >= row["search_s"] >= 0
            assert row["images_epochs"] == 2
        else:
            assert 0.95 * target <= row["predicted_ms"] <= target and row["test_accuracy"] is None


def test_report_files_are_written(finished):
    settings, report = finished
    out = Path(settings.out)
    assert json.loads((out / "results.json").read_text())["methods"] == json.loads(json.dumps(report["methods"]))
    with open(out / "results.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(report["rows"])
    table = (out / "results.md").read_text()
    assert "| single-path | 2 |" in table and "| random-protocol | 2 | – |" in table
    assert (out / "accuracy_latency.png").read_bytes()[:4] == b"\x89PNG"
    # every searched cell's run folder holds its TensorBoard event files (tensorboard --logdir OUT shows them all)
    for method in ("single-path", "random"):
        assert any((out / "runs" / f"{method}-s0" / "tensorboard").glob("events.out.tfevents.*")), method


def test_rerun_skips_finished_cells(finished, monkeypatch):
    settings, report = finished
    calls = []
    monkeypatch.setattr(mobilekit.search, "run_search", lambda *a, **k: calls.append(a))
    again = run_comparison(settings)
    assert calls == [] and again["rows"] == report["rows"]


def test_killed_comparison_continues_with_the_unfinished_cells(tmp_path, table_path, target, monkeypatch):
    settings = tiny(table_path, target, tmp_path / "out", seeds=1, protocol_samples=0)
    real = mobilekit.search.run_search
    calls = []

    def killed_on_second(config, **kwargs):
        calls.append(config.method)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(config, **kwargs)

    monkeypatch.setattr(mobilekit.search, "run_search", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_comparison(settings)
    assert [p.name for p in (tmp_path / "out" / "cells").iterdir() if not p.name.startswith(".mobilekit-")] == \
        ["single-path-s0.json"]
    calls.clear()
    monkeypatch.setattr(mobilekit.search, "run_search", lambda config, **kwargs: (calls.append(config.method),
                                                                                  real(config, **kwargs))[1])
    report = run_comparison(settings)
    assert calls == ["random"] and len(report["rows"]) == 2


def test_more_seeds_on_rerun_add_cells(tmp_path, table_path, target):
    settings = tiny(table_path, target, tmp_path / "out", seeds=1, protocol_samples=0, methods=("random",))
    run_comparison(settings)
    report = run_comparison(tiny(table_path, target, tmp_path / "out", seeds=2, protocol_samples=0,
                                 methods=("random",)))
    assert sorted(r["seed"] for r in report["rows"]) == [0, 1]


def test_rerun_with_fewer_seeds_reports_only_those(finished, table_path, target):
    settings, _ = finished
    report = run_comparison(tiny(table_path, target, settings.out, seeds=1, protocol_samples=1))
    assert sorted((r["method"], r["seed"]) for r in report["rows"]) == [
        ("random", 0), ("random-protocol", 0), ("single-path", 0)]
    run_comparison(settings)                                  # the fixture's report again for later tests


def test_rerun_with_another_budget_is_refused(finished, table_path, target):
    settings, _ = finished
    with pytest.raises(ConfigError, match="budget_epochs: 2 -> 4"):
        run_comparison(tiny(table_path, target, settings.out, budget_epochs=4))


def test_unknown_method_fails_before_anything_is_written(tmp_path, table_path, target):
    with pytest.raises(ConfigError, match="method 'bogus' is unknown"):
        run_comparison(tiny(table_path, target, tmp_path / "out", methods="single-path,bogus"))
    assert not (tmp_path / "out").exists()


def test_target_outside_the_table_fails_before_anything_is_written(tmp_path, table_path):
    with pytest.raises(ConfigError, match="fastest network takes"):
        run_comparison(tiny(table_path, 10_000.0, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_folder_with_foreign_files_is_not_used(tmp_path, table_path, target):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no comparison"):
        run_comparison(tiny(table_path, target, tmp_path / "out"))
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_cli_bad_methods_exit_2_with_one_line(tmp_path, table_path, target, capsys):
    code = main(["compare", "--table", table_path, "--target-ms", str(target), "--methods", "single-path,nope",
                 "--out", str(tmp_path / "out"), "--data", "digits"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nope" in err


def test_cli_runs_a_tiny_comparison(tmp_path, table_path, target, capsys):
    code = main(["compare", "--table", table_path, "--target-ms", str(target), "--methods", "multipath",
                 "--seeds", "1", "--budget", "2", "--retrain-epochs", "1", "--protocol-samples", "1", "--data", "digits",
                 "--train-subset", "64", "--batch-size", "16", "--steps-per-epoch", "2", "--no-progress",
                 "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0 and "| multipath | 1 |" in out and "| random-protocol | 1 |" in out
    assert (tmp_path / "out" / "accuracy_latency.png").exists()


def test_cell_held_by_a_live_worker_is_left_to_it_and_a_dead_ones_is_taken_over(tmp_path, table_path, target):
    import subprocess
    import sys

    settings = tiny(table_path, target, tmp_path / "out", seeds=2, protocol_samples=0, methods=("random",))
    cells = tmp_path / "out" / "cells"
    cells.mkdir(parents=True)
    (tmp_path / "out" / "compare.json").write_text(json.dumps(settings.to_dict()))     # another worker's start
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        (cells / "random-s0.lock").write_text(str(live.pid))
        (cells / "random-s1.lock").write_text(str(dead.pid))
        report = run_comparison(settings)
    finally:
        live.kill()
    assert [r["seed"] for r in report["rows"]] == [1]
    assert (cells / "random-s0.lock").exists() and not (cells / "random-s1.lock").exists()


def test_compare_on_folder_data_retrains_end_to_end(tmp_path, table_path, target):
    """issue 22: ``compare --data folder:DIR`` crashed in the retraining ('ImageFolderSplit' has no 'tensors')."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c, name in enumerate(("cat", "dog", "owl")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            pixels = np.full((12, 12, 3), 40 + 80 * c, dtype=np.uint8) + rng.integers(0, 20, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    settings = tiny(table_path, target, tmp_path / "out", data=f"folder:{root}", seeds=1, train_subset=None,
                    methods=("random",), batch_size=4)
    report = run_comparison(settings)
    rows = [r for r in report["rows"] if r["method"] in ("random", "random-protocol")]
    assert {r["method"] for r in rows} == {"random", "random-protocol"}
    assert all(0 <= r["retrain_test_accuracy"] <= 1 for r in rows)


def test_search_and_compare_share_one_default_data_set():
    from mobilekit.cli import build_parser
    from mobilekit.compare.settings import CompareSettings
    from mobilekit.defaults import DEFAULT_DATA
    from mobilekit.search.config import SearchConfig

    compare = build_parser().parse_args(["compare", "--table", "t.json", "--target-ms", "80", "--out", "o"])
    assert compare.data == DEFAULT_DATA
    assert SearchConfig.__dataclass_fields__["data"].default == DEFAULT_DATA
    assert CompareSettings.__dataclass_fields__["data"].default == DEFAULT_DATA
