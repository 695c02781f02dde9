"""The CPU depthwise convolution with a fast weight gradient (mobilekit/search/depthwise.py): same outputs and
gradients as torch's across shapes, strides, paddings and layouts, fp32 and bf16 autocast; the layer swap of
Engine.place keeps weights, state_dict and export; the superkernel's masks still apply; small searches run."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilekit.cli import main
from mobilekit.models.torch_builder import MobileNet
from mobilekit.search import depthwise
from mobilekit.search.depthwise import (DepthwiseConv2d, conv_like, depthwise_conv2d, use_fast_depthwise,
                                        weight_algorithm)
from mobilekit.search.engine import Engine
from mobilekit.space import get_space, reference_architecture


# (channels, map size, kernel, stride, padding, path): the space's maps at 32 px (16x16 .. 1x1), padding k // 2 and
# others, kernels 3 / 5 / 7, odd sizes; the path that computes it: "function" (this module's weight gradient),
# "scale" (one tap left after cropping: a per-channel product) or "conv2d" (torch's as it is)
CASES = [
    (6, 8, 5, 1, 2, "function"), (6, 8, 5, 2, 2, "function"), (5, 4, 5, 1, 2, "function"),
    (5, 4, 5, 2, 2, "function"), (4, 3, 5, 1, 2, "function"), (4, 5, 7, 2, 3, "function"),
    (7, 2, 5, 1, 2, "function"), (7, 2, 5, 2, 2, "function"), (8, 1, 5, 1, 2, "scale"), (8, 1, 3, 1, 1, "scale"),
    (5, 1, 5, 2, 2, "scale"), (3, 2, 3, 1, 1, "function"), (3, 2, 3, 2, 1, "function"), (6, 6, 5, 1, 0, "function"),
    (6, 6, 5, 1, 1, "function"), (6, 8, 3, 1, 1, "conv2d"), (4, 16, 5, 1, 2, "conv2d"), (4, 16, 5, 2, 2, "function"),
]


def _layouts(x):
    return {"contiguous": x.contiguous(), "channels-last": x.contiguous(memory_format=torch.channels_last)}


def _grads(fn, x, w, b, go):
    x, w = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    b = None if b is None else b.detach().clone().requires_grad_()
    out = fn(x, w, b)
    inputs = (x, w) if b is None else (x, w, b)
    return (out, *torch.autograd.grad(out, inputs, go)), out.grad_fn


@pytest.mark.parametrize("channels, size, kernel, stride, padding, path", CASES)
@pytest.mark.parametrize("layout", ["contiguous", "channels-last"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_outputs_and_gradients_match_torch(channels, size, kernel, stride, padding, path, layout, with_bias):
    torch.manual_seed(channels * 100 + size * 10 + kernel)
    x = _layouts(torch.randn(3, channels, size, size))[layout]
    w = torch.randn(channels, 1, kernel, kernel)
    b = torch.randn(channels) if with_bias else None
    native_out = F.conv2d(x, w, b, stride, padding, 1, channels)
    go = _layouts(torch.randn_like(native_out))[layout]
    native, _ = _grads(lambda x, w, b: F.conv2d(x, w, b, stride, padding, 1, channels), x, w, b, go)
    mine, grad_fn = _grads(lambda x, w, b: depthwise_conv2d(x, w, b, stride, padding), x, w, b, go)
    assert ("_DepthwiseFunction" in type(grad_fn).__name__) == (path == "function")
    assert ("Convolution" in type(grad_fn).__name__) == (path == "conv2d")
    assert mine[0].shape == native[0].shape
    assert mine[0].is_contiguous(memory_format=torch.channels_last) == native[0].is_contiguous(
        memory_format=torch.channels_last)
    for name, a, e in zip(("output", "input grad", "weight grad", "bias grad"), mine, native):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_both_weight_gradient_formulations_match_torch_in_both_layouts():
    torch.manual_seed(0)
    for size, kernel, stride in [(4, 5, 1), (2, 5, 2), (8, 5, 2), (3, 7, 1)]:
        x = torch.randn(5, 6, size, size)
        w = torch.randn(6, 1, kernel, kernel)
        go = torch.randn_like(F.conv2d(x, w, None, stride, kernel // 2, 1, 6))
        expected = torch.ops.aten.convolution_backward(go, x, w, None, [stride] * 2, [kernel // 2] * 2, [1, 1], False,
                                                       [0, 0], 6, [False, True, False])[1]
        for layout in ("contiguous", "channels-last"):
            xl, gl = _layouts(x)[layout], _layouts(go)[layout]
            for compute in (depthwise._weight_grad_gemm, depthwise._weight_grad_taps):
                got = compute(xl, gl, (kernel, kernel), (stride, stride), (kernel // 2, kernel // 2))
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_algorithm_follows_layout_and_map_size():
    cl = lambda x: x.contiguous(memory_format=torch.channels_last)
    assert weight_algorithm(torch.zeros(2, 8, 4, 4), (4, 4)) == "gemm"
    assert weight_algorithm(torch.zeros(2, 8, 2, 2), (2, 2)) == "gemm"
    assert weight_algorithm(cl(torch.zeros(2, 8, 4, 4)), (4, 4)) == "gemm"
    assert weight_algorithm(cl(torch.zeros(2, 8, 2, 2)), (2, 2)) == "taps"
    assert weight_algorithm(cl(torch.zeros(2, 8, 16, 16)), (8, 8)) == "taps"


@pytest.mark.parametrize("layout", ["contiguous", "channels-last"])
def test_gradcheck_in_float64(layout):
    torch.manual_seed(1)
    for size, kernel, stride in [(4, 5, 1), (3, 5, 2), (2, 3, 1), (1, 5, 1), (2, 5, 2)]:
        x = _layouts(torch.randn(2, 3, size, size, dtype=torch.float64))[layout].requires_grad_()
        w = torch.randn(3, 1, kernel, kernel, dtype=torch.float64, requires_grad=True)
        b = torch.randn(3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, w, b: depthwise_conv2d(x, w, b, stride, kernel // 2), (x, w, b))


def test_cropped_taps_give_the_same_output_bitwise_where_one_tap_is_left():
    torch.manual_seed(2)
    x, w = torch.randn(4, 32, 1, 1), torch.randn(32, 1, 5, 5)
    assert torch.equal(depthwise_conv2d(x, w, None, 1, 2), F.conv2d(x, w, None, 1, 2, 1, 32))
    x = torch.randn(4, 32, 2, 2)                  # stride 2 on 2x2: taps [2, 4) of 5 per axis are used
    assert depthwise._crop((2, 2), (5, 5), (2, 2), (2, 2)) == ((2, 4, 0), (2, 4, 0))
    torch.testing.assert_close(depthwise_conv2d(x, w, None, 2, 2), F.conv2d(x, w, None, 2, 2, 1, 32))
    w_req = w.clone().requires_grad_()
    depthwise_conv2d(torch.randn(4, 32, 1, 1), w_req, None, 1, 2).sum().backward()
    assert w_req.grad[:, :, 2, 2].abs().sum() > 0 and w_req.grad.abs().sum() == w_req.grad[:, :, 2, 2].abs().sum()


def test_bf16_autocast_matches_torch_within_bf16_precision():
    torch.manual_seed(3)
    for size, kernel, stride in [(4, 5, 1), (2, 5, 2), (8, 5, 1), (1, 5, 1)]:
        x = torch.randn(8, 16, size, size).contiguous(memory_format=torch.channels_last)
        w = torch.randn(16, 1, kernel, kernel)
        results = []
        for fn in (lambda x, w: F.conv2d(x, w, None, stride, kernel // 2, 1, 16),
                   lambda x, w: depthwise_conv2d(x, w, None, stride, kernel // 2)):
            xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = fn(xr, wr)
            out.float().pow(2).sum().backward()
            results.append((out, xr.grad, wr.grad))
        (out, gx, gw), (out_n, gx_n, gw_n) = results[1], results[0]
        assert out.dtype == out_n.dtype == torch.bfloat16 and gx.dtype == gw.dtype == torch.float32
        torch.testing.assert_close(out, out_n)
        scale = gw_n.abs().max()
        assert (gw - gw_n).abs().max() <= 2e-2 * scale
        torch.testing.assert_close(gx, gx_n, rtol=2e-2, atol=2e-2 * gx_n.abs().max().item())


def test_no_grad_and_dilation_are_plain_conv2d():
    x, w = torch.randn(2, 4, 4, 4, requires_grad=True), torch.randn(4, 1, 5, 5, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(depthwise_conv2d(x, w, None, 1, 2), F.conv2d(x, w, None, 1, 2, 1, 4))
    out = depthwise_conv2d(x, w, None, 1, 4, dilation=2)
    assert "_DepthwiseFunction" not in type(out.grad_fn).__name__
    assert torch.equal(out, F.conv2d(x, w, None, 1, 4, 2, 4))


# ---- layers and the engine -------------------------------------------------------------------------------------------
def _network(seed=0):
    torch.manual_seed(seed)
    space = get_space(width=0.35, resolution=32, num_classes=10)
    return MobileNet(reference_architecture(space))


def test_engine_place_swaps_depthwise_convs_on_the_cpu_keeping_state_dict_and_export(tmp_path):
    net = _network()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    depthwise_layers = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise_layers
    with depthwise.using(True):
        Engine(channels_last=True).place(net)
    assert all(type(m) is DepthwiseConv2d for m in depthwise_layers)
    assert all(type(m) is nn.Conv2d for m in net.modules() if isinstance(m, nn.Conv2d) and m.groups == 1)
    state = net.state_dict()
    assert state.keys() == before.keys() and all(torch.equal(state[k], before[k]) for k in before)
    torch.save(state, tmp_path / "weights.pt")
    plain = _network(seed=1)
    plain.load_state_dict(torch.load(tmp_path / "weights.pt"))
    x = torch.randn(2, 3, 32, 32)
    net.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain(x))
    from mobilekit.export.onnx_export import export_onnx

    path = export_onnx(net, tmp_path / "placed.onnx", (1, 3, 32, 32), exporter="torchscript")
    assert path.stat().st_size > 0


def test_the_switch_leaves_layers_native(monkeypatch):
    monkeypatch.delenv("MOBILEKIT_FAST_DEPTHWISE", raising=False)
    net = _network()
    assert not depthwise.enabled()                                   # the default: torch's
    Engine().place(net)
    with depthwise.using(True), depthwise.disabled():
        assert use_fast_depthwise(net) == 0
    assert not any(isinstance(m, DepthwiseConv2d) for m in net.modules())
    monkeypatch.setenv("MOBILEKIT_FAST_DEPTHWISE", "0")
    assert use_fast_depthwise(net) == 0
    monkeypatch.setenv("MOBILEKIT_FAST_DEPTHWISE", "1")
    with depthwise.disabled():
        assert use_fast_depthwise(net) == 0
    assert use_fast_depthwise(net) == sum(1 for m in net.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)


def test_a_bad_switch_value_is_one_clear_error(monkeypatch):
    from mobilekit.errors import ConfigError

    monkeypatch.setenv("MOBILEKIT_FAST_DEPTHWISE", "yes")
    with pytest.raises(ConfigError, match="MOBILEKIT_FAST_DEPTHWISE='yes': set it to 1"):
        Engine().place(_network())


def _assert_near(got, expected, name, relative=1e-9):
    """Within ``relative`` of the tensor's largest magnitude (float64: summation order differs in some layers and
    the difference travels through BatchNorm to every earlier layer's gradient)."""
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= relative * scale + 1e-7, name


def test_placed_network_trains_like_the_native_one():
    nets = [_network().double(), _network().double()]          # float64: only the formulas may differ, not rounding
    with depthwise.disabled():
        Engine(channels_last=True).place(nets[0])
    with depthwise.using(True):
        Engine(channels_last=True).place(nets[1])
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))
    grads = []
    for net in nets:
        torch.manual_seed(6)                                            # the same dropout mask
        net.train()
        F.cross_entropy(net(x), y).backward()
        grads.append({n: p.grad for n, p in net.named_parameters()})
    for name in grads[0]:
        _assert_near(grads[1][name], grads[0][name], name)


def test_conv_like_follows_the_layer_class():
    layer = nn.Conv2d(4, 4, 5, 2, 2, groups=4, bias=False)
    x = torch.randn(2, 4, 4, 4)
    w = layer.weight * torch.rand(5, 5)                               # a masked copy, as the superkernel's
    assert "_DepthwiseFunction" not in type(conv_like(layer, x, w, 2, 2).grad_fn).__name__
    with depthwise.using(True):
        use_fast_depthwise(layer)
    out = conv_like(layer, x, w, 2, 2)
    assert "_DepthwiseFunction" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, F.conv2d(x, w, None, 2, 2, 1, 4))


def test_superkernel_masks_still_apply_with_the_fast_gradient():
    from _synthetic_tables import synthetic_table
    from mobilekit.latency.differentiable import SuperkernelLatency
    from mobilekit.search.superkernel import SuperNet

    grid = SuperkernelLatency(synthetic_table(width=0.35)).grid
    space = get_space(width=0.35, resolution=32, num_classes=10)
    nets = []
    for fast in (False, True):
        torch.manual_seed(4)
        net = SuperNet(space, grid, relax="sigmoid").double()
        with torch.no_grad():
            for t in net.threshold_parameters():
                t.uniform_(0.6, 1.4)                   # a mix of on and off kernel / expansion / SE decisions
        with depthwise.using(fast):
            Engine(channels_last=True).place(net)
        nets.append(net)
    assert any(isinstance(m, DepthwiseConv2d) for m in nets[1].modules())
    assert not any(isinstance(m, DepthwiseConv2d) for m in nets[0].modules())
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))
    grads = []
    for net in nets:
        torch.manual_seed(5)
        net.train()
        logits, _ = net.forward_with_decisions(x)
        F.cross_entropy(logits, y).backward()
        grads.append({n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    masked = [n for n in grads[0] if n.endswith("depthwise.0.weight")]
    assert masked and any((grads[1][n] == 0).any() for n in masked)     # off rings / channels get no gradient
    for name in grads[0]:
        _assert_near(grads[1][name], grads[0][name], name)


# ---- small searches --------------------------------------------------------------------------------------------------
QUICK = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "16", "--export", "none", "--no-progress",
         "--final-epochs", "1", "--channels-last", "on", "--train-resolution", "32"]


@pytest.mark.parametrize("method, extra", [
    ("single-path", []),
    ("spos", ["--population", "4", "--generations", "1", "--bn-steps", "1", "--eval-samples", "64"])])
def test_a_tiny_search_runs_with_the_fast_gradient(tmp_path, table_path, target, method, extra, monkeypatch):
    monkeypatch.setenv("MOBILEKIT_FAST_DEPTHWISE", "1")
    swapped = []
    original = depthwise.use_fast_depthwise
    monkeypatch.setattr("mobilekit.search.engine.use_fast_depthwise", lambda m: swapped.append(original(m)))
    out = tmp_path / "run"
    code = main(["search", "--method", method, "--table", str(table_path), "--target-ms", str(target), "--out",
                 str(out), *QUICK, *extra])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and summary["search_steps"] >= 2
    assert sum(n > 0 for n in swapped) >= 2             # the supernet and the final network (placed again: 0)
