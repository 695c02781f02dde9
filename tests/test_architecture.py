"""Architectures: block strings, JSON, validation errors."""

import json
import random

import pytest

from mobilekit.errors import ArchitectureError
from mobilekit.space import Architecture, LayerType, get_space, parse_layer_type, read_architecture, \
    reference_architecture, sample_architecture


@pytest.fixture(scope="module")
def space():
    return get_space()


def twenty(*overrides: tuple[int, str]) -> list[str]:
    layers = ["ir_k3_e6"] * 20
    for searchable_index, name in overrides:
        layers[searchable_index] = name
    return layers


@pytest.mark.parametrize("text,expected", [
    ("ir_k5_e6_se0.25", LayerType(5, 6, 0.25)),
    ("ir_k3_e3", LayerType(3, 3, 0.0)),
    ("IR_K3_E6_SE0.5", LayerType(3, 6, 0.5)),
    ("skip", LayerType()),
])
def test_block_strings_decode(text, expected):
    assert parse_layer_type(text) == expected


def test_block_string_round_trip_of_every_type(space):
    for layer_type in space.all_layer_types:
        assert parse_layer_type(layer_type.name) == layer_type


@pytest.mark.parametrize("text", ["conv3x3", "ir_k3", "ir_k4_e6", "ir_k3_e6_x2", "ir_k3_e6_se1.5"])
def test_unreadable_block_strings_are_rejected(text):
    with pytest.raises(ArchitectureError, match="ir_k"):
        parse_layer_type(text)


def test_string_round_trip(space):
    arch = sample_architecture(space, random.Random(3))
    assert Architecture.from_string(space, arch.to_string()) == arch
    assert len(arch.to_string().split(",")) == 20


def test_string_with_all_22_positions_is_accepted(space):
    arch = reference_architecture(space)
    full = ",".join(c.name for c in arch.choices)
    assert Architecture.from_string(space, full) == arch


def test_json_round_trip(space, tmp_path):
    arch = sample_architecture(space, random.Random(7))
    path = arch.save(tmp_path / "arch.json")
    assert Architecture.load(path) == arch
    assert json.loads(path.read_text())["block_string"] == arch.to_string()


def test_read_architecture_accepts_file_or_string(space, tmp_path):
    arch = reference_architecture(space)
    assert read_architecture(str(arch.save(tmp_path / "a.json"))) == arch
    assert read_architecture(arch.to_string()) == arch


def test_wrong_layer_count_names_both_counts(space):
    with pytest.raises(ArchitectureError, match="19 layers.*needs 20.*or 22"):
        Architecture.from_string(space, ",".join(["ir_k3_e6"] * 19))


def test_unknown_type_is_rejected_with_the_allowed_values(space):
    with pytest.raises(ArchitectureError, match="not allowed at layer 3; allowed: skip, ir_k3_e3"):
        Architecture.from_string(space, ",".join(twenty((2, "ir_k7_e6"))))


def test_skip_is_rejected_at_stride_2(space):
    with pytest.raises(ArchitectureError, match="skip is not allowed at layer 5 \\(stride 2"):
        Architecture.from_string(space, ",".join(twenty((4, "skip"))))


def test_skip_is_rejected_where_channels_change_at_stride_1(space):
    with pytest.raises(ArchitectureError, match="skip is not allowed at layer 13 \\(stride 1, 80->96"):
        Architecture.from_string(space, ",".join(twenty((12, "skip"))))


def test_se_ratio_outside_the_space_names_the_layer_and_ratios(space):
    with pytest.raises(ArchitectureError, match="SE ratio 0.125 at layer 1 is not in the space \\(allowed: \\[0.0, 0.25, 0.5\\]\\)"):
        Architecture.from_string(space, ",".join(twenty((0, "ir_k3_e6_se0.125"))))


def test_fixed_layer_cannot_be_changed(space):
    layers = ["ir_k5_e6"] + twenty() + ["ir_k3_e6"]
    with pytest.raises(ArchitectureError, match="layer 0 is fixed to ir_k3_e1"):
        Architecture.from_string(space, ",".join(layers))


def test_bad_json_file_names_the_file(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text("{not json")
    with pytest.raises(ArchitectureError, match="arch.json: not valid JSON"):
        Architecture.load(path)
    path.write_text(json.dumps({"layers": "ir_k3_e6"}))
    with pytest.raises(ArchitectureError, match="'layers' must be a list"):
        Architecture.load(path)


def test_decoded_layers_carry_shapes(space):
    layers = reference_architecture(space).layers()
    fourth = layers[4]
    assert (fourth.in_channels, fourth.out_channels, fourth.stride, fourth.in_hw) == (24, 24, 1, (56, 56))
    assert fourth.op == LayerType(5, 3, 0.25) and fourth.mid_channels == 72 and fourth.se_channels == 6
    assert fourth.has_residual and not layers[1].has_residual
