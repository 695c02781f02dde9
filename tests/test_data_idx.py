"""IDX files (MNIST format, gzip or not), ``idx:DIR``, ``fashion-mnist`` and the train / test subsets."""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilekit.data import load_dataset
from mobilekit.data.datasets import FASHION_MNIST_DIR
from mobilekit.data.idx import IDX_PARTS, read_idx
from mobilekit.errors import DataError


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(">u1" if type_code == 0x08 else ">i4").tobytes()


def write_idx_set(root: Path, compress: bool, n_train: int = 60, n_test: int = 20, size: int = 6,
                  classes: int = 3) -> dict[str, np.ndarray]:
    """A tiny MNIST-format folder: image pixel (0, 0) encodes the label so tests can check the pairing."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % classes
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        images[:, 0, 0] = labels * 100
        arrays[split] = (images, labels)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            name, raw = f"{split}-{kind}", idx_bytes(array)
            if compress:
                (root / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (root / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_idx_file_reads_back_the_array(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(array)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    out = read_idx(path, ndim=3)
    assert out.dtype == np.uint8 and np.array_equal(out, array)


def test_idx_int32_values_are_big_endian(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.array([1, 70000, 3]), type_code=0x0C))
    assert read_idx(path, ndim=1).tolist() == [1, 70000, 3]


@pytest.mark.parametrize("raw, message", [
    (b"\x00\x00\x08", "not an IDX file"),
    (b"PK\x03\x04rest", "not an IDX file"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),      # unknown type code
    (b"\x00\x00\x08\x03\x00\x00", "truncated header"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x01", "truncated"),          # 2 of 5 values
    (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x01", "trailing data"),
    (b"\x1f\x8b\x08\x00garbage", "broken gzip"),
], ids=["short", "zip", "type", "header", "truncated", "trailing", "gzip"])
def test_malformed_idx_file_is_named_with_the_problem(tmp_path, raw, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_idx_images_where_labels_are_expected_are_rejected(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros((2, 3, 3))))
    with pytest.raises(DataError, match="3-dimensional data; expected 1"):
        read_idx(path, ndim=1)


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_idx_folder_loads_as_three_channel_splits_with_official_test(tmp_path, compress):
    arrays = write_idx_set(tmp_path / "set", compress)
    splits = load_dataset(f"idx:{tmp_path / 'set'}", resolution=8, seed=0)
    images, labels = splits.train.tensors
    assert images.shape[1:] == (3, 8, 8) and torch.equal(images[:, 0], images[:, 2])
    assert splits.num_classes == 3 and splits.class_names == ("0", "1", "2")
    assert len(splits.train) + len(splits.val) == 60 and len(splits.test) == 20
    assert torch.equal(splits.test.tensors[1], torch.from_numpy(arrays["t10k"][1]).long())
    assert np.bincount(splits.val.tensors[1].numpy()).tolist() == [2, 2, 2]      # 10 % per class


def test_idx_labels_stay_paired_with_their_images(tmp_path):
    write_idx_set(tmp_path / "set", compress=True, size=8)
    splits = load_dataset(f"idx:{tmp_path / 'set'}", resolution=8, seed=3)
    raw_pixel = splits.train.tensors[0][:, 0, 0, 0] * splits.std[0] + splits.mean[0]    # back to [0, 1]
    assert torch.allclose(raw_pixel * 255, splits.train.tensors[1].float() * 100, atol=1e-3)


def test_train_subset_is_stratified_seeded_and_exact(tmp_path):
    write_idx_set(tmp_path / "set", compress=False, n_train=90)
    spec = f"idx:{tmp_path / 'set'}"
    a = load_dataset(spec, resolution=8, seed=0, train_subset=30)
    b = load_dataset(spec, resolution=8, seed=0, train_subset=30)
    c = load_dataset(spec, resolution=8, seed=1, train_subset=30)
    assert len(a.train) == 30 and np.bincount(a.train.tensors[1].numpy()).tolist() == [10, 10, 10]
    assert len(a.val) == 3 and len(a.test) == 20                       # val 30 / 9 others, test untouched
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    train = {tuple(x.flatten().tolist()) for x in a.train.tensors[0]}
    assert not any(tuple(x.flatten().tolist()) in train for x in a.val.tensors[0])


def test_test_subset_is_stratified(tmp_path):
    write_idx_set(tmp_path / "set", compress=False, n_test=30)
    splits = load_dataset(f"idx:{tmp_path / 'set'}", resolution=8, test_subset=9)
    assert np.bincount(splits.test.tensors[1].numpy()).tolist() == [3, 3, 3]


def test_train_subset_larger_than_the_set_names_both_sizes(tmp_path):
    write_idx_set(tmp_path / "set", compress=False)
    with pytest.raises(DataError, match="train_subset 500 is larger than the 60 images"):
        load_dataset(f"idx:{tmp_path / 'set'}", resolution=8, train_subset=500)


def test_digits_train_subset_cuts_the_train_split_only():
    full = load_dataset("digits", resolution=8)
    cut = load_dataset("digits", resolution=8, train_subset=100)
    assert len(cut.train) == 100 and len(cut.val) == len(full.val) and len(cut.test) == len(full.test)


def test_idx_folder_missing_a_file_names_the_file(tmp_path):
    write_idx_set(tmp_path / "set", compress=True)
    (tmp_path / "set" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="no t10k-labels-idx1-ubyte"):
        load_dataset(f"idx:{tmp_path / 'set'}", resolution=8)


def test_idx_label_count_mismatch_names_the_labels_file(tmp_path):
    write_idx_set(tmp_path / "set", compress=False)
    (tmp_path / "set" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(7)))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: 7 labels for the 60 images"):
        load_dataset(f"idx:{tmp_path / 'set'}", resolution=8)


def test_missing_fashion_mnist_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr("mobilekit.data.datasets.FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as info:
        load_dataset("fashion-mnist", resolution=32)
    assert "make test" in str(info.value) and "\n" not in str(info.value)


def test_cli_search_on_a_missing_idx_folder_exits_2_naming_it(tmp_path, capsys):
    from _synthetic_tables import synthetic_table

    from mobilekit.cli import main
    from mobilekit.latency.differentiable import SuperkernelLatency

    table = synthetic_table(width=0.35)
    fastest, slowest = SuperkernelLatency(table).bounds_ms()
    code = main(["search", "--table", str(table.save(tmp_path / "t.json")), "--target-ms", f"{(fastest + slowest) / 2}",
                 "--data", f"idx:{tmp_path / 'none'}", "--train-subset", "10", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(tmp_path / "none") in err


# The real files: `make test` installs dataset-fashion-mnist, so on CI this runs; elsewhere it needs the package.
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir() and not os.environ.get("CI"),
                    reason="dataset-fashion-mnist is not installed (make test installs it)")
def test_real_fashion_mnist_has_the_official_splits():
    splits = load_dataset("fashion-mnist", resolution=32, seed=0, train_subset=1000)
    assert splits.num_classes == 10 and splits.class_names[9] == "Ankle boot"
    assert len(splits.test) == 10_000 and len(splits.train) == 1000
    assert np.bincount(splits.test.tensors[1].numpy()).tolist() == [1000] * 10
    assert np.bincount(splits.train.tensors[1].numpy()).tolist() == [100] * 10
    assert splits.train.tensors[0].shape[1:] == (3, 32, 32)
    for part in IDX_PARTS:
        assert (FASHION_MNIST_DIR / f"{part}.gz").is_file()


def test_tiny_train_subset_still_validates_every_class(tmp_path):
    write_idx_set(tmp_path / "set", compress=False, n_train=90)
    splits = load_dataset(f"idx:{tmp_path / 'set'}", resolution=8, train_subset=6)
    assert len(splits.train) == 6 and sorted(set(splits.val.tensors[1].tolist())) == [0, 1, 2]
