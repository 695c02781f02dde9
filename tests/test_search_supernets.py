"""One skeleton, many block factories: the derived network, the superkernel, multi-path and sampled-path
supernets share stem/head/fixed blocks, and one function extracts a stand-alone network from any of them."""

import pytest
import torch

from _synthetic_tables import synthetic_table
from mobilekit.latency.differentiable import ExpectedLatency, SuperkernelLatency
from mobilekit.models.torch_builder import MobileNet, Skeleton
from mobilekit.search.supernets import MultiPathNet, SampledPathNet, SuperNet, extract_network
from mobilekit.space import get_space

WIDTH = 0.35


pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_sampled_path_computes_only_the_sampled_candidate(space, expected):
    torch.manual_seed(1)
    net = SampledPathNet(space, expected.candidates).eval()
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
