"""Forward + backward of a network's depthwise layers: mobilekit's CPU depthwise convolution vs torch's, interleaved.

For each network (the largest of the space: every searchable layer k5, e6, SE 0.5 -- what the single-path
superkernel's masked 5x5 kernels compute during a search -- and any architectures given with ``--arch``), the
depthwise convolutions' inputs are recorded at the given resolution and batch (one forward pass of
``MobileNet``), then each repetition times, for both implementations in turn, one forward and one backward pass
(input and weight gradients, as in training) of every depthwise layer on those shapes, in the engine's CPU
memory layout (channels-last unless ``--nchw``):

* ``fast``: :func:`mobilekit.search.depthwise.depthwise_conv2d` (cropped taps, the fast weight gradient where it
  applies, ``F.conv2d`` elsewhere);
* ``native``: ``F.conv2d(..., groups=C)``.

The two alternate (fast, native, native, fast, ...) so that a change of the shared host's load hits both alike;
the medians over repetitions of each network's total, their ratio, the median of the per-repetition ratios and the
load average before and after are printed, and the layers with the largest difference.

    python bench/depthwise_layers.py [--resolution 32] [--batch-size 64] [--threads 1] [--repeats 41] \\
        [--arch NAME=ir_k3_e3,...] [--nchw]
    python bench/depthwise_layers.py --smoke       # seconds: batch 4, 3 repetitions
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F


if TYPE_CHECKING:
    from mobilekit.space import Architecture

Layer = tuple[str, torch.Tensor, torch.Tensor, tuple[int, int], tuple[int, int], torch.Tensor]


def depthwise_inputs(arch: "Architecture", resolution: int, batch: int, channels_last: bool) -> list[Layer]:
    """(name, input, weight, stride, padding, output gradient) of each depthwise convolution of ``MobileNet(arch)``
    on a random batch (N, 3, resolution, resolution); input and weight require gradients."""
    from mobilekit.models.torch_builder import MobileNet
    from mobilekit.search.depthwise import is_depthwise

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = MobileNet(arch).train().to(memory_format=fmt)            # as Engine.place: weights in that layout too
    seen: list[Layer] = []
    hooks = []
    for name, layer in model.named_modules():
        if is_depthwise(layer):
            def record(module, inputs, output, name=name):  # type: ignore[no-untyped-def]
                x = inputs[0].detach().clone().requires_grad_(True)       # clone keeps the strides
                w = module.weight.detach().clone().requires_grad_(True)
                g = torch.randn_like(output)
                seen.append((f"{name} {tuple(x.shape[1:])} k{w.shape[-1]} s{module.stride[0]}", x, w,
                             tuple(module.stride), tuple(module.padding), g))
            hooks.append(layer.register_forward_hook(record))
    with torch.no_grad():
        model(torch.randn(batch, 3, resolution, resolution).contiguous(memory_format=fmt))
    for hook in hooks:
        hook.remove()
    return seen


def time_layers(layers: list[Layer], conv: Callable[..., torch.Tensor]) -> list[float]:
    """Seconds of one forward + backward pass of each layer with ``conv(x, w, None, stride, padding)``."""
    spent = []
    for _, x, w, stride, padding, g in layers:
        x.grad = w.grad = None
        started = time.perf_counter()
        conv(x, w, None, stride, padding).backward(g)
        spent.append(time.perf_counter() - started)
    return spent


def supernet_steps(resolution: int, batch: int, repeats: int, channels_last: bool,
                   mixed: bool) -> dict[str, list[float]]:
    """Seconds of single-path supernet training steps (decide, forward, cross-entropy, backward; no update, so every
    step computes the same thing) with the fast depthwise path and with torch's, alternated. Two supernets with the
    same initial weights, placed by :meth:`Engine.place` with the fast path on and off; ``mixed``: thresholds drawn
    so that kernel / expansion / SE / keep decisions are a mix of on, off and in play (mid-search), else their
    initial values (every subset on: the warm-up)."""
    from mobilekit.latency.differentiable import superkernel_grid
    from mobilekit.search import depthwise
    from mobilekit.search.engine import Engine
    from mobilekit.search.superkernel import SuperNet
    from mobilekit.space import get_space

    space = get_space(resolution=resolution, num_classes=10)
    grid = superkernel_grid(space, True)
    nets = {}
    for mode in ("fast", "native"):
        torch.manual_seed(0)
        net = SuperNet(space, grid, relax="sigmoid")
        if mixed:
            with torch.no_grad():
                for t in net.threshold_parameters():
                    t.uniform_(0.6, 1.4)
        with depthwise.using(mode == "fast"):
            Engine(channels_last=channels_last).place(net)
        nets[mode] = net.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, resolution, resolution).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step(net: SuperNet) -> float:
        started = time.perf_counter()
        torch.manual_seed(1)                        # the same dropout masks and in-play draws in both
        results, _, _ = net.decide()
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net.forward_decided(x, results), y).backward()
        return time.perf_counter() - started

    spent: dict[str, list[float]] = {"fast": [], "native": []}
    for mode in nets:                                                # warm-up
        step(nets[mode])
    for rep in range(repeats):
        for mode in (("fast", "native") if rep % 2 == 0 else ("native", "fast")):
            spent[mode].append(step(nets[mode]))
    return spent


def native(x: torch.Tensor, w: torch.Tensor, bias: None, stride: tuple[int, int],
           padding: tuple[int, int]) -> torch.Tensor:
    """torch's depthwise convolution."""
    return F.conv2d(x, w, bias, stride, padding, 1, x.shape[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=41, help="repetitions of each implementation, alternated")
    parser.add_argument("--arch", action="append", default=[], metavar="NAME=ARCH",
                        help="another network: a name and an architecture string (20 comma-separated choices)")
    parser.add_argument("--nchw", action="store_true", help="NCHW tensors instead of channels-last")
    parser.add_argument("--smoke", action="store_true", help="seconds: batch 4, 3 repetitions")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch_size, args.repeats = 4, 3
    from mobilekit.search.depthwise import depthwise_conv2d
    from mobilekit.errors import MobilekitError
    from mobilekit.space import Architecture, get_space, largest_architecture

    torch.set_num_threads(args.threads)
    space = get_space(resolution=args.resolution, num_classes=10)
    networks = {"largest": largest_architecture(space)}
    for item in args.arch:
        name, sep, text = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError("expected NAME=ARCH")
            networks[name] = Architecture.from_string(space, text)
        except (ValueError, MobilekitError) as exc:
            print(f"--arch {item!r}: {exc}; give NAME=ir_k3_e3,... with one choice per searchable layer",
                  file=sys.stderr)
            return 2
    convs = {"fast": depthwise_conv2d, "native": native}
    layout = "NCHW" if args.nchw else "channels-last"
    print(f"depthwise layers, forward + backward: {args.resolution} px, batch {args.batch_size}, {layout}, "
          f"{args.threads} torch thread(s), {args.repeats} repetitions of each, alternated; torch {torch.__version__}")
    for name, arch in networks.items():
        layers = depthwise_inputs(arch, args.resolution, args.batch_size, not args.nchw)
        for conv in convs.values():                                  # warm-up (allocations, oneDNN primitives)
            time_layers(layers, conv)
        load = [os.getloadavg()[0]]
        per_layer: dict[str, list[list[float]]] = {mode: [] for mode in convs}
        for rep in range(args.repeats):
            order = ("fast", "native") if rep % 2 == 0 else ("native", "fast")
            for mode in order:
                per_layer[mode].append(time_layers(layers, convs[mode]))
        load.append(os.getloadavg()[0])
        totals = {mode: [sum(r) for r in runs] for mode, runs in per_layer.items()}
        med = {mode: statistics.median(t) for mode, t in totals.items()}
        ratios = [n / f for n, f in zip(totals["native"], totals["fast"])]
        print(f"{name} ({len(layers)} depthwise layers): fast {1e3 * med['fast']:.2f} ms, native "
              f"{1e3 * med['native']:.2f} ms (medians); native / fast {med['native'] / med['fast']:.2f} "
              f"(median of per-repetition ratios {statistics.median(ratios):.2f}, range "
              f"{min(ratios):.2f}-{max(ratios):.2f}); load average {load[0]:.2f} -> {load[1]:.2f}")
        layer_med = {mode: [statistics.median(r[i] for r in runs) for i in range(len(layers))]
                     for mode, runs in per_layer.items()}
        gain = sorted(range(len(layers)), key=lambda i: layer_med["fast"][i] - layer_med["native"][i])
        for i in dict.fromkeys(gain[:3] + gain[-3:]):              # where fast gains most, then loses most
            print(f"  {layers[i][0]}: fast {1e3 * layer_med['fast'][i]:.3f} ms, native "
                  f"{1e3 * layer_med['native'][i]:.3f} ms")
    for mixed in (False, True):
        load = [os.getloadavg()[0]]
        spent = supernet_steps(args.resolution, args.batch_size, max(3, args.repeats // 2), not args.nchw, mixed)
        load.append(os.getloadavg()[0])
        med = {mode: statistics.median(t) for mode, t in spent.items()}
        ratios = [n / f for n, f in zip(spent["native"], spent["fast"])]
        state = "mixed decisions (mid-search)" if mixed else "every subset on (warm-up)"
        print(f"single-path supernet step, {state}: fast {1e3 * med['fast']:.1f} ms, native "
              f"{1e3 * med['native']:.1f} ms (medians of {len(ratios)}); native / fast "
              f"{med['native'] / med['fast']:.2f} (median of per-repetition ratios {statistics.median(ratios):.2f}, "
              f"range {min(ratios):.2f}-{max(ratios):.2f}); load average {load[0]:.2f} -> {load[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
