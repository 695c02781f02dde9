"""Depthwise convolution with a fast weight gradient on the CPU (issue 26).

On the CPU, torch's depthwise convolution (oneDNN) computes the weight gradient of a kernel larger than 3x3 on a
slow generic path: on the 2-core test host, batch 64, one thread, a 5x5 kernel's weight gradient took 1-4 ms in
channels-last and 9-45 ms in NCHW on 1x1 to 8x8 maps, 10-100x the forward pass, where a 3x3 kernel's took
0.1-0.3 ms; and a forward pass whose padding covers the whole map (a 5x5 kernel on a 1x1 map) took 20 ms instead of
0.1 ms. At 32 px every depthwise layer of the search space works on a map of 16x16 or less, so in a single-path
search step these were most of the time.

:func:`depthwise_conv2d` computes what ``F.conv2d(x, weight, bias, stride, padding, 1, groups=C)`` computes:

* **taps that only ever see padding are cropped** (a 5x5 kernel on a 1x1 map is its centre tap, on a 2x2 map
  with stride 1 its central 3x3): a slice of the weight (so its gradient is zero there, through autograd) and a
  smaller padding giving the same output size. The products left out are products with zero padding, so the sum
  is the same (bitwise where one tap is left; otherwise up to float summation order).
* where **one tap is left** (every layer on a 1x1 map), the convolution is a per-channel product
  ``x[:, :, ::s, ::s] * w + b``, by autograd's elementwise ops: oneDNN took 20-280 ms per layer for the forward
  and backward of a 5x5 (or a cropped 1x1) depthwise kernel on a 1x1 map at batch 4-64, 0.1-0.4 ms here
  (``bench/depthwise_layers.py``).
* where the (cropped) kernel is larger than 3x3 or the input map is 2x2 or smaller (where a 3x3 kernel's weight
  gradient took 1-7 ms), and the output map has at most :data:`MAX_FAST_OUTPUT` positions: a
  :class:`torch.autograd.Function` whose forward pass is ``F.conv2d`` and whose backward pass computes the input
  gradient with torch's own kernel (``aten.convolution_backward``), the bias gradient as a sum, and the
  weight gradient ``dW[c, p, q] = sum_{n, i, j} dY[n, c, i, j] X[n, c, s i + p - P, s j + q - P]`` in one of two
  ways (:func:`_weight_grad_gemm`, :func:`_weight_grad_taps`), chosen by the memory layout and map size from
  measurements (``bench/depthwise_layers.py`` and tests/test_search_depthwise.py's comparison).
* everything else (3x3 kernels on maps from 3x3 up, larger output maps, dilation, CUDA, no gradient needed):
  ``F.conv2d`` as it is. (On 16x16 and larger maps neither formulation here beat torch's consistently.)

Under CPU autocast the input, weight and bias are cast to the autocast dtype first, as autocast casts them for
``conv2d``; the weight gradient is then accumulated in float32 and returned in that dtype (as torch's is).

:class:`DepthwiseConv2d` is an ``nn.Conv2d`` (same parameters, ``state_dict`` keys and ``repr``) whose forward is
:func:`depthwise_conv2d`; :func:`use_fast_depthwise` turns a network's depthwise convolutions into it in place,
which :meth:`mobilekit.search.engine.Engine.place` does on the CPU when :func:`enabled`: only with
``MOBILEKIT_FAST_DEPTHWISE=1`` in the environment (or inside :func:`using`), since measured interleaved on the
shared test host it made the depthwise layers' forward + backward 1.9-2.1x faster and the single-path supernet
step 1.06-1.3x, but whole search and training loops were not clearly faster (median ratios 0.91-1.05 over 9
alternating rounds; ``bench/depthwise_layers.py``, ``bench/train_throughput.py --rounds 4``; numbers in
docs/results.md). The supernets that slice a depthwise weight themselves call :func:`conv_like` with their layer,
so they follow the layer's class.
"""

from __future__ import annotations

import contextlib
import os
from functools import lru_cache
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from mobilekit.errors import ConfigError

MAX_FAST_OUTPUT = 64            # output positions (Ho x Wo) up to which the weight gradient is computed here
MAX_NATIVE_KERNEL = 3           # kernels up to 3x3: torch's own weight gradient is fast (oneDNN's depthwise kernel)
TINY_MAP = 4                    # ... except on input maps of <= 4 positions (2x2): 1-7 ms for a 3x3, 0.1-0.4 here
_switch: dict[str, bool | None] = {"on": None}     # set by :func:`using`; None: the environment decides


ENV = "MOBILEKIT_FAST_DEPTHWISE"


def enabled() -> bool:
    """Whether :func:`use_fast_depthwise` swaps layers: inside :func:`using`, what it says; otherwise only with
    ``MOBILEKIT_FAST_DEPTHWISE=1`` in the environment (off by default: measured on the shared 2-core host, it did
    not make the single-path search step clearly faster -- see docs/search.md). Raises ConfigError for a value
    other than 0 or 1."""
    if _switch["on"] is not None:
        return bool(_switch["on"])
    value = os.environ.get(ENV, "0").strip()
    if value not in ("", "0", "1"):
        raise ConfigError(f"environment variable {ENV}={value!r}: set it to 1 (mobilekit's CPU depthwise "
                          f"convolution) or 0 / unset (torch's)")
    return value == "1"


@contextlib.contextmanager
def using(on: bool) -> Iterator[None]:
    """Within this context :func:`use_fast_depthwise` (hence ``Engine.place``) swaps layers if ``on``, whatever the
    environment says (benchmarks, tests)."""
    before = _switch["on"]
    _switch["on"] = on
    try:
        yield
    finally:
        _switch["on"] = before


def disabled() -> contextlib.AbstractContextManager[None]:
    """``using(False)``: layers stay native within this context."""
    return using(False)


# ---- geometry ------------------------------------------------------------------------------------------------------
def _used_taps(size: int, kernel: int, stride: int, padding: int) -> tuple[int, int, int]:
    """Along one spatial axis: (first, end, padding) of the kernel taps that touch the input for some output
    position, and the padding that keeps the output size with the taps [first, end) only."""
    out = (size + 2 * padding - kernel) // stride + 1
    first, end = kernel, 0
    for tap in range(kernel):
        rows = [stride * i + tap - padding for i in range(out)]
        if any(0 <= r < size for r in rows):
            first, end = min(first, tap), max(end, tap + 1)
    if end <= first:                                   # no tap sees the input (output is all bias): keep it whole
        return 0, kernel, padding
    new_padding = padding - first
    if new_padding < 0 or (size + 2 * new_padding - (end - first)) // stride + 1 != out:
        return 0, kernel, padding
    return first, end, new_padding


@lru_cache(maxsize=256)
def _crop(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
          padding: tuple[int, int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(first, end, padding) of the used taps along rows and columns (:func:`_used_taps`)."""
    return (_used_taps(size[0], kernel[0], stride[0], padding[0]),
            _used_taps(size[1], kernel[1], stride[1], padding[1]))


@lru_cache(maxsize=256)
def _tap_pairs(size: tuple[int, int], out: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
               padding: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """For the (output position, input position) pairs of one channel, flattened as ``o * H W + l``: the pairs a
    kernel tap connects (P,) and that tap's index ``p * kw + q`` (P,), both int64."""
    (h, w), (ho, wo), (kh, kw), (sh, sw), (ph, pw) = size, out, kernel, stride, padding
    i = torch.arange(ho).view(ho, 1, 1, 1)
    j = torch.arange(wo).view(1, wo, 1, 1)
    y = torch.arange(h).view(1, 1, h, 1)
    x = torch.arange(w).view(1, 1, 1, w)
    tap_row, tap_col = y - sh * i + ph, x - sw * j + pw                       # (ho, 1, h, 1), (1, wo, 1, w)
    valid = ((tap_row >= 0) & (tap_row < kh) & (tap_col >= 0) & (tap_col < kw)).reshape(-1)
    tap = (tap_row * kw + tap_col).expand(ho, wo, h, w).reshape(-1)
    pairs = valid.nonzero().squeeze(1)
    return pairs, tap[pairs]


# ---- weight gradients ----------------------------------------------------------------------------------------------
def _weight_grad_gemm(x: torch.Tensor, grad_out: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                      padding: tuple[int, int]) -> torch.Tensor:
    """dW (C, 1, kh, kw) in float32 (float64 for float64 inputs) as one batched matmul over channels:
    ``M_c = dY_c^T X_c``, (Ho Wo, H W) per channel with the batch as the contraction, then each kernel tap sums
    the (output, input) pairs it connects. ``C N Ho Wo H W`` multiply-adds: fewer than the im2col formulation's
    ``C N Ho Wo kh kw`` where the map is smaller than the kernel's reach, and at matmul speed; the inputs are
    copied to (C, N, L) first."""
    n, c, h, w = x.shape
    ho, wo = grad_out.shape[2:]
    acc = torch.promote_types(x.dtype, torch.float32)
    xs = x.to(acc, memory_format=torch.contiguous_format).view(n, c, h * w).transpose(0, 1)
    gs = grad_out.to(acc, memory_format=torch.contiguous_format).view(n, c, ho * wo).transpose(0, 1)
    products = torch.bmm(gs.transpose(1, 2), xs).reshape(c, -1)            # (C, Ho Wo H W)
    pairs, tap = _tap_pairs((h, w), (ho, wo), kernel, stride, padding)
    grad = products.new_zeros(c, kernel[0] * kernel[1])
    grad.index_add_(1, tap, products.index_select(1, pairs))
    return grad.view(c, 1, *kernel)


def _weight_grad_taps(x: torch.Tensor, grad_out: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                      padding: tuple[int, int]) -> torch.Tensor:
    """dW (C, 1, kh, kw) in float32 (float64 for float64 inputs), one tap at a time: the product of dY with the
    strided view of X the tap reads (its valid part only), summed over batch and positions. In channels-last the
    channels are the innermost dimension of both, so each product and sum is a vectorised pass without copies."""
    _, c, h, w = x.shape
    ho, wo = grad_out.shape[2:]
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    acc = torch.promote_types(x.dtype, torch.float32)
    x, grad_out = x.to(acc), grad_out.to(acc)
    grad = x.new_zeros(c, kh, kw)
    for p in range(kh):
        i0, i1 = max(0, -((p - ph) // sh)), min(ho, (h - 1 - p + ph) // sh + 1)
        if i1 <= i0:
            continue
        for q in range(kw):
            j0, j1 = max(0, -((q - pw) // sw)), min(wo, (w - 1 - q + pw) // sw + 1)
            if j1 <= j0:
                continue
            window = x[:, :, sh * i0 + p - ph:sh * (i1 - 1) + p - ph + 1:sh,
                       sw * j0 + q - pw:sw * (j1 - 1) + q - pw + 1:sw]
            grad[:, p, q] = (grad_out[:, :, i0:i1, j0:j1] * window).sum((0, 2, 3))
    return grad.view(c, 1, kh, kw)


def weight_algorithm(x: torch.Tensor, out_size: tuple[int, int]) -> str:
    """``"gemm"`` or ``"taps"`` for a weight gradient computed here (measured on the 2-core host, batch 64, 5x5:
    NCHW: the matmul everywhere; channels-last: the matmul from 3x3 to 8x8 maps, where its copy to (C, N, L)
    pays, the tap loop on maps of 2x2 or less and larger than 8x8)."""
    h, w = x.shape[2:]
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() and not 4 < h * w <= 64:
        return "taps"
    return "gemm"


class _DepthwiseFunction(torch.autograd.Function):
    """``F.conv2d`` of a depthwise convolution (dilation 1) with the weight gradient of :func:`weight_algorithm`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                padding: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride, padding, 1, x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        with torch.autocast("cpu", enabled=False):
            if need_x:
                grad_x = torch.ops.aten.convolution_backward(
                    grad_out, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0],
                    x.shape[1], [True, False, False])[0]
            if need_w:
                kernel = tuple(weight.shape[2:])
                compute = _weight_grad_gemm if weight_algorithm(x, grad_out.shape[2:]) == "gemm" else _weight_grad_taps
                grad_w = compute(x, grad_out, kernel, ctx.stride, ctx.padding).to(weight.dtype)
            if need_b and ctx.has_bias:
                acc = torch.promote_types(grad_out.dtype, torch.float32)
                grad_b = grad_out.sum((0, 2, 3), dtype=acc).to(grad_out.dtype)
        return grad_x, grad_w, grad_b, None, None


def _autocast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """What autocast does to an argument of a lower-precision op: floating tensors other than float64 to ``dtype``."""
    if t is None or not t.is_floating_point() or t.dtype == torch.float64:
        return t
    return t.to(dtype)


def _tracing() -> bool:
    """Whether this runs under TorchScript tracing/scripting or ``torch.compile`` (they get ``F.conv2d`` as is)."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                     dilation: int | tuple[int, int] = 1) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)`` for x (N, C, H, W) and weight
    (C, 1, kh, kw), on the CPU with cropped taps and the fast weight gradient of this module (see its docstring);
    elsewhere, or with dilation, exactly ``F.conv2d``. Returns (N, C, Ho, Wo)."""
    channels = x.shape[1]
    if isinstance(padding, str):
        return F.conv2d(x, weight, bias, stride, padding, dilation, channels)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    if (x.device.type != "cpu" or dilation != (1, 1) or x.dim() != 4 or weight.shape[0] != channels
            or weight.shape[1] != 1):
        return F.conv2d(x, weight, bias, stride, padding, dilation, channels)
    if torch.is_autocast_enabled("cpu"):          # autocast's cast for conv2d, before the function
        dtype = torch.get_autocast_dtype("cpu")
        x, weight, bias = (_autocast(t, dtype) for t in (x, weight, bias))
    with torch.autocast("cpu", enabled=False):
        (r0, r1, ph), (c0, c1, pw) = _crop(tuple(x.shape[2:]), tuple(weight.shape[2:]), stride, padding)
        if (r0, r1, c0, c1) != (0, weight.shape[2], 0, weight.shape[3]):
            weight, padding = weight[:, :, r0:r1, c0:c1], (ph, pw)
        kh, kw = weight.shape[2:]
        if (kh, kw) == (1, 1) and padding == (0, 0) and not _tracing():    # one tap left: a per-channel scale
            y = x[:, :, ::stride[0], ::stride[1]] * weight.reshape(1, channels, 1, 1)
            return y if bias is None else y + bias.reshape(1, channels, 1, 1)
        out_h = (x.shape[2] + 2 * padding[0] - kh) // stride[0] + 1
        out_w = (x.shape[3] + 2 * padding[1] - kw) // stride[1] + 1
        grad_needed = torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad
                                                   or (bias is not None and bias.requires_grad))
        slow_native = max(kh, kw) > MAX_NATIVE_KERNEL or x.shape[2] * x.shape[3] <= TINY_MAP
        if (not grad_needed or not slow_native or out_h * out_w > MAX_FAST_OUTPUT
                or _tracing()):
            return F.conv2d(x, weight, bias, stride, padding, 1, channels)
        return _DepthwiseFunction.apply(x, weight, bias, stride, padding)


# ---- layers --------------------------------------------------------------------------------------------------------
class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (groups = in = out channels, zero padding) computed by :func:`depthwise_conv2d`.
    Same parameters, buffers and ``state_dict`` as the ``nn.Conv2d`` it replaces: (N, C, H, W) -> (N, C, Ho, Wo)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return depthwise_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


def is_depthwise(layer: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` with one filter per input channel (groups = in = out > 1) and zero padding."""
    return (type(layer) is nn.Conv2d and layer.groups > 1 and layer.groups == layer.in_channels
            == layer.out_channels and layer.padding_mode == "zeros" and not isinstance(layer.padding, str))


def use_fast_depthwise(module: nn.Module) -> int:
    """Turn every depthwise ``nn.Conv2d`` of ``module`` into :class:`DepthwiseConv2d`, in place (parameters and
    ``state_dict`` unchanged); a no-op when not :func:`enabled`. Returns how many layers changed."""
    if not enabled():
        return 0
    count = 0
    for layer in module.modules():
        if is_depthwise(layer):
            layer.__class__ = DepthwiseConv2d
            count += 1
    return count


def conv_like(layer: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, stride: int | tuple[int, int],
              padding: int | tuple[int, int]) -> torch.Tensor:
    """Depthwise convolution of x (N, C, H, W) with ``weight`` (C, 1, k, k), a slice or masked copy of ``layer``'s
    weight, at ``layer``'s dilation: :func:`depthwise_conv2d` when ``layer`` is a :class:`DepthwiseConv2d`,
    ``F.conv2d`` otherwise."""
    if isinstance(layer, DepthwiseConv2d):
        return depthwise_conv2d(x, weight, None, stride, padding, layer.dilation)
    return F.conv2d(x, weight, None, stride, padding, layer.dilation, x.shape[1])
