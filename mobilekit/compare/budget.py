"""The equal budget of a comparison, and how each method's epochs are derived from it.

**Same budget = the same number of training images seen**, search plus final training, counted in passes over the
train split ("epochs"): an image counts once every time it enters a gradient step (weights, architecture,
augmentation policy or hyper-parameters).
Wall-clock seconds are reported but not equalised: on a shared CPU they measure the machine's load as much as the
method, and they would reward a method for cheap steps rather than for using its data well.

``budget_epochs`` B is split into a final-training share F = round(B * final_share) (at least 1) and a search share
S = B - F; each method gets the search settings whose nominal image count is the largest not above S:

- single-path: one superkernel step per batch of the train split: ``epochs = S``.
- random: ``random_samples`` candidates, each trained ``proxy_epochs`` on the train split:
  ``random_samples * proxy_epochs`` <= S (``proxy_epochs`` = max(1, S // 4), ``random_samples`` = S // proxy, so
  at least 4 candidates once S >= 4).
- multipath: weight steps on 80 % of the train split; after ``arch_warmup_epochs`` every weight step is paired
  with an architecture step on a batch of the other 20 %: ``0.8 * (2 * epochs - warmup)`` passes, with the
  (epochs, warmup) pair that comes closest to S from below (warm-up nearest a quarter of the epochs on ties).
- any other method (a searcher registered later): assumed one training batch per step over the train split,
  ``epochs = S``, until its budget rule is added here (one entry in :data:`BUDGET_RULES`).

Every method then trains its deliverable for F epochs. Partial last batches are dropped alike for all methods.

End-to-end methods (:data:`END_TO_END_RULES`) train no final network: their search's own network is the
deliverable, so their search gets the whole budget B and ``final_epochs`` 0:

- diffautoml: every step trains on one batch of its weight split (the same images give the weights, the
  architecture and the augmentation policy their gradients) and, with the hyper-gradient on (the default), takes
  one batch of the same size from the held-out fifth of the train split for eq. 7: per epoch
  ``0.8 * 2 = 1.6`` passes over the train split, ``epochs = floor(B / 1.6)``. With ``hypergradient = false``
  (in the comparison's search settings) the whole train split trains the weights and nothing else is read:
  ``epochs = B``.

With ``--steps-per-epoch`` the counts are nominal for every method alike (the cap cuts each epoch, whatever its
images per step).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from mobilekit.errors import ConfigError

MULTIPATH_WEIGHT_SHARE = 0.8       # multipath's weight split of the train split (its architecture split is the rest)


def split_budget(budget_epochs: float, final_share: float) -> tuple[int, int]:
    """(search epochs S, final epochs F) of a budget of ``budget_epochs`` passes over the train split."""
    if budget_epochs < 2:
        raise ConfigError(f"budget {budget_epochs:g} epochs is too small: search and final training need at least 1 "
                          "pass over the train split each; use --budget 2 or more")
    if not 0 < final_share < 1:
        raise ConfigError(f"final share {final_share:g} must lie in (0, 1)")
    final = min(int(budget_epochs) - 1, max(1, round(budget_epochs * final_share)))
    return int(budget_epochs) - final, final


def _single_path(search_epochs: int) -> tuple[dict, float]:
    return {"epochs": search_epochs}, float(search_epochs)


def _random(search_epochs: int) -> tuple[dict, float]:
    proxy = max(1, search_epochs // 4)
    samples = search_epochs // proxy
    return {"epochs": search_epochs, "random_samples": samples, "proxy_epochs": proxy}, float(samples * proxy)


def _multipath(search_epochs: int) -> tuple[dict, float]:
    best = None
    for epochs in range(1, 2 * search_epochs + 2):
        for warmup in range(0, epochs):         # at least one epoch with architecture steps
            seen = MULTIPATH_WEIGHT_SHARE * (2 * epochs - warmup)
            if seen > search_epochs + 1e-9:
                continue
            key = (seen, -abs(warmup - epochs / 4))
            if best is None or key > best[0]:
                best = (key, epochs, warmup)
    if best is None:
        return {"epochs": 1, "arch_warmup_epochs": 1}, MULTIPATH_WEIGHT_SHARE
    (seen, _), epochs, warmup = best
    return {"epochs": epochs, "arch_warmup_epochs": warmup}, seen


BUDGET_RULES: dict[str, Callable[[int], tuple[dict, float]]] = {
    "single-path": _single_path,
    "random": _random,
    "multipath": _multipath,
}


def _diffautoml(budget_epochs: int, search_keys: Mapping[str, Any]) -> tuple[dict, float]:
    from mobilekit.search.diffautoml import VALIDATION_SHARE

    if search_keys.get("hypergradient", True):
        per_epoch = (1 - VALIDATION_SHARE) * 2                 # a training and a validation batch per step
    else:
        per_epoch = 1.0
    epochs = max(1, int(budget_epochs / per_epoch + 1e-9))
    return {"epochs": epochs, "final_epochs": 0}, epochs * per_epoch


END_TO_END_RULES: dict[str, Callable[[int, Mapping[str, Any]], tuple[dict, float]]] = {
    "diffautoml": _diffautoml,
}


def method_settings(method: str, budget_epochs: float, final_share: float,
                    search_keys: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
    """(search config keys, budget facts) of ``method`` under the budget; ``search_keys`` are the comparison's
    further search settings (an end-to-end rule may depend on them, e.g. diffautoml's ``hypergradient``).

    The facts: ``search_epochs_nominal`` (passes of search images), ``final_epochs``, ``images_epochs`` (their
    sum, <= the budget) and ``rule`` (how they were derived).
    """
    search_epochs, final_epochs = split_budget(budget_epochs, final_share)
    if method in END_TO_END_RULES:
        keys, seen = END_TO_END_RULES[method](int(budget_epochs), search_keys or {})
        return keys, {"search_epochs_nominal": round(seen, 3), "final_epochs": 0, "images_epochs": round(seen, 3),
                      "rule": method}
    rule = BUDGET_RULES.get(method)
    keys, seen = (rule or _single_path)(search_epochs)
    keys = dict(keys, final_epochs=final_epochs)
    facts = {"search_epochs_nominal": round(seen, 3), "final_epochs": final_epochs,
             "images_epochs": round(seen + final_epochs, 3),
             "rule": method if rule else "assumed one training batch per step (no budget rule for this method)"}
    return keys, facts
