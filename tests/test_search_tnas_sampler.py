"""The TNAS sampler (mobilekit/search/methods/tnas_sampler.py): the transformer VAE learns a toy set (its ELBO falls),
better architectures weigh more, proposals always lie in the latency window, an empty window is refused, and
ask/tell moves the proposals toward the architectures told to be good; the eq. 11 mixture at its ends."""

import pytest
import torch

from mobilekit.errors import SearchError
from mobilekit.search.methods.tnas_sampler import TNASSampler, TransformerVAE, epsilon, mixture_draw, rank_weights

SIZES = [3, 3, 2, 3, 3, 2]                         # allowed types per position (a ragged vocabulary)
LATENCY = torch.tensor([[1.0, 2.0, 3.0]] * 6)      # column c of any position costs c + 1 ms


def sampler(lo_ms=9.0, hi_ms=11.0, **kwargs):
    return TNASSampler(SIZES, LATENCY, 0.0, lo_ms, hi_ms, seed=0, d_model=16, heads=2, layers=1, latent_dim=4,
                       **kwargs)


def test_weighted_elbo_decreases_on_a_toy_set():
    torch.manual_seed(0)
    vae = TransformerVAE(SIZES, d_model=16, heads=2, layers=1, latent_dim=4)
    tokens = torch.tensor([[0, 1, 1, 2, 0, 1], [2, 2, 0, 0, 1, 1], [1, 0, 1, 1, 2, 0]])
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    first = vae.neg_elbo(tokens, torch.Generator().manual_seed(1))[0].mean().item()
    for _ in range(150):
        loss = vae.neg_elbo(tokens, gen)[0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = vae.neg_elbo(tokens, torch.Generator().manual_seed(1))[0].mean().item()
    assert last < first - 1.5          # nats per architecture (7.4 -> 5.6 here)
    # the masked columns (position 2 and 5 have 2 types) are never decoded
    logits = vae.decode(torch.randn(4, 4))
    assert (logits[:, 2, 2] < -1e3).all() and (logits[:, 5, 2] < -1e3).all()


def test_rank_weights_favour_better_architectures_inside_the_window_only():
    w = rank_weights([0.9, 0.5, 0.7, 0.99], [True, True, True, False])
    assert w[0] > w[2] > w[1] > 0 and w[3] == 0          # the best metric outside the window counts for nothing
    assert torch.isclose(w.mean(), torch.tensor(1.0, dtype=w.dtype))
    floored = rank_weights([0.9, 0.5, 0.99], [True, True, False], outside_weight=0.5)
    assert floored[2] == pytest.approx(0.5 * floored[1])
    assert torch.equal(rank_weights([0.1, 0.2], [False, False]), torch.ones(2, dtype=torch.float64))


def test_proposals_always_lie_in_the_window():
    s = sampler(lo_ms=9.5, hi_ms=10.0, max_tries=1)      # narrow: rejection alone rarely fills it, repair must
    for seed in range(5):
        proposals = s.ask(16, seed=seed)
        assert len(proposals) == 16
        for p in proposals:
            assert all(0 <= c < n for c, n in zip(p, SIZES))
            assert 9.5 <= sum(c + 1 for c in p) <= 10.0


def test_an_empty_window_is_refused_with_the_reachable_range():
    with pytest.raises(SearchError, match=r"window \[30\.00, 31\.00\] ms is empty: the architectures span "
                                          r"6\.00-16\.00 ms"):
        sampler(lo_ms=30.0, hi_ms=31.0)


def test_tell_moves_proposals_toward_the_architecture_told_to_be_best():
    good = [0, 2, 1, 0, 2, 1]
    rng = torch.Generator().manual_seed(3)
    others = [[int(torch.randint(n, (1,), generator=rng)) for n in SIZES] for _ in range(31)]
    others = [p for p in others if p != good]          # one random draw happens to equal it
    metrics = [0.1 + 0.01 * i for i in range(len(others))]

    def agreement(proposals):          # share of positions where a proposal takes the good architecture's type
        return sum(a == b for p in proposals for a, b in zip(p, good)) / (len(proposals) * len(good))

    told_best, told_worst = sampler(lo_ms=6.0, hi_ms=16.0, fit_steps=60), sampler(lo_ms=6.0, hi_ms=16.0, fit_steps=60)
    before = agreement(told_best.ask(200, seed=11))
    fits = [told_best.tell([good] + others, [1.0] + metrics) for _ in range(4)]
    for _ in range(4):
        told_worst.tell([good] + others, [0.0] + metrics)
    assert fits[0]["elbo_loss_last"] < fits[0]["elbo_loss_first"]
    best, worst = agreement(told_best.ask(200, seed=11)), agreement(told_worst.ask(200, seed=11))
    assert best > before + 0.15 and best > worst + 0.15     # measured: 0.37 before, 0.72 told best, 0.49 worst
    distinct = {tuple(p) for p in [good] + others}
    assert len(told_best.history_) == len(distinct) and told_best.state()["fits"] == 4


def test_tell_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 architectures but 1 metrics"):
        sampler().tell([[0] * 6, [1] * 6], [0.5])


def test_mixture_at_epsilon_zero_is_uniform_and_at_one_follows_the_sampler():
    gen = torch.Generator().manual_seed(0)
    draws = [mixture_draw(0.0, lambda: [0], lambda: [1], gen) for _ in range(200)]
    assert all(d == ([0], "uniform") for d in draws)
    draws = [mixture_draw(1.0, lambda: [0], lambda: [1], gen) for _ in range(200)]
    assert all(d == ([1], "sampler") for d in draws)
    share = sum(mixture_draw(0.3, lambda: [0], lambda: [1], gen)[1] == "sampler" for _ in range(2000)) / 2000
    assert 0.25 < share < 0.35
    assert [epsilon(t, 0.25) for t in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert epsilon(10, 0.1, maximum=0.8) == 0.8
