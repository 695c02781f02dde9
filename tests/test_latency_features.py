"""Layer features: the documented vector, counted by hand on small layers."""

import numpy as np
import pytest

from mobilekit.latency.features import (
    COST_TERMS, FEATURE_NAMES, LayerShape, cost_matrix, feature_matrix, fixed_part_macs, layer_feature_dict,
    layer_features,
)
from mobilekit.space import LayerSpec, LayerType, get_space, parse_layer_type


def spec(position: int, name: str, **space_args) -> LayerSpec:
    space = get_space(**space_args)
    return LayerSpec(space.positions[position], parse_layer_type(name))


def test_feature_vector_follows_feature_names():
    vector = layer_features(spec(2, "ir_k5_e6"))
    assert vector.shape == (len(FEATURE_NAMES),)
    named = layer_feature_dict(spec(2, "ir_k5_e6"))
    assert [named[name] for name in FEATURE_NAMES] == vector.tolist()


def test_macs_of_an_mbconv_layer_by_hand():
    # position 2 of the reference space: 56x56, 24 -> 24 channels, stride 1; k5 e6 -> 144 mid channels
    f = layer_feature_dict(spec(2, "ir_k5_e6"))
    assert (f["in_h"], f["in_channels"], f["out_channels"], f["mid_channels"], f["kernel"]) == (56, 24, 24, 144, 5)
    assert f["macs_expand"] == 56 * 56 * 24 * 144
    assert f["macs_depthwise"] == 56 * 56 * 144 * 25
    assert f["macs_project"] == 56 * 56 * 144 * 24
    assert f["macs"] == f["macs_expand"] + f["macs_depthwise"] + f["macs_project"]
    assert f["flops"] == 2 * f["macs"]
    assert f["residual"] == 1.0 and f["se_channels"] == 0


def test_stride_2_layer_counts_output_resolution():
    f = layer_feature_dict(spec(1, "ir_k3_e3"))          # 112x112x16 -> 56x56x24
    assert (f["out_h"], f["out_w"], f["stride"], f["residual"]) == (56, 56, 2, 0.0)
    assert f["macs_depthwise"] == 56 * 56 * 48 * 9


def test_se_adds_macs_bytes_and_ops():
    plain = layer_feature_dict(spec(6, "ir_k3_e6"))
    se = layer_feature_dict(spec(6, "ir_k3_e6_se0.25"))
    assert se["se_channels"] == 10 and se["se_ratio"] == pytest.approx(0.25)   # 40 input channels x 0.25
    assert se["macs_se"] == 2 * 240 * 10
    assert se["elementwise_bytes"] - plain["elementwise_bytes"] == 4 * 3 * 28 * 28 * 240
    assert se["ops"] == plain["ops"] + 5
    assert se["param_bytes"] > plain["param_bytes"]


def test_skip_has_no_work():
    f = layer_feature_dict(spec(2, "skip"))
    assert f["is_skip"] == 1.0
    assert f["macs"] == f["activation_bytes"] == f["ops"] == 0.0


def test_width_and_resolution_change_the_counts():
    base = layer_feature_dict(spec(2, "ir_k3_e6"))
    small = layer_feature_dict(spec(2, "ir_k3_e6", resolution=160))
    assert small["in_h"] == 40 and small["macs"] < base["macs"]


def test_shape_with_explicit_mid_channels_and_hswish():
    shape = LayerShape(in_hw=(14, 14), in_channels=96, out_channels=136, kernel=5, expansion=4.0, mid_channels=384,
                       se_channels=96, hswish=True)
    f = layer_feature_dict(shape)
    assert f["mid_channels"] == 384 and f["hswish"] == 1.0 and f["residual"] == 0.0
    assert f["ops"] == 3 + 5 + 2


def test_matrices_stack_rows():
    layers = [spec(2, "ir_k3_e3"), spec(3, "ir_k5_e6_se0.5")]
    assert feature_matrix(layers).shape == (2, len(FEATURE_NAMES))
    assert cost_matrix(layers).shape == (2, len(COST_TERMS))
    assert np.all(cost_matrix(layers) >= 0)


def test_fixed_part_macs_counts_stem_head_and_positions():
    space = get_space()
    stem = 112 * 112 * 3 * 32 * 9
    head = 7 * 7 * 320 * 1280 + 1280 * 1000
    assert fixed_part_macs(space, ["stem"]) == stem
    assert fixed_part_macs(space, ["stem", "head"]) == stem + head
    first = layer_feature_dict(LayerSpec(space.positions[0], LayerType(3, 1)))["macs"]
    assert fixed_part_macs(space, ["stem", 0]) == stem + first
