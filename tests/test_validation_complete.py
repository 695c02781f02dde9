"""Every file format validated completely at load (issue 23, principle 5): a mutated latency table, predictor or
compare cell is exit 2 and one line naming the file and field, and the file is byte-identical afterwards; plus the
float parity limit relative to the logit scale (the DiffAutoML ONNX case)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from cli_helpers import PIXEL1_TABLE, assert_one_line_failure, fitted_predictor_path, run_cli

ARCH = ",".join(["ir_k3_e3"] * 20)


def _write(tmp_path: Path, name: str, data: Any) -> tuple[Path, bytes]:
    path = tmp_path / name
    text = json.dumps(data, allow_nan=True)
    path.write_text(text)
    return path, path.read_bytes()


# ---- latency tables ---------------------------------------------------------------------------------------------
def _table() -> dict:
    return json.loads(PIXEL1_TABLE.read_text())


def _set(path: tuple, value: Any) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


TABLE_MUTATIONS = {
    "unknown type": (lambda d: d["entries"]["3"].__setitem__("ir_k9_e6", {"median_ms": 1.0}),
                     ["entries.3.ir_k9_e6", "not a candidate"]),
    "not a layer type": (lambda d: d["entries"]["3"].__setitem__("conv_k3", {"median_ms": 1.0}),
                         ["entries.3.conv_k3", "not a layer type"]),
    "skip at a stride-2 position": (lambda d: d["entries"]["1"].__setitem__("skip", {"median_ms": 0.1}),
                                    ["entries.1.skip", "not a candidate at position 1"]),
    "position outside the space": (lambda d: d["entries"].__setitem__("40", {"ir_k3_e3": {"median_ms": 1.0}}),
                                   ["entries key '40'", "positions 0 to 21"]),
    "non-canonical spelling": (lambda d: d["entries"]["3"].__setitem__("IR_K3_E3", {"median_ms": 1.0}),
                               ["entries.3.IR_K3_E3", "'ir_k3_e3'"]),
    "absurd latency": (_set(("entries", "3", "ir_k3_e3", "median_ms"), 1e9),
                       ["entries.3.ir_k3_e3.median_ms", "<= 60000"]),
    "NaN latency": (_set(("entries", "3", "ir_k3_e3", "median_ms"), float("nan")),
                    ["entries.3.ir_k3_e3.median_ms", "finite"]),
    "infinite fixed part": (_set(("fixed", "stem_head_fixed_layers", "median_ms"), float("inf")),
                            ["fixed.stem_head_fixed_layers.median_ms"]),
    "covers a position the space lacks": (_set(("fixed", "stem_head_fixed_layers", "covers"), ["stem", 99]),
                                          ["fixed.stem_head_fixed_layers.covers", "99"]),
    "unknown space": (_set(("space", "name"), "resnet"), ["field 'space'", "resnet"]),
}


@pytest.mark.parametrize("case", sorted(TABLE_MUTATIONS))
def test_a_mutated_table_is_one_line_and_left_as_it_was(tmp_path, case):
    mutate, needles = TABLE_MUTATIONS[case]
    data = _table()
    mutate(data)
    path, before = _write(tmp_path, "table.json", data)
    code, out, err = run_cli(["latency", "predict", "--table", str(path), ARCH])
    assert_one_line_failure(code, err, str(path), *needles)
    assert out == "" and path.read_bytes() == before


def test_every_shipped_table_passes_the_complete_check():
    from mobilekit.latency_table import LatencyTable

    for path in sorted(PIXEL1_TABLE.parent.glob("*.json")):
        table = LatencyTable.load(path)
        assert table.entries, path


# ---- predictors -------------------------------------------------------------------------------------------------
def _tree_predictor(kind: str) -> dict:
    from mobilekit.latency.regression import LayerLatencyRegressor
    from mobilekit.latency_table import LatencyTable

    model = LayerLatencyRegressor(model=kind, cv=1, n_estimators=4).fit_table(LatencyTable.load(PIXEL1_TABLE))
    return model.to_dict()


@pytest.fixture(scope="module")
def gbr_predictor() -> dict:
    return _tree_predictor("opcost+gbr")


def _first_split(tree: dict) -> int:
    return next(i for i, left in enumerate(tree["left"]) if left != -1)


def _tree_mutation(name: str) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        tree = data["params"]["gbr"]["trees"][0]
        node = _first_split(tree)
        if name == "child out of range":
            tree["left"][node] = len(tree["left"]) + 5
        elif name == "cycle":
            tree["right"][node] = node
        elif name == "feature index":
            tree["feature"][node] = 99
        elif name == "NaN threshold":
            tree["threshold"][node] = float("nan")
        elif name == "lists of other lengths":
            tree["value"].append(0.0)
        elif name == "no trees":
            data["params"]["gbr"]["trees"] = []
        elif name == "coefficients":
            data["params"]["opcost"]["coef"] = data["params"]["opcost"]["coef"][:-1]
        elif name == "part of the model missing":
            del data["params"]["gbr"]
    return mutate


TREE_CASES = {"child out of range": "params.gbr.trees.0", "cycle": "no cycles", "feature index": "feature",
              "NaN threshold": "threshold", "lists of other lengths": "equal", "no trees": "params.gbr.trees",
              "coefficients": "params.opcost.coef", "part of the model missing": "params.gbr"}


@pytest.mark.parametrize("case", sorted(TREE_CASES))
def test_a_mutated_predictor_is_one_line_and_left_as_it_was(tmp_path, gbr_predictor, case):
    data = copy.deepcopy(gbr_predictor)
    _tree_mutation(case)(data)
    path, before = _write(tmp_path, "predictor.json", data)
    code, out, err = run_cli(["latency", "predict", "--table", str(PIXEL1_TABLE), "--predictor", str(path), ARCH])
    assert_one_line_failure(code, err, str(path), TREE_CASES[case], "re-fit")
    assert path.read_bytes() == before


@pytest.mark.parametrize("kind", ["opcost", "opcost+gbr", "gbr", "rf", "ridge"])
def test_every_fitted_family_passes_the_structure_check_and_predicts_as_before(kind):
    from mobilekit.latency.regression import LayerLatencyRegressor
    from mobilekit.latency_table import LatencyTable
    from mobilekit.space import Architecture

    table = LatencyTable.load(PIXEL1_TABLE)
    model = LayerLatencyRegressor(model=kind, cv=1, n_estimators=4).fit_table(table)
    again = LayerLatencyRegressor.from_dict(json.loads(json.dumps(model.to_dict())), "reloaded")
    arch = Architecture.from_string(table.search_space(), ARCH)
    assert again.predict_network(arch)[0] == pytest.approx(model.predict_network(arch)[0], rel=1e-12)


def test_the_ridge_predictor_of_the_cli_helpers_still_loads():
    code, out, err = run_cli(["latency", "predict", "--table", str(PIXEL1_TABLE), "--predictor",
                              str(fitted_predictor_path()), "--json", ARCH])
    assert code == 0, err
    assert json.loads(out)


def test_a_ridge_scale_of_zero_is_refused(tmp_path):
    data = json.loads(fitted_predictor_path().read_text())
    data["params"]["ridge"]["scale"][0] = 0.0
    path, before = _write(tmp_path, "predictor.json", data)
    code, _, err = run_cli(["latency", "predict", "--table", str(PIXEL1_TABLE), "--predictor", str(path), ARCH])
    assert_one_line_failure(code, err, "params.ridge.scale")
    assert path.read_bytes() == before


# ---- compare cells ----------------------------------------------------------------------------------------------
def _cell() -> dict:
    return {"kind": "search", "method": "random", "seed": 0, "arch": ARCH, "predicted_ms": 70.5, "derived_ms": 70.5,
            "within_window": True, "repairs": 0, "skipped_layers": 0, "within_window_without_repair": True,
            "test_accuracy": 0.81, "val_accuracy": 0.8, "retrain_test_accuracy": None, "retrain_val_accuracy": None,
            "retrain_s": None, "search_s": 1.5, "final_train_s": 2.0, "total_s": 3.5, "cell_wall_s": 3.6,
            "searched_lr": None, "searched_weight_decay": None}


CELL_MUTATIONS = {
    "NaN accuracy": ("test_accuracy", float("nan"), "finite"),
    "accuracy as a percentage": ("test_accuracy", 81.0, "<= 1"),
    "negative latency": ("predicted_ms", -1.0, "non-negative"),
    "latency as text": ("predicted_ms", "70", "a number"),
    "seed as a float": ("seed", 1.5, "integer"),
    "flag as a string": ("within_window", "yes", "true or false"),
    "unknown kind": ("kind", "guess", "kind"),
    "empty architecture": ("arch", "", "non-empty"),
}


@pytest.mark.parametrize("case", sorted(CELL_MUTATIONS))
def test_a_damaged_compare_cell_is_one_line_naming_it(tmp_path, case):
    from mobilekit.compare.run import _rows
    from mobilekit.errors import ConfigError

    key, value, needle = CELL_MUTATIONS[case]
    cells = tmp_path / "cells"
    cells.mkdir()
    (cells / "random-s1.json").write_text(json.dumps(_cell()))
    path, before = _write(cells, "random-s0.json", dict(_cell(), **{key: value}))
    with pytest.raises(ConfigError) as caught:
        _rows(cells, [("random", 0), ("random", 1)])
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and key in message and needle in message, message
    assert "move it out of cells/" in message
    assert path.read_bytes() == before


def test_a_compare_cell_that_is_not_json_is_one_line(tmp_path):
    from mobilekit.compare.run import _rows
    from mobilekit.errors import ConfigError

    cells = tmp_path / "cells"
    cells.mkdir()
    (cells / "random-s0.json").write_text('{"method": "random", ')
    with pytest.raises(ConfigError, match="not valid JSON.*move it out of cells/"):
        _rows(cells, [("random", 0)])


def test_every_kind_of_cell_compare_writes_is_valid():
    from mobilekit.validation.cell import validate_cell_data

    protocol = dict(_cell(), kind="protocol", method="random-protocol", test_accuracy=None, val_accuracy=None,
                    retrain_test_accuracy=0.5, retrain_val_accuracy=0.4, retrain_s=3.0, search_epochs_nominal=0.0,
                    final_epochs=2, images_epochs=2.0, rule="fixed recipe only")
    depth = dict(protocol, kind="depth-matched", sample=3, matched_arch=ARCH)
    for row in (_cell(), protocol, depth, dict(protocol, kind="reference", method="mnasnet-b1")):
        assert validate_cell_data(row, "cell").method == row["method"]


# ---- export parity relative to the logit scale ------------------------------------------------------------------
class _Exported:
    """Stands in for a runtime: returns fixed logits whatever the input."""

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits

    def run(self, inputs: np.ndarray) -> np.ndarray:
        return self.logits


def test_the_float_parity_limit_follows_the_logit_scale():
    from mobilekit.export.verify import check_parity, float_limit

    rng = np.random.default_rng(0)
    samples = np.zeros((4, 3, 8, 8), dtype=np.float32)
    large = (rng.standard_normal((4, 10)) * 4).astype(np.float32)
    large[0, 0] = 10.0
    # the DiffAutoML digits case: logits ~10, a float32 runtime differing by 7.1e-4 from PyTorch
    near = large + np.float32(7.1e-4) * np.sign(rng.standard_normal(large.shape)).astype(np.float32)
    result = check_parity("onnx", _Exported(near), large, samples)
    assert result.passed and result.limit == pytest.approx(1e-4 * float(np.abs(large).max()))
    assert "limit 1.0e-03" in result.line()
    # a faulty export (logits of another network) still fails at that scale
    assert not check_parity("onnx", _Exported(large[::-1].copy()), large, samples).passed
    # small logits keep the absolute 1e-4
    small = large / 100
    assert float_limit(small) == pytest.approx(1e-4)
    assert not check_parity("onnx", _Exported(small + 2e-4), small, samples).passed
    assert check_parity("onnx", _Exported(small + 5e-5), small, samples).passed
    assert not check_parity("onnx", _Exported(np.full_like(large, np.nan)), large, samples).passed


# ---- recipes ----------------------------------------------------------------------------------------------------
RECIPE_CASES = {
    "unknown key of a method that does not run": ("[search.autohas]\nbogus_key = 3\n",
                                                  ["[search.autohas]", "unknown key 'bogus_key'"]),
    "bad value of a method that does not run": ("[search.tnas-os]\nsampler_fit_steps = -5\n",
                                                ["[search.tnas-os]", "sampler_fit_steps must be >= 1"]),
    "section outside [search]": ("[serach]\nepochs = 2\n", ["section [serach] is outside [search]"]),
    "section naming no method": ("[search.nosuch]\nx = 1\n", ["[search.nosuch] names no method"]),
}


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
def test_a_recipe_with_a_stray_section_or_key_is_one_line_and_nothing_runs(tmp_path, case):
    extra, needles = RECIPE_CASES[case]
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[search]\nmethod = "random"\ntable = "{PIXEL1_TABLE}"\ntarget_ms = 80\nepochs = 1\n'
                      f'final_epochs = 0\n\n[search.random]\nrandom_samples = 2\n\n{extra}')
    before = recipe.read_bytes()
    code, _, err = run_cli(["search", "--config", str(recipe), "--out", str(tmp_path / "run")])
    assert_one_line_failure(code, err, str(recipe), *needles)
    assert recipe.read_bytes() == before and not (tmp_path / "run").exists()


def test_the_section_of_a_method_that_does_not_run_is_checked_but_not_applied(tmp_path):
    from mobilekit.search.config import make_config

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[search]\nmethod = "random"\ntable = "{PIXEL1_TABLE}"\ntarget_ms = 80\n\n'
                      '[search.random]\nrandom_samples = 3\n\n[search.tnas-os]\nsampler_fit_steps = 7\n')
    config = make_config(recipe, out=str(tmp_path / "run"))
    assert config.method == "random" and config.method_options.random_samples == 3
    assert not hasattr(config.method_options, "sampler_fit_steps")
