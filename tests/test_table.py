"""The latency-table format and the shipped Pixel 1 table."""

import json
from pathlib import Path

import pytest

from mobilekit.errors import TableError
from mobilekit.profile.published import SPNAS_FIXED_MS, SPNAS_SKIP_MS, convert_spnas_pixel1
from mobilekit.latency_table import LatencyTable
from mobilekit.space import Architecture, LayerType, reference_architecture

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "latency_tables" / "pixel1-spnas.json"
PUBLISHED = REPO.parent / "shared" / "latency" / "pixel1_spnas_runtime_model.json"


@pytest.fixture(scope="module")
def pixel1() -> LatencyTable:
    return LatencyTable.load(SHIPPED)


def test_shipped_pixel1_table_is_the_conversion_of_the_published_file():
    assert PUBLISHED.is_file(), f"{PUBLISHED} is missing: the tests expect shared/ beside the repository"
    assert convert_spnas_pixel1(PUBLISHED).to_dict() == json.loads(SHIPPED.read_text())


def test_pixel1_entries_are_the_published_numbers(pixel1):
    published = json.loads(PUBLISHED.read_text())
    assert pixel1.latency_ms(1, LayerType(3, 3)) == published["1"]["0"]
    assert pixel1.latency_ms(20, LayerType(5, 6)) == published["20"]["3"]
    assert pixel1.latency_ms(7, LayerType(5, 3)) == published["7"]["2"]


def test_pixel1_carries_fixed_and_skip_costs_of_the_reference(pixel1):
    assert pixel1.fixed_ms() == SPNAS_FIXED_MS
    assert pixel1.fixed_positions() == {0, 21}
    assert pixel1.latency_ms(2, "skip") == SPNAS_SKIP_MS
    assert "Stamoulis" in pixel1.source


def test_pixel1_se_entries_are_marked_not_measured(pixel1):
    assert not pixel1.has(3, LayerType(3, 6, 0.25))
    with pytest.raises(TableError, match="layer 3 type ir_k3_e6_se0.25 was not measured"):
        pixel1.latency_ms(3, LayerType(3, 6, 0.25))


def test_lookup_of_an_architecture_is_fixed_plus_chosen_entries(pixel1):
    space = pixel1.search_space()
    arch = Architecture.from_string(space, ",".join(["ir_k3_e3"] + ["skip", "ir_k5_e6", "ir_k3_e6"] + ["ir_k3_e3"] * 16))
    expected = SPNAS_FIXED_MS + sum(pixel1.latency_ms(s.index, s.op) for s in arch.layers() if s.position.searchable)
    assert pixel1.lookup_ms(arch) == pytest.approx(expected)
    assert 41 < pixel1.lookup_ms(arch) < 131


def test_table_round_trips_through_json(pixel1, tmp_path):
    path = pixel1.save(tmp_path / "t.json")
    again = LatencyTable.load(path)
    assert again.to_dict() == pixel1.to_dict()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("content,message", [
    ("{", "not valid JSON"),
    ("[]", "expected a JSON object"),
    ('{"format": "other"}', "field 'format'"),
    ('{"format": "mobilekit-latency-table/1", "space": {"name": "spnas-mnasnet"}, "entries": {"x": {}}}',
     "entries key 'x'"),
    ('{"format": "mobilekit-latency-table/1", "space": {"name": "spnas-mnasnet"}, '
     '"entries": {"1": {"ir_k3_e3": {"median_ms": -1}}}}', "non-negative"),
])
def test_malformed_tables_name_the_file_and_field(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(TableError, match=message) as info:
        LatencyTable.load(path)
    assert "bad.json" in str(info.value)


def test_missing_table_says_how_to_make_one(tmp_path):
    with pytest.raises(TableError, match="mobilekit profile"):
        LatencyTable.load(tmp_path / "none.json")


def test_missing_entry_says_which_layer(pixel1):
    table = LatencyTable(space=pixel1.space, entries={}, fixed={})
    with pytest.raises(TableError, match="no entry for layer 0 type ir_k3_e1"):
        table.lookup_ms(reference_architecture(pixel1.search_space()))


def test_a_partial_table_names_both_ways_on_with_valid_commands(pixel1):
    """A missing or unmeasured entry is refused with the two routes (latency fit --filled-table, search
    --predictor), and both quoted commands parse with the real CLI parser."""
    import re
    import shlex

    from mobilekit.cli import build_parser

    position = min(pixel1.entries)
    name = next(iter(pixel1.entries[position]))
    unmeasured = {p: {n: dict(e) for n, e in types.items()} for p, types in pixel1.entries.items()}
    unmeasured[position][name]["median_ms"] = None
    for table in (LatencyTable(space=pixel1.space, entries={}, fixed={}),
                  LatencyTable(space=pixel1.space, entries=unmeasured, fixed=pixel1.fixed)):
        with pytest.raises(TableError) as caught:
            table.latency_ms(position, name)
        message = str(caught.value)
        assert "--filled-table" in message and "search" in message and "--predictor" in message
        commands = re.findall(r"'(mobilekit [^']+)'", message)
        assert len(commands) == 2
        for command in commands:
            build_parser().parse_args(shlex.split(command)[1:])
