"""The superkernel's sliced forward: at hard decisions it runs only the chosen subsets (the derived block's
computation) and adds an off subset's contribution only while its decision is in play, with the masked
superkernel's threshold gradients."""

import itertools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from _synthetic_tables import synthetic_table
from mobilekit.latency.differentiable import SuperkernelLatency
from mobilekit.models.torch_builder import MBConv
from mobilekit.search.superkernel import SuperMBConv
from mobilekit.space import SKIP, LayerSpec, LayerType, get_space

WIDTH = 0.35
RESIDUAL, STRIDED = 6, 5            # a skippable stride-1 position (16 -> 16), a stride-2 one (8 -> 16)


@pytest.fixture(scope="module")
def grid():
    return SuperkernelLatency(synthetic_table(width=WIDTH)).grid


def make_layer(grid, index, seed=0):
    torch.manual_seed(seed)
    position = get_space(width=WIDTH, resolution=32, num_classes=10).positions[index]
    layer = SuperMBConv(position, grid)
    with torch.no_grad():                       # trained-looking BN statistics and affine weights
        for bn in (layer.expand[1], layer.depthwise[1], layer.project[1]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return layer


def select(layer, layer_type, margin=0.1, seed=0):
    """Set the thresholds so the hard decisions choose ``layer_type`` with |stat - t| = margin; under a skip the
    other decisions are random."""
    g, rng = layer.grid, torch.Generator().manual_seed(seed)
    if layer_type.is_skip:
        layer_type = LayerType(g.kernels[int(torch.randint(2, (), generator=rng))],
                               g.expansions[int(torch.randint(2, (), generator=rng))],
                               g.se_ratios[int(torch.randint(len(g.se_ratios), (), generator=rng))])
        keep = 0.0
    else:
        keep = 1.0

    def steps(options, chosen):
        i = options.index(chosen)
        return torch.tensor([1.0 if j < i else 0.0 for j in range(len(options) - 1)])

    with torch.no_grad():
        wanted = {"kernel": steps(g.kernels, layer_type.kernel), "expand": steps(g.expansions, layer_type.expansion),
                  "se": steps(g.se_ratios, layer_type.se_ratio), "keep": torch.tensor([keep])}
        for key in ("kernel", "expand", "se", "keep"):      # kernel first: keep/expand statistics depend on it
            t = getattr(layer, f"t_{key}")
            if t.numel():
                stat = layer.statistics()[key]
                t.copy_(stat - margin * (2 * wanted[key] - 1))


def decided(layer, relax="sigmoid"):
    out, w_eff = layer.decide(relax)
    return {k: v[1] for k, v in out.items()}, w_eff


def masked(layer, monkeypatch):
    """The reference: the same layer running the whole superkernel with masks."""
    monkeypatch.setattr(layer, "_plan", lambda *args: None)


def derived_block(layer, layer_type):
    """The derived network's MBConv for ``layer_type`` with the superkernel's weights (as extract_subnet)."""
    spec = LayerSpec(layer.position, layer_type)
    block = MBConv(spec)
    if layer_type.is_skip:
        return block
    mid, k = spec.mid_channels, layer_type.kernel
    lo = (layer.grid.kernels[-1] - k) // 2
    with torch.no_grad():
        block.expand[0].weight.copy_(layer.expand[0].weight[:mid])
        block.depthwise[0].weight.copy_(layer.depthwise[0].weight[:mid, :, lo:lo + k, lo:lo + k])
        for target, source, channels in ((block.expand[1], layer.expand[1], slice(0, mid)),
                                         (block.depthwise[1], layer.depthwise[1], slice(0, mid)),
                                         (block.project[1], layer.project[1], slice(None))):
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(target, name).copy_(getattr(source, name)[channels])
        if block.se is not None:
            s = spec.se_channels
            block.se.reduce.weight.copy_(layer.se.reduce.weight[:s, :mid])
            block.se.reduce.bias.copy_(layer.se.reduce.bias[:s])
            block.se.expand.weight.copy_(layer.se.expand.weight[:mid, :s])
            block.se.expand.bias.copy_(layer.se.expand.bias[:mid])
        block.project[0].weight.copy_(layer.project[0].weight[:, :mid])
    return block


def all_types(grid, position):
    types = [LayerType(k, e, s) for k, e, s in itertools.product(grid.kernels, grid.expansions, grid.se_ratios)]
    return types + ([SKIP] if SKIP in position.candidates else [])


def conv_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def close(a, b):
    """Equal up to float32 rounding, relative to the larger entries."""
    if a.shape != b.shape or not b.numel():
        return a.shape == b.shape
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()) + 1e-7)


def input_for(layer, seed=1):
    return torch.randn(4, layer.position.in_channels, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("index", [RESIDUAL, STRIDED])
def test_hard_forward_equals_the_derived_block_and_the_masked_superkernel_for_every_type(grid, index, monkeypatch):
    x = input_for(make_layer(grid, index))
    for layer_type in all_types(grid, make_layer(grid, index).position):
        for train in (True, False):
            layer = make_layer(grid, index)
            select(layer, layer_type)
            layer.train(train)
            block = derived_block(layer, layer_type).train(train)
            inds, w_eff = decided(layer)
            sliced = layer(x, inds, w_eff)
            expected = block(x)
            assert torch.allclose(sliced, expected, atol=1e-5), (layer_type, train)
            if train and not layer_type.is_skip:                 # running statistics move like the derived block's
                assert torch.allclose(layer.depthwise[1].running_var[:block.depthwise[1].num_features],
                                      block.depthwise[1].running_var, atol=1e-6)
            masked(layer, monkeypatch)
            assert torch.allclose(layer(x, inds, w_eff), expected, atol=1e-5), (layer_type, train)
            monkeypatch.undo()


@pytest.mark.parametrize("index", [RESIDUAL, STRIDED])
def test_hard_forward_computes_only_the_derived_blocks_convolutions(grid, index):
    x = input_for(make_layer(grid, index))
    layer = make_layer(grid, index)
    layer.play_band, layer.play_fraction = 0.0, 0.0          # no off subset in play
    for layer_type in all_types(grid, layer.position):
        select(layer, layer_type)
        block = derived_block(layer, layer_type)
        inds, w_eff = decided(layer)
        assert conv_flops(lambda: layer(x, inds, w_eff)) == conv_flops(lambda: block(x)), layer_type
        with torch.no_grad():
            assert conv_flops(lambda: layer(x, inds, w_eff)) == conv_flops(lambda: block(x)), layer_type


def loss_and_grads(layer, x, relax, weights):
    layer.zero_grad(set_to_none=True)
    inds, w_eff = decided(layer, relax)
    out = layer(x, inds, w_eff)
    (out * weights).sum().backward()
    return out.detach(), {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                          for n, p in layer.named_parameters()}


@pytest.mark.parametrize("relax", ["sigmoid", "ste", "softmax"])
@pytest.mark.parametrize("index", [RESIDUAL, STRIDED])
def test_gradients_equal_the_masked_superkernel_while_every_decision_is_in_play(grid, index, relax, monkeypatch):
    layer = make_layer(grid, index)
    x = input_for(layer)
    layer.play_band = float("inf")
    for layer_type in all_types(grid, layer.position):
        select(layer, layer_type, seed=index)
        with torch.no_grad():
            shape = layer(x, *decided(layer)).shape
        weights = torch.randn(shape, generator=torch.Generator().manual_seed(3))
        out, grads = loss_and_grads(layer, x, relax, weights)
        masked(layer, monkeypatch)
        ref_out, ref_grads = loss_and_grads(layer, x, relax, weights)
        monkeypatch.undo()
        assert torch.allclose(out, ref_out, atol=1e-5), layer_type
        for name, ref in ref_grads.items():
            assert close(grads[name], ref), (layer_type, name)
        thresholds = [n for n in ref_grads if n.startswith("t_") and ref_grads[n].numel()]
        assert any(ref_grads[n].abs().sum() > 0 for n in thresholds)


def test_an_off_subset_outside_the_band_is_computed_on_a_fraction_of_steps_with_unbiased_gradient(grid, monkeypatch):
    layer = make_layer(grid, RESIDUAL)
    x = input_for(layer)
    select(layer, LayerType(5, 3, 0.5), margin=0.2)          # e6 off, 0.2 below its threshold
    weights = torch.randn(4, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    masked(layer, monkeypatch)
    _, full = loss_and_grads(layer, x, "sigmoid", weights)
    monkeypatch.undo()
    layer.play_band, layer.play_fraction = 0.1, 0.5
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        _, grads = loss_and_grads(layer, x, "sigmoid", weights)
        if grads["t_expand"].abs().sum() == 0:
            seen.add("skipped")
        else:
            assert close(grads["t_expand"], 2 * full["t_expand"])
            seen.add("computed x 1/fraction")
        for name in ("t_kernel", "t_se", "t_keep", "project.0.weight"):  # decisions in play / on: exact
            assert close(grads[name], full[name]), name
    assert seen == {"skipped", "computed x 1/fraction"}
    layer.play_band = 0.25                                   # within the band: every step, exact
    _, grads = loss_and_grads(layer, x, "sigmoid", weights)
    assert close(grads["t_expand"], full["t_expand"])


def test_subset_dropout_drops_like_the_masked_superkernel(grid, monkeypatch):
    layer = make_layer(grid, RESIDUAL).train()
    x = input_for(layer)
    select(layer, LayerType(5, 6, 0.5))
    layer.play_band = float("inf")
    inds, w_eff = decided(layer)
    outputs = []
    for reference in (False, True):
        if reference:
            masked(layer, monkeypatch)
        torch.manual_seed(7)
        outputs.append([layer(x, inds, w_eff, subset_dropout=0.5) for _ in range(4)])
    for sliced, ref in zip(*outputs):
        assert torch.allclose(sliced, ref, atol=1e-5)
    assert not all(torch.allclose(outputs[0][0], o) for o in outputs[0][1:])


def test_no_gradient_no_random_draws(grid):
    layer = make_layer(grid, RESIDUAL)
    layer.play_band = 0.0
    select(layer, LayerType(3, 3, 0.0), margin=0.2)
    inds, w_eff = decided(layer)
    state = torch.get_rng_state()
    with torch.no_grad():
        layer(input_for(layer), inds, w_eff)
    assert torch.equal(state, torch.get_rng_state())
