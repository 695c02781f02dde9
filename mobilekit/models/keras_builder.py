"""Keras builder for the same decoded architecture, and weight transfer from the PyTorch model.

Keras models take NHWC float inputs (N, H, W, 3). To match PyTorch exactly: BatchNorm epsilon 1e-5, and
stride-2 convolutions use explicit symmetric zero padding (k//2) + 'valid' (TensorFlow's 'same' pads
asymmetrically at stride 2). Layer names mirror the PyTorch module paths (``layers.3.expand.0`` ->
``layers_3_expand_0``) so :func:`transfer_weights` can pair them.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from mobilekit.models.torch_builder import BN_EPS, MBConv, MobileNet  # noqa: E402
from mobilekit.space import Architecture, LayerSpec, SearchSpace  # noqa: E402

layers = keras.layers


def _name(prefix: str) -> str:
    return prefix.replace(".", "_")


def _conv_bn(x, out_ch: int, kernel: int, stride: int, prefix: str, depthwise: bool = False, act: bool = True):
    """Mirror of :func:`mobilekit.models.torch_builder.conv_bn`; ``prefix`` is the torch module path."""
    if stride > 1 and kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=_name(prefix + ".pad"))(x)
        padding = "valid"
    else:
        padding = "same"
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False, name=_name(prefix + ".0"))(x)
    else:
        x = layers.Conv2D(out_ch, kernel, stride, padding=padding, use_bias=False, name=_name(prefix + ".0"))(x)
    x = layers.BatchNormalization(epsilon=BN_EPS, momentum=0.9, name=_name(prefix + ".1"))(x)
    if act:
        x = layers.ReLU(max_value=6.0, name=_name(prefix + ".2"))(x)
    return x


def keras_mbconv(x, spec: LayerSpec, prefix: str):
    """Apply one MBConv (or skip) to NHWC tensor ``x``."""
    op = spec.op
    if op.is_skip:
        return x
    inputs = x
    mid = spec.mid_channels
    if op.expansion != 1:
        x = _conv_bn(x, mid, 1, 1, prefix + ".expand")
    x = _conv_bn(x, mid, op.kernel, spec.stride, prefix + ".depthwise", depthwise=True)
    if op.se_ratio:
        scale = layers.GlobalAveragePooling2D(keepdims=True, name=_name(prefix + ".se.pool"))(x)
        scale = layers.Conv2D(spec.se_channels, 1, activation="relu", name=_name(prefix + ".se.reduce"))(scale)
        scale = layers.Conv2D(mid, 1, activation="sigmoid", name=_name(prefix + ".se.expand"))(scale)
        x = layers.Multiply(name=_name(prefix + ".se.mul"))([x, scale])
    x = _conv_bn(x, spec.out_channels, 1, 1, prefix + ".project", act=False)
    if spec.has_residual:
        x = layers.Add(name=_name(prefix + ".add"))([x, inputs])
    return x


def keras_stem(x, space: SearchSpace):
    return _conv_bn(x, space.stem_channels, 3, 2, "stem")


def keras_head(x, space: SearchSpace):
    x = _conv_bn(x, space.head_channels, 1, 1, "head.conv")
    x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    return layers.Dense(space.num_classes, name="head_classifier")(x)


def build_keras_model(arch: Architecture) -> keras.Model:
    """The whole network: (N, R, R, 3) NHWC float -> (N, num_classes) logits."""
    space = arch.space
    inputs = keras.Input((space.resolution, space.resolution, space.in_channels), batch_size=1, name="input")
    x = keras_stem(inputs, space)
    for spec in arch.layers():
        x = keras_mbconv(x, spec, f"layers.{spec.index}")
    outputs = keras_head(x, space)
    return keras.Model(inputs, outputs, name="mobilekit")


def build_keras_layer_model(spec: LayerSpec) -> keras.Model:
    """A model of one layer position alone: (1, H, W, in_ch) -> (1, H/s, W/s, out_ch), for profiling."""
    h, w = spec.in_hw
    inputs = keras.Input((h, w, spec.in_channels), batch_size=1, name="input")
    return keras.Model(inputs, keras_mbconv(inputs, spec, f"layers.{spec.index}"), name=f"layer{spec.index}_{spec.op.name}")


def build_keras_stem_model(space: SearchSpace) -> keras.Model:
    inputs = keras.Input((space.resolution, space.resolution, space.in_channels), batch_size=1, name="input")
    return keras.Model(inputs, keras_stem(inputs, space), name="stem")


def build_keras_head_model(space: SearchSpace) -> keras.Model:
    h, w = space.head_in_hw
    inputs = keras.Input((h, w, space.positions[-1].out_channels), batch_size=1, name="input")
    return keras.Model(inputs, keras_head(inputs, space), name="head")


def _torch_to_keras_kernel(module: nn.Module) -> list[np.ndarray]:
    weight = module.weight.detach().cpu().numpy()
    if isinstance(module, nn.Linear):
        return [weight.T, module.bias.detach().cpu().numpy()]
    if module.groups > 1:  # depthwise (C, 1, kh, kw) -> (kh, kw, C, 1)
        kernel = weight.transpose(2, 3, 0, 1)
    else:  # (O, I, kh, kw) -> (kh, kw, I, O)
        kernel = weight.transpose(2, 3, 1, 0)
    out = [kernel]
    if module.bias is not None:
        out.append(module.bias.detach().cpu().numpy())
    return out


def transfer_weights(torch_module: nn.Module, keras_model: keras.Model, prefix: str = "") -> int:
    """Copy every Conv2d / BatchNorm2d / Linear of ``torch_module`` into the Keras layer of the same path.

    ``prefix`` is prepended to torch names (e.g. ``"layers.3."`` for a single-layer model). Returns the number
    of layers copied. Raises ``KeyError`` naming a torch layer with no Keras counterpart.
    """
    by_name = {layer.name: layer for layer in keras_model.layers}
    renames = {"head.classifier": "head_classifier"}
    copied = 0
    for name, module in torch_module.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            continue
        full = prefix + name
        key = _name(renames.get(full, full))
        if key not in by_name:
            raise KeyError(f"no Keras layer {key!r} for torch layer {full!r}")
        if isinstance(module, nn.BatchNorm2d):
            weights = [t.detach().cpu().numpy() for t in (module.weight, module.bias, module.running_mean, module.running_var)]
        else:
            weights = _torch_to_keras_kernel(module)
        by_name[key].set_weights(weights)
        copied += 1
    return copied


def keras_model_from_torch(model: MobileNet) -> keras.Model:
    """Build the Keras twin of a PyTorch :class:`MobileNet` carrying its weights."""
    keras_model = build_keras_model(model.arch)
    transfer_weights(model, keras_model)
    return keras_model


def keras_layer_from_torch(layer: MBConv) -> keras.Model:
    """Keras twin of one PyTorch :class:`MBConv` (for single-layer exports)."""
    keras_model = build_keras_layer_model(layer.spec)
    transfer_weights(layer, keras_model, prefix=f"layers.{layer.spec.index}.")
    return keras_model
