"""Issue 22: a table's head measured with 1000 classes is re-priced for the network's class count."""

import numpy as np
import pytest

from mobilekit.errors import TableError
from mobilekit.latency.features import COST_TERMS, cost_matrix
from mobilekit.latency.head import classifier_terms, fixed_part_terms, head_correction
from mobilekit.latency_table import LatencyTable
from mobilekit.space import LayerSpec, get_space

# a device whose every layer costs exactly coef . cost terms (ms per MAC, per byte, per op)
TRUE_COEF = dict(macs_pointwise=2e-7, macs_depthwise=5e-7, depthwise_outputs=1e-7, conv_activation_bytes=1e-8,
                 elementwise_bytes=2e-8, param_bytes=4e-8, ops=0.01)


def cost_model_table(entries: int | None = None, covers=("stem", "head")) -> tuple[LatencyTable, np.ndarray]:
    space = get_space(width=0.5, resolution=96)
    coef = np.array([TRUE_COEF[name] for name in COST_TERMS])
    table = LatencyTable(space=space.describe(), device={"name": "cost-model"}, source="test")
    table.fixed["stem_head"] = {"median_ms": float(coef @ fixed_part_terms(space, covers, 1000)),
                                "covers": list(covers)}
    written = 0
    for position in space.positions:
        for layer_type in position.candidates:
            if entries is not None and written >= entries:
                value = None
            elif layer_type.is_skip:
                value = 0.001
            else:
                value = float(cost_matrix([LayerSpec(position, layer_type)])[0] @ coef)
                written += 1
            table.set_entry(position.index, layer_type, {"median_ms": value})
    return table, coef


@pytest.mark.parametrize("covers", [("stem", "head"), ("head",), ("stem", "head", 0, 21)])
def test_the_correction_recovers_the_head_of_a_device_that_follows_the_cost_model(covers):
    table, coef = cost_model_table(covers=covers)
    space = table.search_space()
    for classes in (3, 10, 2000):
        correction = head_correction(table, classes)
        exact = float(coef @ (classifier_terms(space.head_channels, classes)
                              - classifier_terms(space.head_channels, 1000)))
        assert correction.delta_ms == pytest.approx(exact, rel=0.02)
        assert (correction.delta_ms < 0) == (classes < 1000)
        assert correction.table_classes == 1000 and correction.num_classes == classes


def test_same_class_count_needs_no_correction():
    table, _ = cost_model_table()
    assert head_correction(table, 1000).delta_ms == 0.0


def test_a_table_too_small_to_fit_the_cost_model_is_refused_in_one_line():
    table, _ = cost_model_table(entries=2)
    assert head_correction(table, 1000).delta_ms == 0.0       # nothing to correct: no refusal
    with pytest.raises(TableError) as error:
        head_correction(table, 10)
    assert "--num-classes 10" in str(error.value) and "\n" not in str(error.value)


def test_shipped_tables_are_corrected_by_less_than_their_head_entry():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "latency_tables"
    for name in ("pixel1-spnas.json", "onnx-host.json"):
        correction = head_correction(LatencyTable.load(root / name), 10)
        assert -correction.head_ms < correction.delta_ms < 0
