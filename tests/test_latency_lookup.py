"""Table lookup: fixed parts + the entry of each chosen type, as the published Pixel 1 model adds them."""

import json
from pathlib import Path

import pytest

from mobilekit.errors import TableError
from mobilekit.latency import LookupPredictor
from mobilekit.latency_table import LatencyTable
from mobilekit.space import Architecture, get_space

PIXEL1 = Path(__file__).parents[1] / "latency_tables" / "pixel1-spnas.json"
ARCH = ("ir_k3_e6,ir_k3_e3,skip,ir_k5_e6,ir_k5_e3,skip,ir_k3_e6,skip,ir_k5_e6,ir_k3_e3,"
        "skip,skip,ir_k5_e3,ir_k3_e6,ir_k5_e6,skip,ir_k3_e3,ir_k5_e6,skip,ir_k5_e3")


def test_lookup_equals_hand_sum_on_pixel1_table():
    raw = json.loads(PIXEL1.read_text())
    names = ARCH.split(",")
    hand = 19.6 + sum(raw["entries"][str(i + 1)][name]["median_ms"] for i, name in enumerate(names))
    arch = Architecture.from_string(get_space(), ARCH)
    predicted = LookupPredictor().fit(LatencyTable.load(PIXEL1)).predict([arch])
    assert predicted.shape == (1,)
    assert predicted[0] == pytest.approx(hand, abs=1e-9)


def test_skip_costs_the_table_entry_and_layers_list_it():
    arch = Architecture.from_string(get_space(), ARCH)
    layers = LookupPredictor().fit(LatencyTable.load(PIXEL1)).predict_layers(arch)
    assert [index for index, _, _ in layers] == list(range(1, 21))      # 0 and 21 are in the fixed entry
    assert {ms for _, name, ms in layers if name == "skip"} == {0.7}


def test_skip_without_entry_costs_zero():
    table = LatencyTable.load(PIXEL1)
    for position in table.entries.values():
        position.pop("skip", None)
    arch = Architecture.from_string(get_space(), ARCH)
    with_skip = LookupPredictor().fit(LatencyTable.load(PIXEL1)).predict(arch)[0]
    without = LookupPredictor().fit(table).predict(arch)[0]
    assert with_skip - without == pytest.approx(0.7 * ARCH.split(",").count("skip"))


def test_unmeasured_se_entry_is_a_table_error():
    arch = Architecture.from_string(get_space(), ARCH.replace("ir_k3_e6", "ir_k3_e6_se0.25", 1))
    with pytest.raises(TableError, match="not measured"):
        LookupPredictor().fit(LatencyTable.load(PIXEL1)).predict(arch)


def test_architecture_of_another_width_is_rejected():
    arch = Architecture.from_string(get_space(width=0.75), ARCH)
    with pytest.raises(TableError, match="width 0.75"):
        LookupPredictor().fit(LatencyTable.load(PIXEL1)).predict(arch)
