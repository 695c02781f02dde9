"""Memory bound of a search, checked before anything starts: a run whose data and training step could never fit
stops with one line naming the option to change instead of swapping or being killed hours in.

The estimate (bytes) is the sum of

* the data held at the training resolution: per split, images x 3 x R x R x 4 when that fits in
  :data:`~mobilekit.data.datasets.IN_MEMORY_LIMIT_BYTES`, else nothing at R (the source images, already in memory
  as uint8, are resized per batch: see :class:`~mobilekit.data.datasets.ResizedArraySplit`);
* one training step: batch x (input image + the outputs of every layer of the widest single path, measured by a
  forward pass on PyTorch's ``meta`` device, so no memory is used to measure it). Against the peak resident
  memory of a real forward + backward pass of that network on CPU this was 0.85-1.15x (64 px x 16, 128 px x 8,
  224 px x 4 images).

A method whose search step trains more than one path (multipath computes every candidate of every layer)
declares that network (``search_network`` in its module, see :mod:`mobilekit.search.registry`); its step is then
the larger of that network's activations at the training resolution (measured the same way; 1.03-1.11x the real
peak of a multipath forward + backward at 64 px x 16, 96 px x 12, 128 px x 8, where the widest single path gave
0.37-0.40x) and the widest single path's (the final training, and a fine-tuning at the deployed resolution). The
available memory is Linux's ``MemAvailable`` (or ``sysconf``), capped by a cgroup memory limit when one is set.

On a CUDA device the two parts are checked where they live: the data against the host's memory, the step against
the GPU's free memory (``torch.cuda.mem_get_info``). Under mixed precision (fp16/bf16) the activations take about
half the float32 estimate, so the step is then counted at half: a run is refused only when it cannot fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mobilekit.errors import ConfigError
from mobilekit.space import Architecture, SearchSpace

GIB = 1024**3
#: A run is refused when its estimate passes this share of the available memory (the rest: Python, torch,
#: optimiser state, the evaluation passes).
USABLE_SHARE = 0.9


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a search needs: ``data`` held at the training resolution, ``step`` for one training step."""

    data: int
    step: int

    @property
    def total(self) -> int:
        return self.data + self.step


def widest_architecture(space: SearchSpace) -> Architecture:
    """The architecture with, at every position, the candidate of the largest expansion (then kernel, then SE)."""
    choose = lambda p: max(p.candidates, key=lambda c: (c.expansion, c.kernel, c.se_ratio))  # noqa: E731
    return Architecture(space, tuple(choose(p) for p in space.positions))


NetworkBuilder = Callable[[SearchSpace], nn.Module]


def activation_bytes_per_image(space: SearchSpace, network: NetworkBuilder | None = None) -> int:
    """float32 bytes of the input and of every layer output of ``network(space)`` (default: the
    :func:`widest_architecture`) for one image at the space's resolution, from a forward pass on the ``meta``
    device (shapes only, no memory, milliseconds)."""
    from mobilekit.models.torch_builder import build_torch_model

    with torch.device("meta"):
        model = network(space) if network is not None else build_torch_model(widest_architecture(space))
        x = torch.empty(2, 3, space.resolution, space.resolution)  # 2: batch norm refuses one value per channel
    total = [x.numel() * 4]

    def count(_module: nn.Module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * 4

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        model.train()
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return total[0] // 2


def estimate_search_memory(space: SearchSpace, batch_size: int, sizes: tuple[int, ...] | None,
                           search_network: NetworkBuilder | None = None,
                           search_space: SearchSpace | None = None) -> MemoryEstimate:
    """The :class:`MemoryEstimate` of training on ``space`` (at the training resolution) with ``batch_size``
    images per step and splits of ``sizes`` images (None: streamed, nothing held). ``search_network``: the
    network a method's search step trains when it is more than one path, measured at ``search_space`` (default
    ``space``); the step is then the larger of it and the widest single path at ``space``."""
    from mobilekit.data.datasets import held_bytes

    data = sum(held_bytes(n, space.resolution) for n in sizes) if sizes else 0
    per_image = activation_bytes_per_image(space)
    if search_network is not None:
        per_image = max(per_image, activation_bytes_per_image(search_space or space, search_network))
    return MemoryEstimate(data=data, step=batch_size * per_image)


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping: ``MemAvailable`` (else free pages from ``sysconf``),
    capped by the cgroup (v2 or v1) limit minus its usage; ``None`` where neither can be read."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max" or a page-rounded 2**63: no limit
            found.append(max(0, int(limit) - usage))
        break
    return min(found) if found else None


def gpu_free_memory(accelerator: str) -> int | None:
    """Free bytes of the CUDA device a run with this ``--accelerator`` (cpu | cuda | auto) trains on (the process's
    ``LOCAL_RANK`` under torchrun); ``None`` when it trains on the CPU."""
    if accelerator == "cpu" or not torch.cuda.is_available():
        return None
    index = int(os.environ.get("LOCAL_RANK", 0)) % max(1, torch.cuda.device_count())
    return int(torch.cuda.mem_get_info(index)[0])


def check_search_memory(space: SearchSpace, batch_size: int, sizes: tuple[int, ...] | None,
                        available: int | None = None, search_network: NetworkBuilder | None = None,
                        search_space: SearchSpace | None = None, gpu_available: int | None = None,
                        mixed_precision: bool = False) -> MemoryEstimate:
    """The estimate (:func:`estimate_search_memory`), or :class:`ConfigError` (one line naming what to lower) when
    it passes :data:`USABLE_SHARE` of ``available`` bytes (default :func:`available_memory`; unknown: no check).
    ``gpu_available``: free bytes of the GPU the run trains on (:func:`gpu_free_memory`); the step is then checked
    against it (at half under ``mixed_precision``) and only the data against ``available``."""
    estimate = estimate_search_memory(space, batch_size, sizes, search_network, search_space)
    available = available_memory() if available is None else available
    r = space.resolution
    if gpu_available is not None:
        step = estimate.step // 2 if mixed_precision else estimate.step
        if step > USABLE_SHARE * gpu_available:
            raise ConfigError(f"this search needs about {step / GIB:.1f} GiB of GPU memory per step (--batch-size "
                              f"{batch_size} at --train-resolution {r}"
                              f"{', mixed precision' if mixed_precision else ''}) but {gpu_available / GIB:.1f} GiB "
                              f"are free on the GPU; lower --train-resolution or --batch-size")
        if available is None or estimate.data <= USABLE_SHARE * available:
            return estimate
        raise ConfigError(f"this search holds about {estimate.data / GIB:.1f} GiB of images at {r}x{r} in memory "
                          f"but {available / GIB:.1f} GiB are available; lower --train-subset or "
                          f"--train-resolution")
    if available is None or estimate.total <= USABLE_SHARE * available:
        return estimate
    data = (f" + {estimate.data / GIB:.1f} GiB of images held at {r}x{r} (lower it with --train-subset)"
            if estimate.data else "")
    raise ConfigError(f"this search needs about {estimate.total / GIB:.1f} GiB of memory "
                      f"({estimate.step / GIB:.1f} GiB per step for --batch-size {batch_size} at --train-resolution "
                      f"{r}{data}) but {available / GIB:.1f} GiB are available; lower --train-resolution or "
                      f"--batch-size")
