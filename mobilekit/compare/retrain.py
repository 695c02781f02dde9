"""One fixed training recipe for judging an architecture alone: every architecture a comparison looks at (found
by any method, or sampled by the random-search protocol) is trained from scratch with exactly this, so no method
wins through its own training schedule.

The recipe (:class:`Recipe`): AdamW (lr 3e-3, weight decay 1e-4), one-cycle learning rate
(``torch.optim.lr_scheduler.OneCycleLR``, 30 % warm-up, cosine decay), batch 64, cross-entropy, ``epochs`` passes
over the train split shuffled by the seed; the network is built with ``torch.manual_seed(seed)``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from mobilekit.search.training import load_batches

from mobilekit.models.torch_builder import MobileNet
from mobilekit.space import Architecture


@dataclass(frozen=True)
class Recipe:
    """The fixed retraining recipe. ``steps_per_epoch`` caps batches per epoch (tiny tests); None = all."""

    epochs: int = 4
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_share: float = 0.3
    steps_per_epoch: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` in eval mode on a data set of (image (3, R, R), label) pairs: a
    ``TensorDataset`` or a streamed one such as ``folder:`` data's ``ImageFolderSplit``."""
    model.eval()
    order = torch.arange(len(dataset))
    index = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    correct = sum(int((model(images).argmax(1) == labels).sum()) for images, labels in load_batches(dataset, index))
    return correct / max(1, len(dataset))


def retrain(arch: Architecture, train: Dataset, recipe: Recipe, seed: int,
            evaluate_on: dict[str, Dataset] | None = None) -> dict:
    """Train ``arch`` (in the training space: its resolution and classes match ``train``) from scratch with
    ``recipe``; returns ``{"train_s": seconds of training, "last_loss": cross-entropy of the last batch,
    "<name>_accuracy": ... for each of evaluate_on}``."""
    torch.manual_seed(seed)
    model = MobileNet(arch)
    per_epoch = max(1, len(train) // recipe.batch_size)
    if recipe.steps_per_epoch is not None:
        per_epoch = min(per_epoch, recipe.steps_per_epoch)
    total = recipe.epochs * per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total,
                                                   pct_start=recipe.warmup_share, anneal_strategy="cos")
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(train), generator=generator)
        index = [order[step * recipe.batch_size:(step + 1) * recipe.batch_size] for step in range(per_epoch)]
        for images, labels in load_batches(train, index):    # slices a TensorDataset, streams folder: data
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    out = {"train_s": round(time.perf_counter() - started, 2), "last_loss": float(loss.detach())}
    for name, dataset in (evaluate_on or {}).items():
        out[f"{name}_accuracy"] = accuracy(model, dataset)
    return out
