"""The 14 augmentation operations of DiffAutoML Sec. 3.1 (mobilekit/data/augment_ops.py), each checked against
Pillow's ImageOps / ImageEnhance / affine transforms (the definitions AutoAugment-style policies were designed
with) on small 8-bit images, then the magnitude ranges and the batched application.

Tolerances, in 8-bit levels (1 level = 1/255):

- 0 (exact up to float32 rounding, 1e-3 level) for equalize, posterize, solarize and the geometric operations: both sides compute the same integer
  levels / pick the same source pixel (geometric parameters are chosen off the half-pixel ties where Pillow's floor
  and nearest-neighbour rounding would pick neighbouring pixels; a drawn magnitude hits such a tie with
  probability 0);
- 1 level for autocontrast and brightness: Pillow truncates the stretched / scaled level to an integer, we keep
  the float;
- 2 levels for colour, contrast and sharpness: Pillow also rounds the image it blends with (the grayscale, the
  mean luma, the smoothed image) to 8 bits, which moves the blend by at most 0.5 level x |1 - factor| <= 0.9
  level (1 level for the mean of rounded lumas), plus the final truncation (< 1 level).
"""

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from mobilekit.data import augment_ops as ops

SLACK = 1e-3        # levels: float32 rounding of k / 255 and of the arithmetic on it


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)                   # full range, not square
    narrow = (rng.random((16, 16, 3)) ** 2 * 180 + 40).astype(np.uint8)         # levels 40-220: stretchable
    yy, xx = np.mgrid[0:16, 0:16]
    ramp = np.stack([xx * 15, yy * 15, (xx + yy) * 7], -1).astype(np.uint8)     # smooth, distinct channels
    return [noise, narrow, ramp]


IMAGES = _images()


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def _max_error_levels(ours, pillow) -> float:
    """Largest |ours - Pillow| over the test images, in 8-bit levels."""
    worst = 0.0
    for image in IMAGES:
        reference = np.asarray(pillow(Image.fromarray(image))).astype(np.float64)
        out = ours(_tensor(image))[0].permute(1, 2, 0).numpy().astype(np.float64) * 255
        assert out.shape == reference.shape
        worst = max(worst, float(np.abs(out - reference).max()))
    return worst


def one(value) -> torch.Tensor:
    return torch.tensor([value])


def affine(coefficients):
    return lambda image: image.transform(image.size, Image.AFFINE, coefficients)


def test_autocontrast_matches_pillow():
    assert _max_error_levels(ops.autocontrast, ImageOps.autocontrast) <= 1 + SLACK


def test_autocontrast_leaves_a_constant_channel_alone():
    x = torch.full((1, 3, 4, 4), 0.3)
    assert torch.equal(ops.autocontrast(x), x)


def test_equalize_matches_pillow_exactly():
    assert _max_error_levels(ops.equalize, ImageOps.equalize) <= SLACK


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_posterize_matches_pillow_exactly(bits):
    assert _max_error_levels(lambda x: ops.posterize(x, one(bits)), lambda i: ImageOps.posterize(i, bits)) <= SLACK


@pytest.mark.parametrize("threshold", [0, 100, 200, 256])
def test_solarize_matches_pillow_exactly(threshold):
    assert _max_error_levels(lambda x: ops.solarize(x, one(threshold / 255)),
                             lambda i: ImageOps.solarize(i, threshold)) <= SLACK


@pytest.mark.parametrize("factor", [0.1, 0.6, 1.4, 1.9])
def test_brightness_matches_pillow(factor):
    assert _max_error_levels(lambda x: ops.brightness(x, one(factor)),
                             lambda i: ImageEnhance.Brightness(i).enhance(factor)) <= 1 + SLACK


@pytest.mark.parametrize("name", ["Color", "Contrast", "Sharpness"])
@pytest.mark.parametrize("factor", [0.1, 0.6, 1.4, 1.9])
def test_blending_enhancements_match_pillow(name, factor):
    ours = {"Color": ops.color, "Contrast": ops.contrast, "Sharpness": ops.sharpness}[name]
    enhancer = getattr(ImageEnhance, name)
    assert _max_error_levels(lambda x: ours(x, one(factor)), lambda i: enhancer(i).enhance(factor)) <= 2 + SLACK


@pytest.mark.parametrize("degrees", [-30.0, 13.0, 27.5])
def test_rotate_matches_pillow_exactly(degrees):
    assert _max_error_levels(lambda x: ops.rotate(x, one(degrees)), lambda i: i.rotate(degrees)) <= SLACK


@pytest.mark.parametrize("shear", [-0.3, 0.17, 0.3])
def test_shears_match_pillow_exactly(shear):
    assert _max_error_levels(lambda x: ops.shear_x(x, one(shear)), affine((1, shear, 0, 0, 1, 0))) <= SLACK
    assert _max_error_levels(lambda x: ops.shear_y(x, one(shear)), affine((1, 0, 0, shear, 1, 0))) <= SLACK


@pytest.mark.parametrize("pixels", [-3.2, 2.3, 4.0])
def test_translations_match_pillow_exactly(pixels):
    assert _max_error_levels(lambda x: ops.translate_x(x, one(pixels)), affine((1, 0, pixels, 0, 1, 0))) <= SLACK
    assert _max_error_levels(lambda x: ops.translate_y(x, one(pixels)), affine((1, 0, 0, 0, 1, pixels))) <= SLACK


def test_identity_returns_the_images():
    x = _tensor(IMAGES[0])
    assert torch.equal(ops.OPERATIONS["Identity"](x, one(7.0), one(1.0)), x)


# ---- magnitudes -------------------------------------------------------------------------------------------------------
def test_the_fourteen_operations_of_the_paper_are_there():
    assert set(ops.OPERATION_NAMES) == {"AutoContrast", "Equalize", "Rotate", "Posterize", "Solarize", "Color",
                                        "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX",
                                        "TranslateY", "Identity"}


def test_magnitudes_map_to_the_pba_ranges():
    m, plus, minus = torch.tensor([0.0, 5.0, 10.0]), torch.ones(3), -torch.ones(3)
    param = {name: op.parameter for name, op in ops.OPERATIONS.items()}
    assert param["Rotate"](m, minus, 32).tolist() == pytest.approx([0.0, -15.0, -30.0])
    assert param["ShearX"](m, plus, 32).tolist() == pytest.approx([0.0, 0.15, 0.3])
    assert param["TranslateY"](m, plus, 32).tolist() == pytest.approx([0.0, 5.0, 10.0])      # 10 of 32 pixels
    assert param["Posterize"](m, plus, 32).tolist() == [8, 6, 4]
    assert param["Solarize"](m, plus, 32).tolist() == pytest.approx([256 / 255, 128 / 255, 0.0])
    for name in ("Color", "Contrast", "Brightness", "Sharpness"):
        assert param[name](m, plus, 32).tolist() == pytest.approx([0.1, 1.0, 1.9])


@pytest.mark.parametrize("name", ["Color", "Contrast", "Brightness", "Sharpness", "Solarize", "Posterize", "Rotate",
                                  "ShearX", "TranslateY"])
def test_the_neutral_magnitude_leaves_the_image_unchanged(name):
    x = _tensor(IMAGES[2])
    neutral = 0.0 if name in ("Solarize", "Posterize", "Rotate", "ShearX", "TranslateY") else 5.0
    assert torch.allclose(ops.OPERATIONS[name](x, one(neutral), one(1.0)), x, atol=1e-6)


def test_a_batch_with_mixed_operations_equals_each_image_on_its_own():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(28, 3, 10, 10, generator=gen)
    chosen = torch.arange(28) % len(ops.OPERATION_NAMES)
    magnitude = torch.rand(28, generator=gen) * 10
    sign = torch.where(torch.rand(28, generator=gen) < 0.5, -1.0, 1.0)
    batched = ops.apply_operations(x, chosen, magnitude, sign)
    for i in range(28):
        alone = ops.OPERATIONS[ops.OPERATION_NAMES[chosen[i]]](x[i:i + 1], magnitude[i:i + 1], sign[i:i + 1])
        assert torch.allclose(batched[i:i + 1], alone, atol=1e-6), ops.OPERATION_NAMES[chosen[i]]
    assert batched.min() >= 0 and batched.max() <= 1 + SLACK


def test_normalisation_is_a_separate_step_around_the_operations():
    x = torch.rand(2, 3, 5, 5)
    mean, std = (0.2, 0.3, 0.4), (0.5, 0.6, 0.7)
    normalised = ops.normalize(x, mean, std)
    assert torch.allclose(normalised[:, 1], (x[:, 1] - 0.3) / 0.6)
    assert torch.allclose(ops.denormalize(normalised, mean, std), x, atol=1e-6)


def test_unknown_or_repeated_operation_names_are_refused():
    with pytest.raises(ValueError, match="ShearX"):
        ops.check_names(("Rotate", "Blur"))
    with pytest.raises(ValueError):
        ops.check_names(("Rotate", "Rotate"))
