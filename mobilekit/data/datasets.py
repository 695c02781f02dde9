"""Image classification data for the searchers: ``digits``, ``fashion-mnist``, ``idx:DIR``, ``cifar10:DIR`` and
``folder:DIR``.

:func:`load_dataset` turns a spec string into :class:`DataSplits`: train / val / test tensors, normalized float
NCHW at the requested (training) resolution, with per-channel mean and std computed on the training split.
Nothing is downloaded:

``digits``
    scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), gray replicated to 3 channels,
    resized bilinearly, split 70 / 15 / 15 stratified with the seed.
``fashion-mnist``
    Zalando's Fashion-MNIST (60 000 train + 10 000 test 28x28 gray images, 10 classes) as Debian packages it
    (``apt-get install dataset-fashion-mnist``: gzip IDX files under ``/usr/share/datasets/fashion-mnist/``;
    ``make test`` and ``make demo`` install it). Gray is replicated to 3 channels. 10 % of the training images
    (stratified, seeded) become the validation split; the official 10 000 test images are the test split.
``idx:DIR``
    Any MNIST-format folder (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each gzip or not; read and validated by :mod:`.idx`), split like Fashion-MNIST;
    classes are the label values 0 .. max.
``cifar10:DIR``
    The standard CIFAR-10 python batches (``data_batch_1`` .. ``data_batch_5``, ``test_batch``, optional
    ``batches.meta``). These files are Python pickles; this is the only pickle mobilekit reads, and it reads
    them with a restricted unpickler that admits builtin containers and numpy array reconstruction only and
    rejects every other global (so a crafted file cannot run code). 10 % of the training batches (stratified,
    seeded) become the validation split; ``test_batch`` is the test split.
``folder:DIR``
    One sub-folder per class (sorted names are the classes), split 70 / 15 / 15 per class with the seed (every
    class needs at least 3 images). Streamed: each split is an :class:`ImageFolderSplit` that opens, converts to
    RGB, resizes and normalizes an image when it is indexed (read through a ``DataLoader`` with workers by the
    training loop), so a large folder never sits in memory; mean and std come from up to 256 training images
    (seeded sample). Every file's header is checked at load time, so a broken file is named before training.

The in-memory sets (all but ``folder:``) are held as normalized float tensors at the requested resolution when a
split fits in ``IN_MEMORY_LIMIT_BYTES`` (2 GiB of float32 pixels); a larger split (Fashion-MNIST's 54 000 training
images at 64 px and up, any set at 224 px) keeps its source images and is resized and normalized per batch
(:class:`ResizedArraySplit`), with mean and std from up to ``STATS_IMAGES`` seeded training images.

``train_subset=N`` keeps N training images (stratified, seeded; quick runs): for the sets with an official test
split, N of the official training images are the train split and N / 9 others (at least one per class) the
validation split; for the others the train split is cut to N. ``test_subset=N`` evaluates on N of the test
images (stratified, seeded) instead of all of them.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from mobilekit.data.idx import read_idx_set
from mobilekit.defaults import DEFAULT_DATA  # noqa: F401  (re-exported by mobilekit.data)
from mobilekit.errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DATA_SPECS = "digits, fashion-mnist, idx:DIR, cifar10:DIR or folder:DIR"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3     # float32 pixels of one split above this: resized per batch instead
STATS_IMAGES = 4096                     # training images sampled for mean / std when the split is resized per batch
STATS_CHUNK_BYTES = 256 * 1024**2       # float64 pixels resized at once for those statistics
FASHION_MNIST_INSTALL = ("install Debian's Fashion-MNIST with `sudo apt-get install dataset-fashion-mnist` "
                         "(`make test` installs it)")


@dataclass
class DataSplits:
    """Train / val / test splits of one data set, ready for training.

    Each split is a map-style data set of (image (3, R, R) float32 normalized with ``mean`` / ``std`` (per
    channel, of the training split, on the [0, 1] scale), label int64) pairs: a ``TensorDataset(images (N, 3, R, R),
    labels (N,))`` for the small sets held in memory, a :class:`ResizedArraySplit` (source images resized per
    batch) for an in-memory set too large at R, an :class:`ImageFolderSplit` for streamed folders.
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resolution: int
    test_source: Callable[[int, Sequence[float], Sequence[float]], Dataset] | None = None

    def test_at(self, resolution: int, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None) -> Dataset:
        """The same test images, labels and order at another ``resolution`` (pixels), normalized with ``mean`` /
        ``std`` (default this split's): how an exported file at its own resolution is scored. Images are resized
        from the source images (not from the ``resolution`` ones) and on access, so a large resolution never
        sits in memory; the result at ``self.resolution`` with the default statistics equals ``self.test``."""
        mean = tuple(self.mean if mean is None else mean)
        std = tuple(self.std if std is None else std)
        if self.test_source is None:
            raise DataError(f"{self.name}: the test split cannot be re-read at another resolution")
        return self.test_source(resolution, mean, std)

        return {"name": self.name, "num_classes": self.num_classes, "resolution": self.resolution,
                "train": len(self.train), "val": len(self.val), "test": len(self.test),
                "mean": list(self.mean), "std": list(self.std)}

    def sample_images(self, n: int = 32) -> np.ndarray:
        """The first ``n`` normalized training images, (n, 3, R, R) float32 (e.g. for int8 calibration)."""
        if isinstance(self.train, TensorDataset):
            return self.train.tensors[0][:n].numpy()
        return torch.stack([self.train[i][0] for i in range(min(n, len(self.train)))]).numpy()


def load_dataset(spec: str, resolution: int, seed: int = 0, train_subset: int | None = None,
                 test_subset: int | None = None) -> DataSplits:
    """Load ``digits``, ``fashion-mnist``, ``idx:DIR``, ``cifar10:DIR`` or ``folder:DIR`` at ``resolution`` x
    ``resolution``, optionally on ``train_subset`` / ``test_subset`` images (see module doc).

    Raises:
        DataError: unknown spec, missing folder or file (for ``fashion-mnist`` naming the install command), a file
            in the wrong format, or a subset larger than the split it is drawn from.
    """
    if resolution < 8:
        raise DataError(f"resolution {resolution} is too small; use at least 8 (e.g. 32)")
    for name, value in (("train_subset", train_subset), ("test_subset", test_subset)):
        if value is not None and value < 1:
            raise DataError(f"{name} {value} must be >= 1 (or left out for the whole split)")
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    subsets = dict(train_subset=train_subset, test_subset=test_subset)
    if kind == "digits" and not arg:
        images, labels, names = _digits()
        return _split_and_normalize("digits", images, labels, names, resolution, seed, test=None, **subsets)
    if kind == "fashion-mnist" and not arg:
        (train_x, train_y), test = read_idx_set(FASHION_MNIST_DIR, install_hint=FASHION_MNIST_INSTALL)
        return _split_and_normalize("fashion-mnist", train_x[:, None], train_y, FASHION_MNIST_CLASSES, resolution,
                                    seed, test=(test[0][:, None], test[1]), val_share=0.1, **subsets)
    if kind == "idx" and arg:
        (train_x, train_y), (test_x, test_y) = read_idx_set(arg)
        names = tuple(str(c) for c in range(int(max(train_y.max(initial=0), test_y.max(initial=0))) + 1))
        return _split_and_normalize(f"idx:{arg}", train_x[:, None], train_y, names, resolution, seed,
                                    test=(test_x[:, None], test_y), val_share=0.1, **subsets)
    if kind == "cifar10" and arg:
        (train_x, train_y), (test_x, test_y), names = _cifar10(Path(arg))
        return _split_and_normalize(f"cifar10:{arg}", train_x, train_y, names, resolution, seed,
                                    test=(test_x, test_y), val_share=0.1, **subsets)
    if kind == "folder" and arg:
        return _folder(Path(arg), resolution, seed, **subsets)
    raise DataError(f"unknown data set {spec!r}: use {DATA_SPECS}")


# ---- sources (each returns uint8 or float images (N, 3, H, W) in [0, 1] scale, int labels, class names) -----------
def _digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images.astype(np.float32) / 16.0)[:, None].repeat(3, axis=1)
    return images, data.target.astype(np.int64), tuple(str(c) for c in data.target_names)


class _CifarUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR-10 batch needs: numpy ndarray / dtype reconstruction, and ``_codecs.encode``
    (how Python 3 protocol-2 pickles spell ``bytes``; it only turns a str into bytes). Builtin containers
    (dict, list, bytes, str, int) are pickle opcodes, not globals, so they need no entry here."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        import codecs

        import numpy._core.multiarray as multiarray
        import numpy._core.numeric as numeric

        if module == "_codecs":
            return codecs.encode
        if name == "_reconstruct":
            return multiarray._reconstruct
        if name == "scalar":
            return multiarray.scalar
        if name == "_frombuffer":
            return numeric._frombuffer
        return getattr(np, name)


def _read_cifar_batch(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: missing; a CIFAR-10 folder needs {', '.join(CIFAR10_TRAIN_FILES)} and test_batch "
                        "(the 'CIFAR-10 python version' files)") from None
    try:
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any failure means "not a CIFAR batch"
        raise DataError(f"{path}: not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (expected a dict with 'data' and 'labels')")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}


def _cifar_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_cifar_batch(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise DataError(f"{path}: not a CIFAR-10 python batch (expected 'data' of shape (N, 3072) and 'labels')")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"{path}: 'labels' must hold one class index 0-9 per image")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar10(root: Path):
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; point cifar10:DIR at the extracted 'cifar-10-batches-py' folder")
    parts = [_cifar_arrays(root / name) for name in CIFAR10_TRAIN_FILES]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = _cifar_arrays(root / "test_batch")
    names = CIFAR10_CLASSES
    if (root / "batches.meta").is_file():
        meta = _read_cifar_batch(root / "batches.meta").get("label_names")
        if isinstance(meta, list) and len(meta) == 10:
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta)
    return train, test, names


class ImageFolderSplit(Dataset):
    """Images of a folder split, read lazily: ``split[i]`` -> (image (3, R, R) float32 normalized, label int64).

    Opens the file with Pillow, converts it to RGB and resizes it bilinearly to ``resolution`` on every access
    (safe in ``DataLoader`` worker processes)."""

    def __init__(self, files: list[Path], labels: np.ndarray, resolution: int,
                 mean: tuple[float, ...] = (0.0, 0.0, 0.0), std: tuple[float, ...] = (1.0, 1.0, 1.0)) -> None:
        self.files, self.labels, self.resolution = list(files), np.asarray(labels, dtype=np.int64), resolution
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.files)

    def raw(self, index: int) -> torch.Tensor:
        """The resized image on the [0, 1] scale, (3, R, R) float32."""
        from PIL import Image

        file = self.files[index]
        try:
            with Image.open(file) as image:
                rgb = image.convert("RGB").resize((self.resolution, self.resolution), Image.BILINEAR)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            raise DataError(f"{file}: cannot read the image ({exc})") from None
        return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()).float() / 255.0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.raw(index) - self.mean) / self.std, torch.tensor(self.labels[index])


def _folder(root: Path, resolution: int, seed: int, stats_images: int = 256, train_subset: int | None = None,
            test_subset: int | None = None) -> DataSplits:
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; folder:DIR needs one sub-folder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root}: found {len(classes)} class sub-folders; folder:DIR needs at least 2 "
                        "(one sub-folder of images per class)")
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        raise DataError("reading folder:DIR needs Pillow (pip install pillow)") from None
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(found) < 3:
            raise DataError(f"{root / name}: {len(found)} images; every class needs at least 3 "
                            f"({', '.join(IMAGE_SUFFIXES)})")
        for file in found:
            try:
                with Image.open(file):          # header only: names a broken file before training starts
                    pass
            except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
                raise DataError(f"{file}: cannot read the image ({exc})") from None
        files.extend(found)
        labels.extend([label] * len(found))
    labels_array = np.asarray(labels, dtype=np.int64)
    train_idx, val_idx, test_idx = _stratified_split(labels_array, (0.70, 0.15, 0.15), seed)
    if train_subset is not None:
        train_idx = _stratified_subset(train_idx, labels_array, train_subset, seed, "train_subset")
    if test_subset is not None:
        test_idx = _stratified_subset(test_idx, labels_array, test_subset, seed, "test_subset")
    raw_train = ImageFolderSplit([files[i] for i in train_idx], labels_array[train_idx], resolution)
    sample = np.random.default_rng(seed).permutation(len(train_idx))[:stats_images]
    images = torch.stack([raw_train.raw(int(i)) for i in sample])
    mean = tuple(float(m) for m in images.mean((0, 2, 3)))
    std = tuple(float(s) for s in images.std((0, 2, 3)).clamp_min(1e-6))

    def split(indices: np.ndarray) -> ImageFolderSplit:
        return ImageFolderSplit([files[i] for i in indices], labels_array[indices], resolution, mean, std)

    test_files = [files[i] for i in test_idx]

    def test_source(res: int, mean_: Sequence[float], std_: Sequence[float]) -> ImageFolderSplit:
        return ImageFolderSplit(test_files, labels_array[test_idx], res, tuple(mean_), tuple(std_))

    return DataSplits(name=f"folder:{root}", train=split(train_idx), val=split(val_idx), test=split(test_idx),
                      num_classes=len(classes), class_names=tuple(classes), mean=mean, std=std,
                      resolution=resolution, test_source=test_source)


# ---- splitting, resizing, normalizing ---------------------------------------------------------------------------
def _stratified_split(labels: np.ndarray, shares: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Indices of each split, per class in the given shares (the first split takes the rounding)."""
    rng = np.random.default_rng(seed)
    out: list[list[int]] = [[] for _ in shares]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        counts = [int(round(len(idx) * s)) for s in shares[1:]]
        counts = [max(1, c) if len(idx) >= len(shares) else c for c in counts]
        start = len(idx) - sum(counts)
        out[0].extend(idx[:start])
        for j, c in enumerate(counts, 1):
            out[j].extend(idx[start:start + c])
            start += c
    return [np.sort(np.asarray(o, dtype=np.int64)) for o in out]


def _stratified_subset(indices: np.ndarray, labels: np.ndarray, size: int, seed: int, what: str) -> np.ndarray:
    """``size`` of ``indices`` drawn stratified by ``labels[indices]`` with the seed (sorted)."""
    if size > len(indices):
        raise DataError(f"{what} {size} is larger than the {len(indices)} images it is drawn from; use at most "
                        f"{len(indices)} or leave it out")
    if size == len(indices):
        return indices
    from sklearn.model_selection import train_test_split

    classes = len(np.unique(labels[indices]))
    if size < classes:
        raise DataError(f"{what} {size} is smaller than the {classes} classes; use at least {classes}")
    kept, _ = train_test_split(indices, train_size=size, stratify=labels[indices], random_state=seed)
    return np.sort(kept)


def _to_float(images: np.ndarray, resolution: int) -> torch.Tensor:
    """(N, C, H, W) uint8 (0-255) or float ([0, 1]) images -> (N, 3, R, R) float32; gray (C = 1) is replicated."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _split_and_normalize(name: str, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...],
                         resolution: int, seed: int, test: tuple[np.ndarray, np.ndarray] | None,
                         val_share: float = 0.15, train_subset: int | None = None,
                         test_subset: int | None = None) -> DataSplits:
    if test is None:
        train_idx, val_idx, test_idx = _stratified_split(labels, (0.70, val_share, 0.15), seed)
        if train_subset is not None:
            train_idx = _stratified_subset(train_idx, labels, train_subset, seed, "train_subset")
        test_x, test_y = images[test_idx], labels[test_idx]
    else:
        if train_subset is None:
            train_idx, val_idx = _stratified_split(labels, (1 - val_share, val_share), seed)
        else:  # N training images, then N * val_share / (1 - val_share) others for validation
            train_idx = _stratified_subset(np.arange(len(labels)), labels, train_subset, seed, "train_subset")
            rest = np.setdiff1d(np.arange(len(labels)), train_idx)
            classes = len(np.unique(labels))
            val_size = min(len(rest), max(classes, int(round(train_subset * val_share / (1 - val_share)))))
            val_idx = _stratified_subset(rest, labels, val_size, seed, "the validation split") if len(rest) else rest
        test_x, test_y = test
    if test_subset is not None:
        keep = _stratified_subset(np.arange(len(test_y)), test_y, test_subset, seed, "test_subset")
        test_x, test_y = test_x[keep], test_y[keep]
    if fits_in_memory(len(train_idx), resolution):
        train = _to_float(images[train_idx], resolution)
        mean = train.mean((0, 2, 3))
        std = train.std((0, 2, 3)).clamp_min(1e-6)
    else:                                   # statistics of a seeded sample, resized in chunks
        train = None
        mean, std = _sampled_statistics(images[train_idx], resolution, seed)

    def dataset(source: np.ndarray, y: np.ndarray, x: torch.Tensor | None = None) -> Dataset:
        if not fits_in_memory(len(y), resolution):
            return ResizedArraySplit(source, y, resolution, tuple(mean.tolist()), tuple(std.tolist()))
        x = _to_float(source, resolution) if x is None else x
        return TensorDataset((x - mean[:, None, None]) / std[:, None, None], torch.from_numpy(y).long())

    return DataSplits(
        name=name,
        train=dataset(images[train_idx], labels[train_idx], train),
        val=dataset(images[val_idx], labels[val_idx]),
        test=dataset(test_x, test_y),
        num_classes=len(class_names),
        class_names=class_names,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        resolution=resolution,
        test_source=lambda res, mean_, std_: ResizedArraySplit(test_x, test_y, res, mean_, std_),
    )


def fits_in_memory(images: int, resolution: int) -> bool:
    """Whether ``images`` normalized float32 images (3, R, R) take at most ``IN_MEMORY_LIMIT_BYTES``."""
    return images * 3 * resolution * resolution * 4 <= IN_MEMORY_LIMIT_BYTES


def split_sizes(spec: str, train_subset: int | None = None) -> tuple[int, int, int] | None:
    """(train, val, test) image counts that :func:`load_dataset` would produce, read from headers only (no pixels
    decoded; approximate to a few images where the split rounds); ``None`` for ``folder:`` (streamed, nothing held
    at the training resolution) and for a spec or file it cannot read (``load_dataset`` then names the problem)."""
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    try:
        if kind == "digits" and not arg:
            total = 1797
            train = train_subset or round(total * 0.70)
            return train, round(total * 0.15), round(total * 0.15)
        if kind in ("fashion-mnist", "idx") and (bool(arg) == (kind == "idx")):
            from mobilekit.data.idx import find_idx_set

            files = find_idx_set(FASHION_MNIST_DIR if kind == "fashion-mnist" else arg)
            train_total = _idx_count(files["train-images-idx3-ubyte"])
            test = _idx_count(files["t10k-images-idx3-ubyte"])
        elif kind == "cifar10" and arg:
            train_total, test = 50_000, 10_000   # the format's fixed 5 x 10 000 + 10 000 images
        else:
            return None
    except (DataError, OSError, EOFError, ValueError):
        return None
    if train_subset is not None:
        return train_subset, max(1, round(train_subset / 9)), test
    return round(train_total * 0.9), round(train_total * 0.1), test


def _idx_count(path: Path) -> int:
    """The first dimension (image count) of an IDX file's header, gzip or plain."""
    import gzip

    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
        header = f.read(8)
    if len(header) < 8:
        raise ValueError(f"{path}: truncated IDX header")
    return int.from_bytes(header[4:8], "big")


def held_bytes(images: int, resolution: int) -> int:
    """Bytes one split of ``images`` holds at ``resolution`` (pixels): the normalized float32 tensor when it fits
    in ``IN_MEMORY_LIMIT_BYTES``, else nothing at that resolution (the source images are resized per batch)."""
    size = images * 3 * resolution * resolution * 4
    return size if size <= IN_MEMORY_LIMIT_BYTES else 0


def _sampled_statistics(images: np.ndarray, resolution: int, seed: int, chunk: int = 256
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std ([0, 1] scale) of up to ``STATS_IMAGES`` seeded ``images`` at ``resolution``,
    resized ``chunk`` at a time, fewer when a chunk would pass ``STATS_CHUNK_BYTES`` (so the sample never sits in
    memory at that resolution: 256 images at 2048 px would be 13 GB of float32)."""
    chunk = max(1, min(chunk, STATS_CHUNK_BYTES // (3 * resolution * resolution * 8)))
    pick = np.sort(np.random.default_rng(seed).permutation(len(images))[:STATS_IMAGES])
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for start in range(0, len(pick), chunk):
        x = _to_float(images[pick[start:start + chunk]], resolution).double()
        total += x.sum((0, 2, 3))
        squares += (x * x).sum((0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    var = (squares / count - mean * mean) * count / max(1, count - 1)
    return mean.float(), var.clamp_min(0).sqrt().float().clamp_min(1e-6)


class ResizedArraySplit(Dataset):
    """In-memory source images (N, C, H, W) (uint8 0-255 or float [0, 1]) served at ``resolution``:
    ``split[i]`` -> (image (3, R, R) float32 resized bilinearly like the training splits and normalized with
    ``mean`` / ``std``, label int64); :meth:`batch` does a whole index batch in one resize (what the training
    loop calls). Resizes on access, so (N, 3, 224, 224) never sits in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, resolution: int, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        self.images, self.labels, self.resolution = images, np.asarray(labels, dtype=np.int64), resolution
        self.mean = torch.tensor(tuple(mean), dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(tuple(std), dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = _to_float(self.images[index:index + 1], self.resolution)[0]
        return (image - self.mean) / self.std, torch.tensor(self.labels[index])

    def batch(self, index: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, 3, R, R) float32 normalized, labels (B,) int64) of the indices, resized together."""
        rows = np.asarray(index, dtype=np.int64)
        images = _to_float(self.images[rows], self.resolution)
        return (images - self.mean) / self.std, torch.from_numpy(self.labels[rows])

    def subset(self, index: torch.Tensor | Sequence[int]) -> "ResizedArraySplit":
        """The images at ``index``, in that order, served the same way."""
        rows = np.asarray(index, dtype=np.int64)
        return ResizedArraySplit(self.images[rows], self.labels[rows], self.resolution, self.mean.flatten().tolist(),
                                 self.std.flatten().tolist())
