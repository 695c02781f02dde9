"""Search cost: a single-path search step against one training step of the derived network, and peak memory
against the multi-path supernet's.

Paper claim (Stamoulis et al.): a single-path search costs about as much as training one compact network
(goal here: step-time ratio <= 1.3), with memory far below a multi-path supernet that computes every path.
Each measurement runs in its own process (one torch thread) so peak RSS is its own. The derived network is
runs/p80/arch.json for the Pixel 1 table when present, else a random architecture in [0.9T, T] for a mid-range
target T; the largest network of the space is timed too. The single-path step is timed twice: with thresholds
that decide the derived network (margins |stat - t| drawn uniformly in (0.02, threshold_reach), so some off
subsets are in play: the state of a search near its end), and with fresh thresholds (every subset on: the
largest network, where a search starts). With the host table (SE types measured) the multi-path supernet has 13
paths per layer instead of 5.

Step times are taken twice: each kind in its own process (with its peak memory), and the two kinds of each
ratio alternating step by step in one process, so that both see the same load on a shared machine.

    python bench/search_cost.py [--table latency_tables/host.json] [--batch-size 64] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "latency_tables" / "pixel1-spnas.json"


def build(kind: str, batch_size: int, table_path: str):
    """The training step of ``kind`` on a fixed batch: (step(i), the network's architecture or None, info)."""
    import random

    import torch
    import torch.nn.functional as F

    from mobilekit.latency.differentiable import ExpectedLatency, SuperkernelLatency
    from mobilekit.models.torch_builder import MobileNet
    from mobilekit.latency_table import LatencyTable
    from mobilekit.search.budget import sample_in_window
    from mobilekit.search.config import SearchConfig
    from mobilekit.search.methods.multipath import MultiPathNet, MultiPathPhase
    from mobilekit.search.training import split_for_architecture
    from mobilekit.search.runfolder import RunFolder
    from mobilekit.search.methods.single_path import SinglePathPhase
    from mobilekit.search.superkernel import SuperMBConv, SuperNet
    from mobilekit.space import Architecture, get_space

    torch.manual_seed(0)
    table = LatencyTable.load(table_path)
    expected = ExpectedLatency(table)
    target = sum(expected.bounds_ms()) / 2
    space = get_space(resolution=32, num_classes=10)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size * 4, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (batch_size * 4,), generator=gen)
    dataset = torch.utils.data.TensorDataset(x, y)
    epochs = 100
    config = SearchConfig(table=table_path, target_ms=target, out="unused", batch_size=batch_size, export=(),
                          epochs=epochs)
    run = RunFolder(Path("/tmp/mobilekit-bench-unused"))
    common = dict(name="bench", run=run, dataset=dataset, epochs=epochs, batch_size=batch_size, seed=0)
    arch_file = REPO / "runs" / "p80" / "arch.json"
    if kind in ("largest", "single-path-init"):
        arch = Architecture(space, tuple(max(expected.allowed_types(p), key=lambda t: expected.type_ms(p.index, t))
                                         if p.searchable else p.candidates[0] for p in space.positions))
    elif arch_file.is_file() and Path(table_path).resolve() == TABLE.resolve():
        arch = Architecture.load(arch_file).with_space(space)
    else:
        arch = sample_in_window(expected, space, 0.9 * target, target, random.Random(0))
    info: dict = {}
    if kind.startswith("single-path"):
        runtime = SuperkernelLatency(table)
        net = SuperNet(space, runtime.grid, threshold_init=config.threshold_init)
        epoch = 0                                            # a search's start: subset dropout on
        if kind == "single-path":
            decide_architecture(net, runtime, arch, config.threshold_reach, gen)
            epoch = epochs - 1                               # near its end: subset dropout off
        arch = net.architecture()
        phase = SinglePathPhase(net=net, runtime=runtime, target_ms=target, config=config, **common)
        step = lambda i: phase.step(epoch, i, x[:batch_size], y[:batch_size])  # noqa: E731
        info["play"] = f"band {SuperMBConv.play_band:g}, fraction {SuperMBConv.play_fraction:g}"
        info["arch_now"] = lambda: net.architecture().to_string()
    elif kind == "multipath":
        runtime = ExpectedLatency(table)
        _, arch_data = split_for_architecture(dataset, 0)
        # the multi-path options (arch_lr, Gumbel temperatures) live in that method's own options
        mp_config = SearchConfig(table=table_path, target_ms=target, out="unused", batch_size=batch_size, export=(),
                                 epochs=epochs, method="multipath")
        phase = MultiPathPhase(net=MultiPathNet(space, runtime.candidates), runtime=runtime, arch_data=arch_data,
                               target_ms=target, config=mp_config, **common)
        step = lambda i: phase.step(0, i, x[:batch_size], y[:batch_size])  # noqa: E731
        arch = None
    else:
        model = MobileNet(arch)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(i: int) -> None:
            loss = F.cross_entropy(model(x[:batch_size]), y[:batch_size])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    if arch is not None:
        info["arch"] = arch.to_string()
        info["predicted_ms"] = expected.lookup_ms(arch)
    return step, info


def measure(kind: str, batch_size: int, steps: int, table_path: str) -> dict:
    """Runs in a child process: build the network for ``kind``, time ``steps`` training steps after 2 warm-up
    steps, report seconds per step and the peak-RSS growth from just before the network was built."""
    import torch

    torch.set_num_threads(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step, info = build(kind, batch_size, table_path)
    times = timed([step], steps)[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    arch_now = info.pop("arch_now", None)
    if arch_now is not None:
        info["arch_after"] = arch_now()
    return {"kind": kind, "step_s": times, "peak_mib": (peak - before) / 1024, **info}


def measure_pair(kinds: list[str], batch_size: int, steps: int, table_path: str) -> dict:
    """Runs in a child process: two kinds' steps alternated in one process (both see the same machine load);
    returns each one's median step time."""
    import torch

    torch.set_num_threads(1)
    steps_fns = [build(kind, batch_size, table_path)[0] for kind in kinds]
    return dict(zip(kinds, timed(steps_fns, steps)))


def timed(step_fns: list, steps: int) -> list[float]:
    """Median seconds per step of each step function after 2 warm-up steps, the functions alternating."""
    for i in range(2):
        for fn in step_fns:
            fn(i)
    times: list[list[float]] = [[] for _ in step_fns]
    for i in range(steps):
        for fn, t in zip(step_fns, times):
            started = time.perf_counter()
            fn(i + 2)
            t.append(time.perf_counter() - started)
    return [sorted(t)[len(t) // 2] for t in times]


def decide_architecture(net, runtime, arch, reach: float, gen) -> None:
    """Set the supernet's thresholds so its hard decisions choose ``arch``, each margin |stat - t| uniform in
    (0.02, reach)."""
    import torch

    wanted = runtime.decisions_for(arch)
    with torch.no_grad():
        for l, layer in enumerate(net.superkernels):
            for key in ("kernel", "expand", "se", "keep"):     # kernel first: keep/expand statistics depend on it
                t = getattr(layer, f"t_{key}")
                if not t.numel():
                    continue
                on = wanted.keep[l:l + 1] if key == "keep" else getattr(wanted, key)[l]
                margin = 0.02 + (reach - 0.02) * torch.rand(t.shape, generator=gen)
                t.copy_(layer.statistics()[key] - margin * (2 * on - 1))
    if net.architecture() != arch:
        raise RuntimeError("the thresholds do not decide the derived architecture")


def child(kind: str, batch_size: int, steps: int, table: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--batch-size", str(batch_size),
                          "--steps", str(steps), "--table", table], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--table", default=str(TABLE), help="latency table (default: Pixel 1, no SE types)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="seconds-long check: batch 4, 1 timed step")
    args = parser.parse_args()
    if args.smoke:
        args.batch_size, args.steps = 4, 1
    if args.child:
        kinds = args.child.split("+")
        result = measure(kinds[0], args.batch_size, args.steps, args.table) if len(kinds) == 1 else \
            measure_pair(kinds, args.batch_size, args.steps, args.table)
        print(json.dumps(result))
        return
    print(f"settings: {args.table}, its space at 32x32, batch {args.batch_size}, median of {args.steps} steps after 2 "
          "warm-up steps, 1 torch thread")
    kinds = ("derived", "largest", "single-path", "single-path-init", "multipath")
    results = {kind: child(kind, args.batch_size, args.steps, args.table) for kind in kinds}
    pairs = {pair: child(pair, args.batch_size, args.steps, args.table)
             for pair in ("derived+single-path", "largest+single-path-init")}
    derived, largest, single, single_init, multi = (results[k] for k in kinds)
    print(f"derived network ({derived['predicted_ms']:.1f} ms in the table): {derived['arch']}")
    print(f"largest network ({largest['predicted_ms']:.1f} ms): {largest['arch']}")
    print(f"single-path at the derived decisions: in play {single['play']}; decisions after the timed steps: "
          f"{'unchanged' if single['arch_after'] == single['arch'] else single['arch_after']}")
    print("one process per kind (peak memory its own):")
    for kind, r in results.items():
        print(f"  {kind:<16} {r['step_s'] * 1000:8.1f} ms/step   peak +{r['peak_mib']:7.1f} MiB")
    print("two kinds alternating step by step in one process (the same machine load for both):")
    for pair, r in pairs.items():
        print("  " + ",  ".join(f"{kind} {seconds * 1000:.1f} ms/step" for kind, seconds in r.items()))
    paired = pairs["derived+single-path"]
    print(f"single-path step at the derived decisions / derived training step: "
          f"{single['step_s'] / derived['step_s']:.2f} in separate processes, "
          f"{paired['single-path'] / paired['derived']:.2f} alternating (goal <= 1.3)")
    paired = pairs["largest+single-path-init"]
    print(f"single-path step with every subset on / largest network's training step: "
          f"{single_init['step_s'] / largest['step_s']:.2f} in separate processes, "
          f"{paired['single-path-init'] / paired['largest']:.2f} alternating (a search's start)")
    print(f"single-path peak memory / multi-path supernet's: {single_init['peak_mib'] / multi['peak_mib']:.2f} "
          f"(multi-path step {multi['step_s'] / single_init['step_s']:.1f}x the single-path step with every "
          "subset on)")


if __name__ == "__main__":
    main()
