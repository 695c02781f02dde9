"""The layer regression: held-out error, JSON persistence, filling unmeasured entries, other spaces."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from mobilekit.errors import ConfigError, TableError
from mobilekit.latency import LayerLatencyRegressor, LookupPredictor, fit_network_correction
from mobilekit.latency.regression import MODEL_KINDS, _compile_trees, _dump_tree, _predict_trees
from mobilekit.latency_table import LatencyTable
from mobilekit.space import Architecture, LayerSpec, get_space, reference_architecture, sample_architecture

PIXEL1 = Path(__file__).parents[1] / "latency_tables" / "pixel1-spnas.json"


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return LatencyTable.load(PIXEL1)


@pytest.fixture(scope="module")
def fitted(table) -> LayerLatencyRegressor:
    return LayerLatencyRegressor().fit_table(table)


def plain_archs(space, count, seed=0):
    rng = random.Random(seed)
    allow = {t for t in space.all_layer_types if not t.se_ratio}
    return [sample_architecture(space, rng, allow) for _ in range(count)]


def test_heldout_error_is_reported_for_every_candidate(fitted):
    assert set(fitted.cv_scores_) == set(MODEL_KINDS)
    assert fitted.model_ == min(MODEL_KINDS, key=lambda k: fitted.cv_scores_[k]["mape_pct"])
    assert fitted.heldout_ == fitted.cv_scores_[fitted.model_]
    assert fitted.heldout_["n"] == fitted.n_train_ == 80
    assert 0 < fitted.heldout_["rmse_ms"] < 1.0
    assert 0 < fitted.heldout_["mape_pct"] < 8.0             # 5.2 % when written (layer shapes held out)


def test_json_round_trip_gives_identical_predictions(fitted, table, tmp_path):
    path = fitted.save(tmp_path / "predictor.json")
    json.loads(path.read_text())                      # plain JSON, no pickle
    loaded = LayerLatencyRegressor.load(path)
    archs = plain_archs(table.search_space(), 20) + [reference_architecture(table.search_space())]
    assert np.array_equal(loaded.predict_network(archs), fitted.predict_network(archs))
    layers = [LayerSpec(p, t) for p in table.search_space().positions for t in p.candidates]
    assert np.array_equal(loaded.predict(layers), fitted.predict(layers))
    assert loaded.model_ == fitted.model_ and loaded.heldout_ == fitted.heldout_


@pytest.mark.parametrize("kind", ["gbr", "rf", "ridge", "opcost"])
def test_every_family_round_trips(table, tmp_path, kind):
    model = LayerLatencyRegressor(model=kind, cv=0, n_estimators=20).fit_table(table)
    loaded = LayerLatencyRegressor.load(model.save(tmp_path / f"{kind}.json"))
    layers = [LayerSpec(p, t) for p in table.search_space().positions for t in p.candidates]
    assert np.array_equal(loaded.predict(layers), model.predict(layers))


def test_tree_arrays_predict_what_scikit_learn_predicts():
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 4)), rng.normal(size=200)
    model = GradientBoostingRegressor(n_estimators=30, max_depth=3).fit(x, y)
    ensemble = _compile_trees({"combine": "sum", "init": float(model.init_.constant_.ravel()[0]),
                               "learning_rate": model.learning_rate,
                               "trees": [_dump_tree(e.tree_) for e in model.estimators_[:, 0]]})
    np.testing.assert_allclose(_predict_trees(ensemble, x), model.predict(x), rtol=1e-12, atol=1e-12)


def test_regression_agrees_with_lookup_on_measured_networks(fitted, table):
    archs = plain_archs(table.search_space(), 50)
    lookup = LookupPredictor().fit(table).predict(archs)
    error = np.abs(fitted.predict_network(archs) - lookup) / lookup
    assert error.mean() < 0.02


def test_fill_table_fills_se_entries(fitted, table):
    filled = fitted.fill_table(table)
    entry = filled.entry(3, "ir_k5_e6_se0.25")
    assert entry["measured"] is False and entry["note"] == "regression"
    assert entry["median_ms"] > 0
    assert table.entry(3, "ir_k5_e6_se0.25")["median_ms"] is None           # the input is left alone
    assert filled.entry(3, "ir_k5_e6") == table.entry(3, "ir_k5_e6")       # measured entries kept
    missing = [(i, n) for i, n, e in filled.iter_entries() if e["median_ms"] is None]
    assert missing == []
    se_arch = Architecture.from_string(table.search_space(), ",".join(["ir_k3_e6_se0.5"] * 20))
    assert filled.lookup_ms(se_arch) > 0


def test_filled_se_entry_is_anchored_to_the_measured_plain_type(fitted, table):
    filled = fitted.fill_table(table, anchor=True)
    for position in (2, 12, 18):
        plain = table.latency_ms(position, "ir_k3_e6")
        se = filled.latency_ms(position, "ir_k3_e6_se0.25")
        assert plain * 0.98 <= se <= plain * 1.5
        assert filled.entry(position, "ir_k3_e6_se0.25")["anchor"] == "ir_k3_e6"


def test_refit_ignores_entries_filled_by_regression(fitted, table):
    refit = LayerLatencyRegressor(model="opcost", cv=0).fit_table(fitted.fill_table(table))
    assert refit.n_train_ == 80


def test_predicts_other_widths_and_resolutions(fitted, table):
    arch = plain_archs(table.search_space(), 1)[0]
    full = fitted.predict_network(arch)[0]
    narrow = fitted.predict_network(arch.with_space(get_space(width=0.5)))[0]
    small = fitted.predict_network(arch.with_space(get_space(resolution=160)))[0]
    assert 0.2 * full < narrow < full
    assert 0.3 * full < small < full
    assert fitted.fixed_ms(get_space(resolution=160)) < fitted.fixed_ms(get_space()) == pytest.approx(19.6)


def test_network_correction_recovers_scale_and_overhead(fitted, table):
    model = LayerLatencyRegressor.from_dict(fitted.to_dict())
    archs = plain_archs(table.search_space(), 30, seed=1)
    base = model.predict_network(archs, corrected=False)
    model.fit_network(archs, 1.06 * base + 2.0)
    assert model.network_scale_ == pytest.approx(1.06, rel=1e-6)
    assert model.network_overhead_ms_ == pytest.approx(2.0, abs=1e-4)
    np.testing.assert_allclose(model.predict_network(archs), 1.06 * base + 2.0)
    assert fit_network_correction([10.0], [11.0]) == pytest.approx((1.1, 0.0))


def test_fit_table_needs_measured_entries(table):
    empty = LatencyTable(space=table.space, entries={1: {"ir_k3_e3": {"median_ms": 1.0}}})
    with pytest.raises(TableError, match="only 1 measured"):
        LayerLatencyRegressor().fit_table(empty)


def test_whole_network_prediction_needs_a_table_fit(table):
    space = table.search_space()
    layers = [LayerSpec(p, t) for p in space.positions[1:10] for t in p.candidates if not t.se_ratio and not t.is_skip]
    model = LayerLatencyRegressor(model="opcost", cv=0).fit(layers, np.linspace(1, 5, len(layers)))
    with pytest.raises(TableError, match="fit_table"):
        model.predict_network(reference_architecture(space))


def test_unknown_model_family_is_rejected(table):
    with pytest.raises(ValueError, match="unknown model 'xgb'"):
        LayerLatencyRegressor(model="xgb").fit_table(table)


def test_malformed_predictor_file_is_a_config_error(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"format": "something-else"}')
    with pytest.raises(ConfigError, match="not a latency predictor"):
        LayerLatencyRegressor.load(path)
    with pytest.raises(ConfigError, match="no such predictor"):
        LayerLatencyRegressor.load(tmp_path / "missing.json")


def test_scikit_learn_clone_keeps_hyperparameters():
    from sklearn.base import clone

    model = LayerLatencyRegressor(model="gbr", n_estimators=10)
    assert clone(model).get_params() == model.get_params()


def test_small_errors_print_with_significant_digits():
    from mobilekit.latency.metrics import format_metrics_row, significant

    assert significant(0.000123) == "0.000123" and significant(0.0123) == "0.0123"
    assert significant(12.3456) == "12.346" and significant(0.0) == "0.000"
    row = format_metrics_row("lookup", {"rmse_ms": 0.00042, "mape_pct": 0.1, "max_ape_pct": 0.2, "bias_pct": 0.0,
                                        "within_5_pct": 100.0, "within_10_pct": 100.0})
    assert "0.000420" in row and " 0.000 " not in row
