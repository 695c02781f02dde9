"""A tiny ``folder:DIR`` data set for seconds-long smoke runs (``bench/*.py --smoke``): a few PNG images per class
of seeded noise around a per-class grey level, so a search has something to fit and its validation and test splits
hold a handful of images (evaluation and BN re-calibration then cost next to nothing, unlike digits' 269 + 269)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_image_folder(root: str | Path, classes: int = 2, per_class: int = 10, size: int = 32,
                       seed: int = 0) -> Path:
    """Write ``classes`` sub-folders of ``per_class`` RGB PNG images (``size`` x ``size`` pixels) under ``root``
    (created; must not exist yet, so nothing is overwritten); returns ``root`` (pass ``folder:ROOT`` as data)."""
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir()
        level = 255 * (c + 1) / (classes + 1)
        for i in range(per_class):
            pixels = np.clip(rng.normal(level, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(folder / f"{i:03d}.png")
    return root
