"""How fast a SampledPathNet's shared weights learn when each step trains: one fixed path, two alternating paths,
or a uniformly drawn path (SPOS), with the candidates of a layer sharing nested weights (``--sharing entangled``,
the default) or each owning its weights (``separate``). Prints the training CE every 20 steps, and the CE of one
fixed reference path on the same batch (train-mode BN, no update).

    OMP_NUM_THREADS=1 python bench/one_shot_paths.py [--mode fixed|two|uniform] [--sharing entangled|separate]
        [--steps 60] [--lr 3e-3] [--table latency_tables/pixel1-spnas.json] [--data digits]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from mobilekit.data import load_dataset
from mobilekit.search import make_config
from mobilekit.search.run import build_latency_model_for
from mobilekit.search.methods.spos import PathSpace
from mobilekit.search.supernets import SHARING, SampledPathNet
from mobilekit.space import get_space


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("fixed", "two", "uniform"), default="uniform")
    parser.add_argument("--sharing", choices=SHARING, default="entangled")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--table", default="latency_tables/pixel1-spnas.json")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--smoke", action="store_true", help="seconds: 20 steps, to check the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.steps = 20
    torch.set_num_threads(1)
    cfg = make_config(None, method="spos", table=args.table, target_ms=80, data=args.data, out="unused",
                      train_resolution=32)
    latency_model = build_latency_model_for(cfg)
    splits = load_dataset(args.data, cfg.train_resolution, seed=0)
    table_space = latency_model.space
    space = get_space(table_space.name, width=table_space.width, resolution=cfg.train_resolution,
                      num_classes=splits.num_classes)
    paths = PathSpace(latency_model, space)
    x, y = splits.train.tensors
    torch.manual_seed(0)
    net = SampledPathNet(space, paths.candidates, sharing=args.sharing)
    generator = torch.Generator().manual_seed(0)
    first, second = paths.uniform(generator), paths.uniform(generator)
    optimizer = torch.optim.Adam(net.weight_parameters(), lr=args.lr)
    net.train()
    for step in range(args.steps):
        index = torch.randint(len(x), (64,), generator=generator)
        net.fix({"fixed": first, "two": first if step % 2 else second}.get(args.mode) or paths.uniform(generator))
        loss = F.cross_entropy(net(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 19:
            with torch.no_grad():
                net.fix(first)
                reference = F.cross_entropy(net(x[index]), y[index]).item()
            print(f"{args.mode:8s} {args.sharing:9s} step {step + 1:4d} CE {loss.item():.3f} "
                  f"(reference path {reference:.3f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
