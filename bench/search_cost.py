"""Search cost: a single-path search step against one training step of the derived network, and peak memory
against the multi-path supernet's.

Paper claim (Stamoulis et al.): a single-path search costs about as much as training one compact network
(goal here: step-time ratio <= 1.3), with memory far below a multi-path supernet that computes every path.
Each measurement runs in its own process (one torch thread) so peak RSS is its own. The derived network is
runs/p80/arch.json for the Pixel 1 table when present, else a random architecture in [0.9T, T] for a mid-range
target T; the largest network of the space (the path the superkernel computes) is timed too. With the host
table (SE types measured) the multi-path supernet has 13 paths per layer instead of 5.

    python bench/search_cost.py [--table latency_tables/host.json] [--batch-size 64] [--steps 12]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds a profile.py, which would shadow the standard library's profile module (torch imports cProfile).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import resource
import subprocess
import time

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "latency_tables" / "pixel1-spnas.json"


def measure(kind: str, batch_size: int, steps: int, table_path: str) -> dict:
    """Runs in a child process: build the network for ``kind``, time ``steps`` training steps after 2 warm-up
    steps, report seconds per step and the peak-RSS growth from just before the network was built."""
    import random

    import torch
    import torch.nn.functional as F

    from mobilekit.latency.runtime_loss import ExpectedLatency, SuperkernelRuntime
    from mobilekit.models.torch_builder import MobileNet
    from mobilekit.latency_table import LatencyTable
    from mobilekit.search.budget import sample_in_window
    from mobilekit.search.config import SearchConfig
    from mobilekit.search.multipath import MultiPathNet, MultiPathPhase, split_for_architecture
    from mobilekit.search.runfolder import RunFolder
    from mobilekit.search.single_path import SinglePathPhase
    from mobilekit.search.superkernel import SuperNet
    from mobilekit.space import Architecture, get_space

    torch.set_num_threads(1)
    torch.manual_seed(0)
    table = LatencyTable.load(table_path)
    target = sum(ExpectedLatency(table).bounds_ms()) / 2
    space = get_space(resolution=32, num_classes=10)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size * 4, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (batch_size * 4,), generator=gen)
    dataset = torch.utils.data.TensorDataset(x, y)
    config = SearchConfig(table=table_path, target_ms=target, out="unused", batch_size=batch_size, export=())
    run = RunFolder(Path("/tmp/mobilekit-bench-unused"))
    common = dict(name="bench", run=run, dataset=dataset, epochs=100, batch_size=batch_size, seed=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "single-path":
        runtime = SuperkernelRuntime(table)
        phase = SinglePathPhase(net=SuperNet(space, runtime.grid, threshold_init=0.9), runtime=runtime,
                                target_ms=target, config=config, **common)
        step = lambda i: phase.step(0, i, x[:batch_size], y[:batch_size])  # noqa: E731
    elif kind == "multipath":
        runtime = ExpectedLatency(table)
        _, arch_data = split_for_architecture(dataset, 0)
        phase = MultiPathPhase(net=MultiPathNet(space, runtime.candidates), runtime=runtime, arch_data=arch_data,
                               target_ms=target, config=config, **common)
        step = lambda i: phase.step(0, i, x[:batch_size], y[:batch_size])  # noqa: E731
    else:
        arch_file = REPO / "runs" / "p80" / "arch.json"
        runtime = ExpectedLatency(table)
        if kind == "largest":
            arch = Architecture(space, tuple(max(runtime.allowed_types(p), key=lambda t: runtime.type_ms(p.index, t))
                                             if p.searchable else p.candidates[0] for p in space.positions))
        elif arch_file.is_file() and Path(table_path).resolve() == TABLE.resolve():
            arch = Architecture.load(arch_file).with_space(space)
        else:
            arch = sample_in_window(runtime, space, 0.9 * target, target, random.Random(0))
        model = MobileNet(arch)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(i: int) -> None:
            loss = F.cross_entropy(model(x[:batch_size]), y[:batch_size])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for i in range(2):
        step(i)
    times = []
    for i in range(steps):
        started = time.perf_counter()
        step(i + 2)
        times.append(time.perf_counter() - started)
    times.sort()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    info = {"kind": kind, "step_s": times[len(times) // 2], "peak_mib": (peak - before) / 1024}
    if kind in ("derived", "largest"):
        info["arch"] = arch.to_string()
        info["predicted_ms"] = runtime.lookup_ms(arch)
    return info


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
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.batch_size, args.steps, args.table)))
        return
    print(f"settings: {args.table}, its space at 32x32, batch {args.batch_size}, median of {args.steps} steps after 2 "
          "warm-up steps, 1 torch thread, one process per measurement")
    kinds = ("derived", "largest", "single-path", "multipath")
    results = {kind: child(kind, args.batch_size, args.steps, args.table) for kind in kinds}
    derived, largest, single, multi = (results[k] for k in kinds)
    print(f"derived network ({derived['predicted_ms']:.1f} ms in the table): {derived['arch']}")
    print(f"largest network ({largest['predicted_ms']:.1f} ms): {largest['arch']}")
    for kind, r in results.items():
        print(f"  {kind:<12} {r['step_s'] * 1000:8.1f} ms/step   peak +{r['peak_mib']:7.1f} MiB")
    print(f"single-path step / derived training step: {single['step_s'] / derived['step_s']:.2f} (goal <= 1.3)")
    print(f"single-path step / largest network's training step: {single['step_s'] / largest['step_s']:.2f} "
          "(the superkernel computes the largest path; this is its own overhead)")
    print(f"single-path peak memory / multi-path supernet's: {single['peak_mib'] / multi['peak_mib']:.2f} "
          f"(multi-path step {multi['step_s'] / single['step_s']:.1f}x the single-path step)")


if __name__ == "__main__":
    main()
