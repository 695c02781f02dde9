"""The reference search space as data."""

import pytest

from mobilekit.errors import SpaceError
from mobilekit.space import SKIP, LayerType, get_space
from mobilekit.space.search_space import round_channels


def test_reference_space_has_22_positions_with_mnasnet_filters():
    space = get_space()
    assert len(space.positions) == 22
    assert [p.out_channels for p in space.positions] == [16] + [24] * 4 + [40] * 4 + [80] * 4 + [96] * 4 + [192] * 4 + [320]
    assert space.stem_channels == 32 and space.head_channels == 1280


def test_first_layer_of_each_stage_downsamples_except_the_96_stage():
    strides = [p.stride for p in get_space().positions]
    assert [i for i, s in enumerate(strides) if s == 2] == [1, 5, 9, 17]


def test_input_shapes_follow_the_strides_at_224():
    space = get_space()
    assert space.positions[0].in_hw == (112, 112)
    assert space.positions[1].in_hw == (112, 112) and space.positions[1].out_hw == (56, 56)
    assert space.positions[21].in_hw == (7, 7)


def test_searchable_positions_have_12_types_plus_skip_where_allowed():
    space = get_space()
    searchable = space.searchable_positions
    assert [p.index for p in searchable] == list(range(1, 21))
    with_skip = [p.index for p in searchable if SKIP in p.candidates]
    assert with_skip == [2, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15, 16, 18, 19, 20]
    assert all(len(p.candidates) == (13 if p.index in with_skip else 12) for p in searchable)


def test_fixed_positions_have_one_type():
    space = get_space()
    assert space.positions[0].candidates == (LayerType(3, 1, 0.0),)
    assert space.positions[21].candidates == (LayerType(3, 6, 0.0),)


def test_width_multiplier_rounds_channels_to_multiples_of_8():
    space = get_space(width=0.5)
    assert [p.out_channels for p in space.positions[:2]] == [8, 16]
    assert round_channels(24 * 0.75) == 24 and round_channels(40 * 1.4) == 56


def test_resolution_changes_every_input_shape():
    space = get_space(resolution=32)
    assert space.positions[0].in_hw == (16, 16)
    assert space.positions[-1].out_hw == (1, 1)


def test_other_space_is_a_new_object_not_new_code():
    space = get_space("mnasnet-k357")
    assert {t.kernel for t in space.positions[1].candidates} == {3, 5, 7}


def test_unknown_space_name_lists_known_spaces():
    with pytest.raises(SpaceError, match="known spaces are .*spnas-mnasnet"):
        get_space("resnet")


@pytest.mark.parametrize("kwargs,field", [({"width": 0.0}, "width"), ({"resolution": 8}, "resolution"),
                                          ({"num_classes": 1}, "num_classes")])
def test_bad_space_parameters_are_rejected(kwargs, field):
    with pytest.raises(SpaceError, match=field):
        get_space(**kwargs)
