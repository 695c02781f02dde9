"""One skeleton, many block factories: the derived network, the superkernel, multi-path and sampled-path
supernets share stem/head/fixed blocks, and one function extracts a stand-alone network from any of them."""

import pytest
import torch

from _synthetic_tables import synthetic_table
from mobilekit.latency.differentiable import ExpectedLatency, SuperkernelLatency
from mobilekit.models.torch_builder import MobileNet, Skeleton, randomize_batchnorm
from mobilekit.search.supernets import (EntangledPaths, MultiPathNet, SampledPathNet, SampledPaths, SuperNet,
                                        entangleable, extract_network)
from mobilekit.space import get_space

WIDTH = 0.35


@pytest.fixture(scope="module")
def expected():
    return ExpectedLatency(synthetic_table(width=WIDTH))


@pytest.fixture(scope="module")
def space():
    return get_space(width=WIDTH, resolution=32, num_classes=10)


def test_every_network_is_the_one_skeleton_with_the_same_fixed_parts(space, expected):
    torch.manual_seed(0)
    nets = [SuperNet(space, SuperkernelLatency(synthetic_table(width=WIDTH)).grid), MultiPathNet(space, expected.candidates), SampledPathNet(space, expected.candidates)]
    nets.append(MobileNet(nets[1].architecture()))
    for net in nets:
        assert isinstance(net, Skeleton)
        assert len(net.layers) == len(space.positions)
        fixed = [name for name, _ in net.named_parameters() if name.startswith(("stem.", "head."))]
        assert fixed == [name for name, _ in nets[-1].named_parameters() if name.startswith(("stem.", "head."))]


@pytest.mark.parametrize("sharing", ["entangled", "separate"])
def test_sampled_path_equals_the_extracted_network(space, expected, sharing):
    torch.manual_seed(1)
    net = randomize_batchnorm(SampledPathNet(space, expected.candidates, sharing=sharing), seed=1).eval()
    blocks = EntangledPaths if sharing == "entangled" else SampledPaths
    assert all(isinstance(block, blocks) for block in net.paths)
    generator, x = torch.Generator().manual_seed(0), torch.randn(2, 3, 32, 32)
    outputs = []
    for _ in range(3):
        net.sample(generator)
        model = extract_network(net, net.active_architecture()).eval()
        outputs.append(net(x))
        assert torch.allclose(outputs[-1], model(x), atol=1e-5)
    assert not torch.allclose(outputs[0], outputs[1])       # different paths compute different functions


def test_entangled_path_trains_only_the_chosen_slices_which_every_larger_candidate_shares(space, expected):
    torch.manual_seed(4)
    net = SampledPathNet(space, expected.candidates, sharing="entangled")
    layer = next(l for l, row in enumerate(expected.candidates)
                 if any(t.kernel == 3 for t in row) and any(t.kernel == 5 for t in row))
    row, block = expected.candidates[layer], net.paths[layer]
    small = next(c for c, t in enumerate(row) if t.kernel == 3 and t.expansion == min(r.expansion for r in row if not r.is_skip))
    large = next(c for c, t in enumerate(row) if t.kernel == 5 and t.expansion == max(r.expansion for r in row if not r.is_skip))
    indices = [0] * len(expected.candidates)
    indices[layer] = small
    net.fix(indices)
    net(torch.randn(4, 3, 32, 32)).sum().backward()
    mid = block.specs[small].mid_channels
    grad = block.depthwise[0].weight.grad                    # (mid_max, 1, 5, 5)
    assert grad[:mid, :, 1:4, 1:4].abs().sum() > 0           # the 3x3 centre of the first mid channels ...
    outside = grad.clone()
    outside[:mid, :, 1:4, 1:4] = 0
    assert outside.abs().sum() == 0                          # ... and nothing else
    assert block.expand[0].weight.grad[mid:].abs().sum() == 0 and block.project[0].weight.grad[:, mid:].abs().sum() == 0
    # the large candidate computes with the same tensors: a change to the small one's centre changes its output
    block.active = large
    x = torch.randn(4, block.specs[large].position.in_channels, 8, 8)
    with torch.no_grad():
        before = block(x)
        block.depthwise[0].weight[:mid, :, 2, 2] += 1.0
        assert not torch.allclose(before, block(x))


def test_entangled_blocks_report_their_unused_parameters_and_fall_back_where_candidates_cannot_nest(space, expected):
    net = SampledPathNet(space, expected.candidates, sharing="entangled")
    layer = next(l for l, row in enumerate(expected.candidates) if any(t.is_skip for t in row))
    block = net.paths[layer]
    block.active = next(c for c, t in enumerate(block.types) if t.is_skip)
    assert len(block.inactive_parameters()) == len(list(block.parameters()))
    block.active = next(c for c, t in enumerate(block.types) if not t.is_skip)
    assert block.inactive_parameters() == ([] if block.specs[block.active].se_channels or block.se is None
                                           else list(block.se.parameters()))
    e1 = tuple(t for t in space.positions[0].candidates)                 # the first block's expansion-1 type
    assert not entangleable(e1)
    position = space.positions[0]
    with pytest.raises(ValueError):
        EntangledPaths(position, e1)


def test_sampled_path_computes_only_the_sampled_candidate(space, expected):
    torch.manual_seed(1)
    net = SampledPathNet(space, expected.candidates, sharing="separate").eval()
    chosen, gates = net.sample(torch.Generator().manual_seed(0))
    assert len(chosen) == len(expected.candidates) and torch.equal(gates.detach(), torch.ones(len(chosen)))
    arch = net.active_architecture()
    model = extract_network(net, arch).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(net(x), model(x), atol=1e-5)
    calls = []
    hooks = [path.register_forward_hook(lambda m, i, o: calls.append(m)) for block in net.paths for path in block]
    net(x)
    for hook in hooks:
        hook.remove()
    assert len(calls) == len(chosen)                        # one candidate per layer, no other path runs


def test_sampled_path_gates_carry_the_gradient_of_the_sampling_distribution(space, expected):
    torch.manual_seed(2)
    net = SampledPathNet(space, expected.candidates)
    chosen, _ = net.sample(torch.Generator().manual_seed(3))
    net(torch.randn(2, 3, 32, 32), gated=True).sum().backward()
    grad = net.alpha.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert all(grad[l].abs().sum() > 0 for l in range(len(chosen)))


def test_sampling_follows_the_distribution_and_fix_selects_an_architecture(space, expected):
    net = SampledPathNet(space, expected.candidates)
    with torch.no_grad():
        net.alpha.zero_()
        net.alpha[:, 1] = 50.0                               # column 1 almost surely
    chosen, _ = net.sample(torch.Generator().manual_seed(0))
    assert chosen == [1] * len(chosen)
    target = MultiPathNet(space, expected.candidates).architecture()       # argmax of zeros: column 0
    assert net.fix(target) == [0] * len(chosen) and net.active_architecture() == target


def test_multipath_extraction_computes_the_one_hot_supernet(space, expected):
    torch.manual_seed(3)
    net = MultiPathNet(space, expected.candidates).eval()
    with torch.no_grad():
        net.alpha.normal_()
    arch = net.architecture()
    one_hot = torch.nn.functional.one_hot(net.logits().argmax(-1), net.alpha.shape[1]).float()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(net(x, one_hot), extract_network(net, arch).eval()(x), atol=1e-5)


def test_entangled_batchnorm_recalibration_matches_the_extracted_network(space, expected):
    """BN recalibration (cumulative averages, momentum None) over sliced statistics gives the statistics the
    stand-alone network gets from the same batches."""
    from torch.utils.data import TensorDataset

    from mobilekit.search.training import recalibrate_batchnorm

    torch.manual_seed(5)
    net = SampledPathNet(space, expected.candidates, sharing="entangled")
    net.sample(torch.Generator().manual_seed(6))
    model = extract_network(net, net.active_architecture())
    data = TensorDataset(torch.randn(48, 3, 32, 32), torch.zeros(48, dtype=torch.long))
    for m in (net, model):
        recalibrate_batchnorm(m, data, batch_size=16, steps=3, seed=0)
    x = torch.randn(2, 3, 32, 32)
    out = net.eval()(x)
    assert torch.allclose(out, model.eval()(x), atol=1e-5)
    assert not torch.allclose(out[0], out[1], atol=1e-4)   # recalibrated statistics: the output depends on x


@pytest.mark.parametrize("kind", ["multipath", "entangled", "separate"])
def test_path_view_computes_the_extracted_network_and_leaves_the_supernet_as_it_was(space, expected, kind):
    """PathView (the per-epoch validation's network): the chosen path of a categorical supernet, computed with its
    own weights and BN statistics, equals the stand-alone network extract_network copies out (eval mode); the
    supernet's active path and gates stay as they were."""
    from torch.utils.data import TensorDataset

    from mobilekit.search.supernets import PathView
    from mobilekit.search.training import recalibrate_batchnorm

    torch.manual_seed(7)
    net = (MultiPathNet(space, expected.candidates) if kind == "multipath"
           else SampledPathNet(space, expected.candidates, sharing=kind))
    with torch.no_grad():
        net.alpha.normal_()
    if kind != "multipath":
        active = net.sample(torch.Generator().manual_seed(2))[0]
        gates = net._gates
    view = PathView.most_likely(net)
    recalibrate_batchnorm(view, TensorDataset(torch.randn(32, 3, 32, 32), torch.zeros(32, dtype=torch.long)),
                          batch_size=16, steps=2, seed=0)                # BN statistics of the viewed path
    assert view.indices == net.logits().argmax(-1).tolist()
    assert view.architecture().to_string() == net.architecture().to_string()
    model = extract_network(net, view.architecture()).eval()
    x = torch.randn(3, 3, 32, 32)
    out = view.eval()(x)
    assert torch.allclose(out, model(x), atol=1e-6)
    assert float((out[0] - out[1]).abs().max().detach()) > 1e-4      # a real comparison: the output depends on x
    if kind != "multipath":
        assert net.active() == active and net._gates is gates       # untouched: the next training step's path
        other = [(c + 1) % len(row) for c, row in zip(view.indices, net.candidates)]
        arch = PathView(net, other).architecture()
        assert PathView.of(net, arch).indices == other
    with pytest.raises(ValueError, match="searchable layers"):
        PathView(net, view.indices[:-1])
