"""Where a search trains: the accelerator (CPU or CUDA), mixed precision, channels-last, and data parallelism
across processes started by ``torchrun`` (PyTorch's distributed engine; gloo on the CPU, NCCL on CUDA).

Data parallelism is DistributedDataParallel's arithmetic: every rank computes the loss of its share of the global
batch and the gradients of *all* parameters, weights and architecture parameters alike, are averaged across ranks
before any optimiser step (:meth:`Engine.average_gradients`). Every rank starts from the same seed, so parameters,
optimiser states and random draws (Gumbel noise, subset dropout) stay identical on every rank; only rank 0 writes
the run folder. (The supernets are driven through methods other than ``forward`` -- decisions first, then the
decided forward pass -- which the DDP wrapper cannot hook, hence the explicit all-reduce.)
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

from mobilekit.errors import ConfigError
from mobilekit.search.depthwise import use_fast_depthwise

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Engine:
    """The training device and its settings. ``notes`` say what was ignored or chosen (for the log/summary)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "off"                  # effective: "off", "bf16" or "fp16"
    channels_last: bool = False
    rank: int = 0
    world_size: int = 1
    notes: list[str] = field(default_factory=list)
    scaler: Any = None
    owns_group: bool = False                 # this engine started the process group (and ends it in close())

    def __post_init__(self) -> None:
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    # ---- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Any) -> "Engine":
        """Resolve ``accelerator`` / ``mixed_precision`` / ``channels_last``; join the process group when started
        by torchrun (``WORLD_SIZE`` > 1). Raises :class:`ConfigError` for CUDA where there is none."""
        notes: list[str] = []
        accelerator = config.accelerator
        if accelerator == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--accelerator cuda: no CUDA device is visible here; use --accelerator cpu or auto")
        use_cuda = accelerator == "cuda" or (accelerator == "auto" and torch.cuda.is_available())
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device("cuda", local % max(1, torch.cuda.device_count())) if use_cuda else torch.device("cpu")
        precision = config.mixed_precision
        if precision != "off" and device.type != "cuda":
            notes.append(f"mixed precision {precision} is ignored on the CPU (runs in float32)")
            precision = "off"
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("--mixed-precision bf16: this GPU has no bfloat16; use fp16 or off")
        channels_last = config.channels_last == "on" or (config.channels_last == "auto"
                                                         and auto_channels_last(device, precision))
        owns_group = False
        if world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                owns_group = True
                if device.type == "cuda":
                    torch.cuda.set_device(device)
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            if config.batch_size % world:
                raise ConfigError(f"--batch-size {config.batch_size} must be divisible by the {world} processes "
                                  "(it is the global batch)")
            notes.append(f"data parallel over {world} processes ({'nccl' if device.type == 'cuda' else 'gloo'}), "
                         f"global batch {config.batch_size}")
        return cls(device, precision, channels_last, rank, world, notes, owns_group=owns_group)

    def close(self) -> None:
        """End the process group this engine started (no-op otherwise)."""
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False

    # ---- placement ------------------------------------------------------------------------------------------------
    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes the run folder."""
        return self.rank == 0

    def describe(self) -> str:
        text = f"{self.device.type}" + (f" ({torch.cuda.get_device_name(self.device)})"
                                        if self.device.type == "cuda" else "")
        text += f", precision {'float32' if self.precision == 'off' else self.precision}"
        return text + (", channels-last" if self.channels_last else "")

    def place(self, module: nn.Module) -> nn.Module:
        """Move a network to the device (channels-last when enabled) and make its batch-dependent layers draw and
        normalise over the global batch (:func:`shard_aware`), so N processes compute what one would. On the CPU
        with ``MOBILEKIT_FAST_DEPTHWISE=1`` its depthwise convolutions become
        :class:`~mobilekit.search.depthwise.DepthwiseConv2d` (same weights and ``state_dict``; a fast weight
        gradient on small maps); by default, and on CUDA, they stay torch's."""
        shard_aware(module, self.rank, self.world_size)
        if self.device.type == "cpu":
            use_fast_depthwise(module)
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of a global batch, on the device: x (N / world, 3, R, R), y (N / world,)."""
        if self.world_size > 1:
            if x.shape[0] % self.world_size:
                raise ValueError(f"a batch of {x.shape[0]} does not split over {self.world_size} processes")
            x, y = x.tensor_split(self.world_size)[self.rank], y.tensor_split(self.world_size)[self.rank]
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def autocast(self):
        """Autocast context of the forward pass (a no-op at ``precision == "off"``)."""
        if self.precision == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    # ---- steps ----------------------------------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor, params: Iterable[nn.Parameter],
                 optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Backward pass of ``loss`` (scaled under fp16), gradients averaged across ranks and unscaled, so the
        caller may inspect or rescale them before :meth:`step`."""
        self.scaler.scale(loss).backward()
        self.average_gradients(params)
        for opt in optimizers:
            self.scaler.unscale_(opt)

    def step(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        for opt in optimizers:
            self.scaler.step(opt)
        self.scaler.update()

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """All-reduce (mean) the gradients of ``params`` across ranks (one flat buffer); no-op in one process."""
        if self.world_size == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def agree(self, values: Iterable[float]) -> list[float]:
        """Rank 0's ``values`` (floats, e.g. candidate accuracies in 0..1) on every rank; themselves in one process.
        Numbers that steer a decision (which candidates survive an evolution, what a sampler learns) may differ
        across ranks by float noise; taking rank 0's keeps every rank on the same candidates, hence the same
        collectives."""
        values = [float(v) for v in values]
        if self.world_size == 1 or not values:
            return values
        import torch.distributed as dist

        shared = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(shared, 0)
        return shared.tolist()

    def from_writer(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object, e.g. a cache read from the run folder, which only rank 0
        writes and other machines may not see) on every rank; ``value`` itself in one process."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, 0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def max_difference(self, tensors: Iterable[torch.Tensor]) -> float:
        """Largest |value - rank 0's value| over ``tensors`` across ranks (0 in one process)."""
        if self.world_size == 1:
            return 0.0
        import torch.distributed as dist

        flat = torch.cat([t.detach().reshape(-1).double().to(self.device) for t in tensors])
        reference = flat.clone()
        dist.broadcast(reference, 0)
        diff = (flat - reference).abs().max().reshape(1)
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
        return float(diff)


def auto_channels_last(device: torch.device, precision: str) -> bool:
    """What ``--channels-last auto`` picks: on the CPU (oneDNN's convolutions run NHWC natively; measured on the
    2-core test host, one thread, batch 64 at 32x32: 1.2x the images/s of a derived network's training step, 1.2x
    a single-path search step, 1.5x in evaluation, and 2.2-2.5x at two threads on an idle host; same logits
    within 1e-5) and on CUDA with mixed precision (tensor cores want NHWC); off on CUDA in float32."""
    return device.type == "cpu" or precision != "off"


# ---- layers whose result depends on the whole batch -----------------------------------------------------------------
class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all ranks (SyncBatchNorm's arithmetic,
    which torch provides on GPUs only; here with the differentiable all-reduce of ``torch.distributed.nn``, on
    any backend). In one process, or in eval mode, it is plain BatchNorm2d. Same parameters and buffers."""

    world_size = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.world_size == 1:
            return super().forward(x)
        return self.normalize(x)

    def normalize(self, x: torch.Tensor, channels: slice = slice(None), weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
        """Training-mode normalisation of ``x`` (N, C, H, W), this rank's share, over the global batch with the
        running statistics and affine parameters of ``channels`` (C of them; their running statistics update in
        place, as :func:`~mobilekit.models.torch_builder.sliced_batch_norm` does for blocks that compute a slice of
        a larger layer); ``weight`` / ``bias`` (C,) replace the sliced affine parameters. (N, C, H, W) -> same."""
        with warnings.catch_warnings():     # deprecated name, but the differentiable all-reduce on any backend
            warnings.simplefilter("ignore", FutureWarning)
            from torch.distributed.nn.functional import all_reduce as _all_reduce

        def all_reduce(t: torch.Tensor) -> torch.Tensor:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return _all_reduce(t)

        n_channels = x.shape[1]
        count = x.numel() // n_channels * self.world_size
        mean = all_reduce(x.sum((0, 2, 3))) / count                                   # (C,)
        centred = x - mean[None, :, None, None]
        var = all_reduce(centred.pow(2).sum((0, 2, 3))) / count                      # biased, (C,)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean[channels].mul_(1 - m).add_(m * mean.detach())
                self.running_var[channels].mul_(1 - m).add_(m * var.detach() * count / max(1, count - 1))
        scale = torch.rsqrt(var + self.eps)
        out = centred * scale[None, :, None, None]
        if weight is None and self.affine:
            weight, bias = self.weight[channels], self.bias[channels]
        if weight is not None:
            out = out * weight[None, :, None, None] + bias[None, :, None, None]
        return out


class ShardDropout(nn.Dropout):
    """Dropout whose mask is drawn for the global batch and sliced to this rank's rows, so every rank's random
    generator advances as one process's would (and the masks are the ones one process draws). (N, ...) -> (N, ...)."""

    rank, world_size = 0, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        rows = x.shape[0]
        draw = torch.rand((rows * self.world_size, *x.shape[1:]), device=x.device)
        keep = (draw[self.rank * rows:(self.rank + 1) * rows] >= self.p).to(x.dtype)
        return x * keep / (1 - self.p)


def shard_aware(module: nn.Module, rank: int = 0, world_size: int = 1) -> nn.Module:
    """Turn every BatchNorm2d into :class:`GlobalBatchNorm2d` and every Dropout into :class:`ShardDropout` for
    ``(rank, world_size)``, in place (parameters, buffers and ``state_dict`` keys unchanged)."""
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.__class__ = GlobalBatchNorm2d
            layer.world_size = world_size
        elif isinstance(layer, nn.Dropout):
            layer.__class__ = ShardDropout
            layer.rank, layer.world_size = rank, world_size
    return module
