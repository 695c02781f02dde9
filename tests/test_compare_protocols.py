"""The comparison's yardsticks besides the random protocol: depth-matched random networks, the hand-designed
MnasNet-B1 reference, the standard fixed recipe; their rows, margins and resume."""

import random
from pathlib import Path

import pytest
from _synthetic_tables import synthetic_table

import mobilekit.compare.run as compare_run
from mobilekit.compare import CompareSettings, run_comparison
from mobilekit.compare.protocols import REFERENCES, reference_network, sample_depth_matched, skipped_layers
from mobilekit.compare.retrain import RECIPES, Recipe
from mobilekit.errors import ConfigError
from mobilekit.latency.differentiable import ExpectedLatency, SuperkernelLatency
from mobilekit.latency_table import LatencyTable
from mobilekit.space import Architecture, get_space

REPO = Path(__file__).resolve().parents[1]
PIXEL1 = LatencyTable.load(REPO / "latency_tables" / "pixel1-spnas.json")
WIDTH = 0.35


def test_mnasnet_b1_in_this_space_predicts_79_4_ms_on_the_pixel_1_table():
    arch = reference_network("mnasnet-b1", PIXEL1.search_space())
    assert ExpectedLatency(PIXEL1).lookup_ms(arch) == pytest.approx(79.4, abs=0.05)
    assert skipped_layers(arch) == 5 and arch.to_string() == REFERENCES["mnasnet-b1"]


@pytest.mark.parametrize("skips", [0, 3, 5, 8, 12])
def test_depth_matched_networks_keep_the_skip_count_and_land_in_the_window(skips):
    latency = ExpectedLatency(PIXEL1)
    space = PIXEL1.search_space()
    found = set()
    for seed in range(3):
        arch = sample_depth_matched(latency, space, skips, 76.0, 80.0, random.Random(seed))
        assert skipped_layers(arch) == skips
        assert 76.0 <= latency.lookup_ms(arch) <= 80.0
        found.add(arch.to_string())
    assert len(found) == 3                                      # random, not one fixed answer


def test_the_standard_recipe_is_the_issues_and_the_legacy_one_is_unchanged():
    standard = Recipe.named("standard", epochs=15)
    assert (standard.lr, standard.weight_decay, standard.augment, standard.label_smoothing, standard.epochs) == \
        (3e-3, 0.05, "crop-flip", 0.1, 15)
    assert Recipe() == RECIPES["legacy"]
    with pytest.raises(ConfigError, match="--recipe"):
        Recipe.named("fancy")


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    return str(synthetic_table(width=WIDTH).save(tmp_path_factory.mktemp("tables") / "synthetic.json"))


@pytest.fixture(scope="module")
def target(table_path):
    fastest, slowest = SuperkernelLatency(synthetic_table(width=WIDTH)).bounds_ms()
    return round(fastest + 0.5 * (slowest - fastest), 1)


def settings(table_path, target, out, **kw):
    return CompareSettings(**{**dict(table=table_path, target_ms=target, out=str(out), data="digits", seeds=2,
                                     budget_epochs=2, retrain_epochs=1, protocol_samples=2, train_subset=48,
                                     batch_size=16, steps_per_epoch=1, methods=("random",), recipe="standard",
                                     depth_matched=1, reference="mnasnet-b1"), **kw})


@pytest.fixture(scope="module")
def finished(tmp_path_factory, table_path, target):
    s = settings(table_path, target, tmp_path_factory.mktemp("cmp") / "out")
    return s, run_comparison(s)


def test_rows_for_the_depth_matched_protocol_and_the_reference(finished):
    s, report = finished
    rows = report["rows"]
    assert {(r["method"], r["seed"]) for r in rows} == {
        (m, seed) for m in ("random", "random-protocol", "mnasnet-b1", "depth-matched:random") for seed in (0, 1)}
    found = {r["seed"]: r for r in rows if r["method"] == "random"}
    for row in rows:
        assert 0 <= row["retrain_test_accuracy"] <= 1
        if row["method"] == "depth-matched:random":
            assert row["skipped_layers"] == found[row["seed"]]["skipped_layers"] == \
                skipped_layers(Architecture.from_string(get_space(width=WIDTH, resolution=32, num_classes=10),
                                                        row["matched_arch"]))
            assert 0.9 * s.target_ms <= row["predicted_ms"] <= s.target_ms
        if row["method"] == "mnasnet-b1":
            assert row["arch"] == REFERENCES["mnasnet-b1"] and row["test_accuracy"] is None
    assert list(report["methods"]) == ["random", "random-protocol", "mnasnet-b1", "depth-matched:random"]


def test_margins_over_every_yardstick_are_in_its_standard_deviations(finished):
    _, report = finished
    methods = report["methods"]
    ours = methods["random"]["retrain_test_accuracy"][0]
    for key, name in (("protocol", "random-protocol"), ("depth_matched", "depth-matched:random"),
                      ("reference", "mnasnet-b1")):
        mean, std = methods[name]["retrain_test_accuracy"]
        if std > 0:
            assert methods["random"][f"margin_over_{key}_std"] == pytest.approx((ours - mean) / std)
        else:
            assert f"margin_over_{key}_std" not in methods["random"]
    table = (Path(finished[0].out) / "results.md").read_text()
    assert "standard recipe" in table and "skipped layers" in table and "repairs" in table


def test_a_rerun_keeps_every_finished_cell_and_more_depth_matched_samples_add_cells(finished, table_path, target,
                                                                                    monkeypatch):
    s, report = finished
    calls = []
    real = compare_run.retrain
    monkeypatch.setattr(compare_run, "retrain", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(compare_run, "_search_cell", lambda *a, **k: pytest.fail("a finished search ran again"))
    again = run_comparison(settings(table_path, target, s.out))
    assert not calls and len(again["rows"]) == len(report["rows"])
    more = run_comparison(settings(table_path, target, s.out, depth_matched=2))
    assert len(calls) == 2 and len(more["rows"]) == len(report["rows"]) + 2


def test_an_old_comparison_folder_resumes_as_legacy_without_yardsticks(tmp_path, table_path, target):
    import json

    s = settings(table_path, target, tmp_path / "old", recipe="legacy", depth_matched=0, reference=None,
                 protocol_samples=0, retrain_epochs=0, seeds=1)
    stored = s.to_dict()
    for key in ("recipe", "depth_matched", "reference"):
        stored.pop(key)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "compare.json").write_text(json.dumps(stored))
    compare_run._prepare(s)                                      # no "other settings" error
    with pytest.raises(ConfigError, match="recipe"):
        compare_run._prepare(settings(table_path, target, tmp_path / "old", recipe="standard", depth_matched=0,
                                      reference=None, protocol_samples=0, retrain_epochs=0, seeds=1))
