"""TNAS: a learned architecture sampler (a transformer VAE over architecture token sequences).

An architecture is a token sequence ``indices`` (L,): one token per searchable position, the token being the
column of that position's allowed types (so the vocabulary of position l is ``range(sizes[l])``). The model
(TNAS Sec. 3.2-3.3):

- encoder q_phi(z | alpha): token + position embeddings -> a stack of ``torch.nn.TransformerEncoderLayer``
  (multi-head self-attention, eq. 3-7, and the ReLU feed-forward, eq. 8) -> mean over positions -> (mu, log var)
  of N(mu, sigma) in ``latent_dim`` dimensions;
- decoder p_theta(alpha | z): z -> one vector per position (+ position embeddings) -> a transformer stack ->
  per-position logits over the allowed types (padded columns masked);
- trained on the negative ELBO (eq. 2): reconstruction cross-entropy + ``beta`` * KL(q || N(0, I)), each
  architecture weighted by how good it is (:func:`rank_weights`: only architectures inside the latency window
  count as good, ranked by their metric, e.g. the supernet's validation accuracy), which is how Gamma_t learns
  from the architectures and metrics seen so far (eq. 1).

:class:`TNASSampler` is an ask/tell sampler (as Optuna's samplers are): ``ask(n)`` proposes ``n`` architectures
drawn from z ~ N(0, I) through the decoder, always inside the window (rejection with a bounded number of tries,
then a greedy repair guided by the decoder's logits); ``tell(archs, metrics)`` adds them to the history and
refits. :func:`mixture_draw` is Gamma(alpha) of eq. 11.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mobilekit.errors import SearchError

MASKED = -1e4


class TransformerVAE(nn.Module):
    """Encoder/decoder transformer stacks over token sequences (B, L) with per-position vocabularies.

    ``encode(tokens (B, L)) -> (mu (B, D), log_var (B, D))``; ``decode(z (B, D)) -> logits (B, L, C)`` with
    columns past ``sizes[l]`` masked.
    """

    def __init__(self, sizes: Sequence[int], d_model: int = 32, heads: int = 4, layers: int = 2,
                 feedforward: int = 64, latent_dim: int = 8) -> None:
        super().__init__()
        self.sizes = list(sizes)
        length, width = len(self.sizes), max(self.sizes)
        mask = torch.zeros(length, width, dtype=torch.bool)
        for l, n in enumerate(self.sizes):
            mask[l, :n] = True
        self.register_buffer("mask", mask)
        self.token = nn.Embedding(width, d_model)
        self.enc_position = nn.Parameter(torch.randn(length, d_model) * 0.02)
        self.dec_position = nn.Parameter(torch.randn(length, d_model) * 0.02)

        def stack() -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(d_model, heads, feedforward, dropout=0.0, activation="relu",
                                               batch_first=True)
            return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

        self.encoder, self.decoder = stack(), stack()
        self.to_stats = nn.Linear(d_model, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, d_model)
        self.to_logits = nn.Linear(d_model, width)
        self.latent_dim = latent_dim

    def encode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(self.token(tokens) + self.enc_position)
        mu, log_var = self.to_stats(h.mean(1)).chunk(2, dim=-1)
        return mu, log_var

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.decoder(self.from_latent(z)[:, None, :] + self.dec_position)
        return self.to_logits(h).masked_fill(~self.mask, MASKED)

    def neg_elbo(self, tokens: torch.Tensor, generator: torch.Generator | None = None, beta: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-architecture (negative ELBO, reconstruction CE, KL), each (B,): eq. 2 with one reparameterised z."""
        mu, log_var = self.encode(tokens)
        noise = torch.randn(mu.shape, generator=generator).to(mu.device)
        z = mu + (0.5 * log_var).exp() * noise
        logits = self.decode(z)
        recon = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none").sum(1)
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(1)
        return recon + beta * kl, recon, kl


def rank_weights(metrics: Sequence[float], inside: Sequence[bool], k: float = 0.01,
                 outside_weight: float = 0.0) -> torch.Tensor:
    """Training weights (N,) of architectures: inside the window, ``1 / (k N + rank)`` by metric (rank 0 =
    best; rank-based weighting as in weighted retraining of generative models, Tripp et al. 2020); outside,
    ``outside_weight`` times the smallest inside weight. Normalised to mean 1; uniform when none is inside."""
    n = len(metrics)
    weights = torch.zeros(n, dtype=torch.float64)
    inside_ids = [i for i in range(n) if inside[i]]
    if not inside_ids:
        return torch.ones(n, dtype=torch.float64)
    ranked = sorted(inside_ids, key=lambda i: -metrics[i])
    for rank, i in enumerate(ranked):
        weights[i] = 1.0 / (k * n + rank)
    floor = float(weights[ranked[-1]]) * outside_weight
    for i in range(n):
        if not inside[i]:
            weights[i] = floor
    return weights * n / weights.sum()


class TNASSampler:
    """An ask/tell architecture sampler learning Gamma_t(alpha) (TNAS eq. 1) with a transformer VAE.

    ``sizes``: allowed types per searchable position; ``latency_ms`` (L, C): per-type latency (ms) of each
    position's columns (padding ignored); ``fixed_ms``: the rest of the network; proposals lie in
    ``[lo_ms, hi_ms]``. ``fit_steps`` Adam steps (``lr``) on the weighted negative ELBO follow every ``tell``,
    over the ``history`` most recent distinct architectures. Learned state: ``model_``, ``optimizer_``,
    ``history_`` (a JSON-able list of {"indices", "metric", "latency_ms"}).
    """

    def __init__(self, sizes: Sequence[int], latency_ms: torch.Tensor, fixed_ms: float, lo_ms: float, hi_ms: float,
                 *, seed: int = 0, d_model: int = 32, heads: int = 4, layers: int = 2, latent_dim: int = 8,
                 lr: float = 3e-3, fit_steps: int = 20, batch_size: int = 64, beta: float = 1.0, k: float = 0.01,
                 outside_weight: float = 0.0, history: int = 512, max_tries: int = 20, device: str = "cpu") -> None:
        self.sizes, self.fixed_ms, self.lo_ms, self.hi_ms = list(sizes), float(fixed_ms), float(lo_ms), float(hi_ms)
        width = max(self.sizes)
        self.latency = torch.as_tensor(latency_ms, dtype=torch.float64)[:, :width].clone()
        for l, n in enumerate(self.sizes):
            self.latency[l, n:] = float("inf")
        self.seed, self.lr, self.fit_steps, self.batch_size = seed, lr, fit_steps, batch_size
        self.beta, self.k, self.outside_weight, self.history, self.max_tries = beta, k, outside_weight, history, max_tries
        fastest = self.fixed_ms + float(self.latency.min(1).values.sum())
        slowest = self.fixed_ms + float(self.latency.masked_fill(self.latency.isinf(), -1).max(1).values.sum())
        if lo_ms > hi_ms or hi_ms < fastest or lo_ms > slowest:
            raise SearchError(f"TNAS sampler: the latency window [{lo_ms:.2f}, {hi_ms:.2f}] ms is empty: the "
                              f"architectures span {fastest:.2f}-{slowest:.2f} ms; choose a target in that range")
        with torch.random.fork_rng(devices=[]):      # seeded initialisation, the caller's generator untouched
            torch.manual_seed(seed)
            self.model_ = TransformerVAE(self.sizes, d_model, heads, layers, 2 * d_model, latent_dim).to(device)
        self.optimizer_ = torch.optim.Adam(self.model_.parameters(), lr=lr)
        self.history_: list[dict[str, Any]] = []
        self.fits_ = 0

    # ---- latency -------------------------------------------------------------------------------------------------
    def latency_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) -> latency (B,) in ms."""
        return self.fixed_ms + self.latency.gather(1, tokens.cpu().T).sum(0)

    def inside(self, tokens: torch.Tensor) -> torch.Tensor:
        ms = self.latency_of(tokens)
        return (ms >= self.lo_ms) & (ms <= self.hi_ms)

    # ---- ask / tell ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def ask(self, n: int, seed: int | None = None) -> list[list[int]]:
        """``n`` architectures (index lists) from p_theta(alpha | z), z ~ N(0, I), all inside the window: up to
        ``max_tries`` rounds of ``n`` draws with rejection, then the missing ones repaired into the window."""
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.fits_ if seed is None else seed)
        self.model_.eval()
        kept: list[list[int]] = []
        logits = None
        for _ in range(self.max_tries):
            logits = self.model_.decode(torch.randn(n, self.model_.latent_dim, generator=generator)
                                        .to(self.model_.mask.device)).cpu()
            tokens = torch.multinomial(F.softmax(logits.reshape(-1, logits.shape[-1]), -1), 1,
                                       generator=generator).reshape(n, -1)
            kept += [t.tolist() for t, ok in zip(tokens, self.inside(tokens)) if ok]
            if len(kept) >= n:
                return kept[:n]
        for row in range(n - len(kept)):
            kept.append(self._repair(tokens[row].tolist(), F.log_softmax(logits[row], -1)))
        return kept

    def _repair(self, tokens: list[int], log_p: torch.Tensor) -> list[int]:
        """Move ``tokens`` into the window by single-position changes (most probable under ``log_p`` (L, C) first,
        never overshooting the upper bound when too fast); :class:`SearchError` when it cannot."""
        lat = self.latency
        total = self.fixed_ms + sum(float(lat[l, c]) for l, c in enumerate(tokens))
        for _ in range(4 * sum(self.sizes)):
            if self.lo_ms <= total <= self.hi_ms:
                return tokens
            best = None
            for l, c in enumerate(tokens):
                for other in range(self.sizes[l]):
                    delta = float(lat[l, other] - lat[l, c])
                    if (total > self.hi_ms and delta >= 0) or (total < self.lo_ms and (delta <= 0 or total + delta > self.hi_ms)):
                        continue
                    key = (float(log_p[l, other] - log_p[l, c]), abs(delta))
                    if best is None or key > best[0]:
                        best = (key, l, other, delta)
            if best is None:
                break
            _, l, other, delta = best
            tokens[l] = other
            total += delta
        raise SearchError(f"TNAS sampler: found no architecture in [{self.lo_ms:.2f}, {self.hi_ms:.2f}] ms; widen "
                          "the window or move the target toward the middle of the table's range")

    def tell(self, archs: Sequence[Sequence[int]], metrics: Sequence[float]) -> dict[str, float]:
        """Add architectures and their metrics (higher is better) to the history, then refit; returns the fit's
        first and last weighted negative ELBO."""
        if len(archs) != len(metrics):
            raise ValueError(f"tell: {len(archs)} architectures but {len(metrics)} metrics")
        for indices, metric in zip(archs, metrics):
            indices = [int(c) for c in indices]
            self.history_ = [h for h in self.history_ if h["indices"] != indices]
            ms = float(self.latency_of(torch.tensor([indices]))[0])
            self.history_.append({"indices": indices, "metric": float(metric), "latency_ms": ms})
        self.history_ = self.history_[-self.history:]
        return self.fit()

    def weights(self) -> torch.Tensor:
        """Training weights (N,) of the history (:func:`rank_weights`)."""
        return rank_weights([h["metric"] for h in self.history_],
                            [self.lo_ms <= h["latency_ms"] <= self.hi_ms for h in self.history_],
                            self.k, self.outside_weight)

    def weighted_loss(self, tokens: torch.Tensor, weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        loss, _, _ = self.model_.neg_elbo(tokens, generator, self.beta)
        return (loss * weights.to(loss)).mean()

    def fit(self, steps: int | None = None) -> dict[str, float]:
        """``steps`` (default ``fit_steps``) Adam steps on the weighted negative ELBO of the history."""
        if not self.history_:
            return {}
        device = self.model_.mask.device
        tokens = torch.tensor([h["indices"] for h in self.history_], device=device)
        weights = self.weights().float().to(device)
        generator = torch.Generator().manual_seed(self.seed * 104_729 + self.fits_)
        self.model_.train()
        losses = []
        for _ in range(self.fit_steps if steps is None else steps):
            batch = torch.randperm(len(tokens), generator=generator)[:self.batch_size].to(device)
            loss = self.weighted_loss(tokens[batch], weights[batch], generator)
            self.optimizer_.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer_.step()
            losses.append(loss.item())
        self.fits_ += 1
        return {"elbo_loss_first": losses[0], "elbo_loss_last": losses[-1]} if losses else {}

    # ---- persistence (JSON-able state + the model's tensors) -------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"history": self.history_, "fits": self.fits_}

    def load_state(self, state: dict[str, Any]) -> None:
        self.history_ = [dict(h) for h in state.get("history", [])]
        self.fits_ = int(state.get("fits", 0))


def epsilon(tells: int, increment: float, maximum: float = 1.0) -> float:
    """The share of sampler-drawn paths after ``tells`` refits: ``min(maximum, increment * tells)`` (TNAS's
    epsilon_inc, Sec. 5: epsilon rises as the sampler learns)."""
    return min(maximum, increment * tells)


def mixture_draw(eps: float, uniform: Any, learned: Any, generator: torch.Generator) -> tuple[list[int], str]:
    """One path from Gamma(alpha) = (1 - eps) U(alpha) + eps p_theta(alpha | z) (TNAS eq. 11): with probability
    ``eps`` the learned sampler's (``learned()``), else the uniform one's (``uniform()``); returns (indices,
    "sampler" or "uniform")."""
    if float(torch.rand(1, generator=generator)) < eps:
        return learned(), "sampler"
    return uniform(), "uniform"
