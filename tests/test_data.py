"""Data loaders: bundled digits, CIFAR-10 python batches (restricted unpickling), image folders."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from mobilekit.data import load_dataset
from mobilekit.data.datasets import CIFAR10_TRAIN_FILES
from mobilekit.errors import DataError


# ---- digits -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", resolution=32, seed=0)


def test_digits_are_normalized_three_channel_images_at_the_resolution(digits):
    images, labels = digits.train.tensors
    assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.float32
    assert digits.num_classes == 10 and labels.max() == 9
    assert images.mean((0, 2, 3)).abs().max() < 1e-4
    assert torch.allclose(images.std((0, 2, 3)), torch.ones(3), atol=1e-3)
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797


def test_digits_split_is_fixed_by_the_seed_and_disjoint(digits):
    again = load_dataset("digits", resolution=32, seed=0)
    other = load_dataset("digits", resolution=32, seed=1)
    assert torch.equal(again.val.tensors[0], digits.val.tensors[0])
    assert not torch.equal(other.val.tensors[0], digits.val.tensors[0])
    train = {tuple(x.flatten()[::37].tolist()) for x in digits.train.tensors[0]}
    assert not any(tuple(x.flatten()[::37].tolist()) in train for x in digits.test.tensors[0][:50])


def test_unknown_data_spec_names_the_choices():
    with pytest.raises(DataError, match="digits, fashion-mnist, idx:DIR, cifar10:DIR or folder:DIR"):
        load_dataset("mnist", 32)


# ---- CIFAR-10 -----------------------------------------------------------------------------------------------------
def write_cifar(root, per_batch=6, seed=0, meta=True):
    """Tiny CIFAR-10 python batches in the original layout (bytes keys, uint8 (N, 3072) rows, list labels)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in CIFAR10_TRAIN_FILES + ("test_batch",):
        labels = [int(i % 10) for i in range(per_batch)]
        batch = {b"batch_label": name.encode(), b"labels": labels,
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    if meta:
        names = [f"class{i}".encode() for i in range(10)]
        (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    return root


def test_cifar10_batches_load_with_their_labels_and_class_names(tmp_path):
    root = write_cifar(tmp_path / "cifar-10-batches-py", per_batch=10)
    data = load_dataset(f"cifar10:{root}", resolution=32, seed=0)
    assert data.class_names == tuple(f"class{i}" for i in range(10))
    assert len(data.train) + len(data.val) == 50 and len(data.test) == 10
    assert data.test.tensors[1].tolist() == list(range(10))
    assert data.train.tensors[0].shape[1:] == (3, 32, 32)


def test_cifar10_pixels_keep_the_channel_major_layout(tmp_path):
    root = write_cifar(tmp_path / "c", per_batch=2)
    raw = pickle.loads((root / "test_batch").read_bytes())[b"data"][0].reshape(3, 32, 32) / 255.0
    data = load_dataset(f"cifar10:{root}", resolution=32)
    image = data.test.tensors[0][0] * torch.tensor(data.std)[:, None, None] + torch.tensor(data.mean)[:, None, None]
    assert np.allclose(image.numpy(), raw, atol=1e-5)


def test_cifar10_is_resized_to_the_training_resolution(tmp_path):
    root = write_cifar(tmp_path / "c", per_batch=2, meta=False)
    data = load_dataset(f"cifar10:{root}", resolution=48)
    assert data.test.tensors[0].shape == (2, 3, 48, 48)
    assert data.class_names[0] == "airplane"


def test_cifar10_pickle_with_a_foreign_global_is_rejected_without_running_it(tmp_path):
    root = write_cifar(tmp_path / "c", per_batch=2)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (root / "data_batch_2").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_2: not a CIFAR-10 python batch .*not allowed"):
        load_dataset(f"cifar10:{root}", 32)
    assert not marker.exists()


def test_cifar10_missing_batch_is_named(tmp_path):
    root = write_cifar(tmp_path / "c", per_batch=2)
    (root / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: missing"):
        load_dataset(f"cifar10:{root}", 32)


def test_cifar10_batch_of_the_wrong_shape_is_rejected(tmp_path):
    root = write_cifar(tmp_path / "c", per_batch=2)
    (root / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"test_batch: not a CIFAR-10 python batch \(expected 'data' of shape"):
        load_dataset(f"cifar10:{root}", 32)


def test_cifar10_text_file_is_not_a_batch(tmp_path):
    root = write_cifar(tmp_path / "c", per_batch=2)
    (root / "data_batch_1").write_text("hello")
    with pytest.raises(DataError, match="data_batch_1: not a CIFAR-10 python batch"):
        load_dataset(f"cifar10:{root}", 32)


def test_cifar10_missing_folder_is_one_line(tmp_path):
    with pytest.raises(DataError, match="no such folder; point cifar10:DIR"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}", 32)


# ---- image folders ----------------------------------------------------------------------------------------------
def write_folder(root, classes=("cat", "dog"), per_class=5, size=(20, 12)):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            pixels[..., c % 3] = 255                       # the class shows in one channel
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_folder_classes_are_the_sorted_subfolders(tmp_path):
    root = write_folder(tmp_path / "imgs", classes=("zebra", "ant", "moose"), per_class=6)
    data = load_dataset(f"folder:{root}", resolution=16)
    assert data.class_names == ("ant", "moose", "zebra")
    assert data.num_classes == 3
    assert len(data.train) + len(data.val) + len(data.test) == 18
    image, label = data.train[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and 0 <= int(label) < 3
    assert min(len(data.val), len(data.test)) >= 3          # every class in every split


def test_folder_with_too_few_images_names_the_class(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=5)
    for file in sorted((root / "dog").iterdir())[2:]:
        file.unlink()
    with pytest.raises(DataError, match=r"dog: 2 images; every class needs at least 3"):
        load_dataset(f"folder:{root}", 16)


def test_folder_with_a_broken_image_names_the_file(tmp_path):
    root = write_folder(tmp_path / "imgs")
    (root / "cat" / "9.png").write_text("not an image")
    with pytest.raises(DataError, match=r"9.png: cannot read the image"):
        load_dataset(f"folder:{root}", 16)


def test_missing_folder_is_one_line(tmp_path):
    with pytest.raises(DataError, match="no such folder; folder:DIR needs one sub-folder"):
        load_dataset(f"folder:{tmp_path / 'nope'}", 16)
