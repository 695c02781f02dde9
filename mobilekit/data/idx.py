"""IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed, read and validated.

An IDX file is a 4-byte magic number ``0x00 0x00 TYPE NDIM``, then NDIM big-endian uint32 dimension sizes, then
the values (big-endian) in C order. TYPE: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64. Image files are (N, H, W), label files (N,).

:func:`read_idx` returns the array; :func:`find_idx_set` locates the four files of an MNIST-format folder
(``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
each optionally ``.gz``; a ``.`` instead of the second ``-`` is accepted too) and :func:`read_idx_set` reads and
cross-checks them. Every problem raises :class:`~mobilekit.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from mobilekit.errors import DataError

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_PARTS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """The array stored in the IDX file ``path`` (``.gz`` or plain, recognised by its content).

    Args:
        ndim: the number of dimensions the caller needs (3 for images, 1 for labels); None accepts any.

    Raises:
        DataError: the file is missing, unreadable, not IDX, has another number of dimensions, or its size does
            not match its header (truncated or trailing bytes).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: broken gzip data ({exc}); download the file again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file (the magic number {raw[:4].hex() or 'is missing'} should be "
                        "0000TTNN with a known type TT and NN >= 1 dimensions)")
    dtype, dims_count = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    if ndim is not None and dims_count != ndim:
        raise DataError(f"{path}: holds {dims_count}-dimensional data; expected {ndim} dimensions "
                        f"({'images N x H x W' if ndim == 3 else 'labels N'})")
    header = 4 + 4 * dims_count
    if len(raw) < header:
        raise DataError(f"{path}: truncated header ({len(raw)} bytes, {header} needed for {dims_count} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=dims_count, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes, but its header {'x'.join(map(str, dims))} of {dtype.name} "
                        f"needs {expected} ({'truncated' if len(raw) < expected else 'trailing data'})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx_set(root: str | Path, install_hint: str | None = None) -> dict[str, Path]:
    """The four files of an MNIST-format folder, keyed by :data:`IDX_PARTS` names.

    Raises:
        DataError: the folder or a file is missing (``install_hint`` is appended to the message when given).
    """
    root = Path(root)
    hint = install_hint or f"an IDX folder holds {', '.join(IDX_PARTS)} (each gzip or not)"
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; {hint}")
    found: dict[str, Path] = {}
    for part in IDX_PARTS:
        dotted = part.replace("-idx", ".idx")
        for name in (part, part + ".gz", dotted, dotted + ".gz"):
            if (root / name).is_file():
                found[part] = root / name
                break
        else:
            raise DataError(f"{root}: no {part} (or {part}.gz); {hint}")
    return found


def read_idx_set(root: str | Path, install_hint: str | None = None
                 ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((train images (N, H, W), train labels (N,)), (test images, test labels)) of an MNIST-format folder.

    Images keep their stored dtype (uint8 for MNIST-style sets); labels are int64.

    Raises:
        DataError: a missing or malformed file, or images and labels that do not match (counts, image sizes,
            negative labels), naming the file.
    """
    files = find_idx_set(root, install_hint)
    out = []
    for split in ("train", "t10k"):
        images_path, labels_path = files[f"{split}-images-idx3-ubyte"], files[f"{split}-labels-idx1-ubyte"]
        images, labels = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
        if len(images) != len(labels):
            raise DataError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path.name}")
        if labels.dtype.kind == "f" or (len(labels) and labels.min() < 0):
            raise DataError(f"{labels_path}: labels must be non-negative integer class indices")
        out.append((images, labels.astype(np.int64)))
    (train_x, _), (test_x, test_y) = out
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"{files['t10k-images-idx3-ubyte']}: images are {test_x.shape[1]}x{test_x.shape[2]}, the "
                        f"training images {train_x.shape[1]}x{train_x.shape[2]}")
    return out[0], out[1]
