"""The resolution trade-off of a deliverable (issue 22): a network trained at a small resolution but deployed
(latency predicted, files exported) at the table's resolution, against fine-tuning at the deployed resolution
and training there from the start. Accuracy (on test images at each resolution) and seconds, one run.

    OMP_NUM_THREADS=1 python bench/deploy_resolution.py --data fashion-mnist --train-subset 2000 \
        --test-images 1000 --epochs 3 --deploy 224 [--finetune-epochs 1] [--out runs/deploy-resolution.json]

Variants, same architecture (the space's reference network at ``--width``), seed and images:

``small``            trained ``--epochs`` at ``--train-resolution`` (default 32, the search's default); scored at
                     that resolution (the PyTorch "proxy" figure) and at ``--deploy`` (what the exported files get).
``small+finetune``   ``small`` then ``--finetune-epochs`` at ``--deploy`` (lr / 10); scored at ``--deploy``.
``deploy``           trained ``--epochs`` at ``--deploy`` from scratch; scored at ``--deploy``.

Test images at a resolution are resized from the source images (``DataSplits.test_at``), normalised with the
training statistics, exactly as the exported files are scored. Training images at ``--deploy`` are the 32 px
training tensors upsampled bilinearly per batch (a 224 px training split would not fit in memory). Prints the
accuracies and seconds and their ratios to ``small`` measured in this run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mobilekit.data import load_dataset
from mobilekit.export.scoring import predictions, stratified_subset
from mobilekit.jsonio import write_json_atomic
from mobilekit.models import build_torch_model
from mobilekit.space import get_space, reference_architecture


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--train-subset", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--train-resolution", type=int, default=32)
    parser.add_argument("--deploy", type=int, default=224)
    parser.add_argument("--width", type=float, default=0.35)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-deploy-training", action="store_true", help="leave out the costly `deploy` variant")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--smoke", action="store_true", help="seconds: digits, 64 images, 1 epoch, deploy 64 px")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.smoke:
        args.data, args.train_subset, args.test_images, args.epochs, args.finetune_epochs = "digits", 64, 32, 1, 1
        args.deploy, args.batch_size, args.out = 64, 32, None
    results = run(args)
    base = results["small"]
    for name, row in results.items():
        scores = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("accuracy"))
        print(f"{name:15s} {scores} | train {row['train_s']:.1f} s ({row['train_s'] / base['train_s']:.2f}x small)")
    gap = base["accuracy_at_deploy"] - base["accuracy_at_train"]
    print(f"small: deployed-resolution accuracy minus proxy accuracy {gap:+.4f}")
    if args.out:
        write_json_atomic(args.out, {"settings": {k: str(v) if isinstance(v, Path) else v
                                                  for k, v in vars(args).items()}, "results": results})
        print(f"wrote {args.out}")
    return 0


def train(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, lr: float,
          batch_size: int, resolution: int, seed: int) -> float:
    """Adam with a cosine schedule for ``epochs`` over (N, 3, r, r) ``images``, upsampled per batch to
    ``resolution``; returns the seconds spent."""
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(labels) + batch_size - 1) // batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    started = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(batch_size):
            x = images[batch]
            if x.shape[-1] != resolution:
                x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
            loss = F.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    return time.perf_counter() - started


def accuracy(model: torch.nn.Module, test) -> float:
    predicted, labels = predictions(model, test)
    return float((predicted == labels).mean())


def run(args: argparse.Namespace) -> dict:
    splits = load_dataset(args.data, args.train_resolution, seed=args.seed, train_subset=args.train_subset)
    images, labels = splits.train.tensors
    test_small = stratified_subset(splits.test_at(args.train_resolution), args.test_images, args.seed)
    test_deploy = stratified_subset(splits.test_at(args.deploy), args.test_images, args.seed)

    def network() -> torch.nn.Module:
        torch.manual_seed(args.seed)
        space = get_space(width=args.width, resolution=args.train_resolution, num_classes=splits.num_classes)
        return build_torch_model(reference_architecture(space))

    results = {}
    small = network()
    seconds = train(small, images, labels, args.epochs, args.lr, args.batch_size, args.train_resolution, args.seed)
    results["small"] = {"accuracy_at_train": accuracy(small, test_small),
                        "accuracy_at_deploy": accuracy(small, test_deploy), "train_s": seconds}
    extra = train(small, images, labels, args.finetune_epochs, args.lr / 10, args.batch_size, args.deploy,
                  args.seed + 1)
    results["small+finetune"] = {"accuracy_at_deploy": accuracy(small, test_deploy), "train_s": seconds + extra}
    if not args.skip_deploy_training:
        big = network()
        seconds = train(big, images, labels, args.epochs, args.lr, args.batch_size, args.deploy, args.seed)
        results["deploy"] = {"accuracy_at_deploy": accuracy(big, test_deploy), "train_s": seconds}
    for row in results.values():
        row["train_s"] = round(row["train_s"], 2)
    print(json.dumps({"images": {"train": len(labels), "test": len(test_deploy)}}))
    return results


if __name__ == "__main__":
    sys.exit(main())
