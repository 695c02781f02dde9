"""The equal budget of a comparison, and how each method's settings are derived from it.

**Same budget = the same number of training images seen**, search plus final training, counted in passes over the
train split ("epochs"): an image counts once every time it enters a gradient step (for the weights, the
architecture / hyper-parameter encodings or the augmentation policy). Forward-only passes (scoring candidates on validation images,
recalibrating batch norm) do not count; their cost is reported beside the budget (:func:`forward_only_images`).
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
- autohas: every step takes a weight batch of 80 % of the train split (its gradient also makes the temporary
  weights) and a batch of the other 20 % for the encodings (the validation loss of the mixed temporary weights,
  or with ``--estimator reinforce`` the reward of the drawn basis): ``1.6 * epochs`` passes,
  ``epochs = floor(S / 1.6)``; S < 1.6 is refused.
- random-has, tpe: ``trials`` candidates (architecture + learning rate + weight decay), each trained from scratch
  ``trial_epochs`` on the train split, chosen as for random: ``trial_epochs`` = max(1, S // 4),
  ``trials`` = S // trial_epochs.
- spos, tnas-os: the supernet trains one sampled path per batch of the train split: ``epochs = S``. The evolution
  and TNAS-OS's sampler tells are forward-only (see below), so their settings are the method's own.
- any other method (a searcher registered later): assumed one training batch per step over the train split,
  ``epochs = S``, until its budget rule is added here (one entry in :data:`BUDGET_RULES`).

Every method then trains its deliverable for F epochs. Partial last batches are dropped alike for all methods.

Forward-only images (not in the budget; :data:`FORWARD_ONLY`, reported per run): random and the joint baselines
score every trained candidate on the validation split; spos and tnas-os score every evolution candidate on
``min(eval_samples, |val|)`` validation images after recalibrating BN on ``bn_steps`` training batches; tnas-os also
scores, at each sampler tell, the told paths and the fresh proposals on ``min(tell_batch, |val|)`` validation
images. Not counted for any method: the one BN recalibration of a deliverable that inherits supernet weights (up
to 20 training batches, before the final training), the per-epoch monitoring validation (metrics.jsonl's
``val_accuracy``) and the final validation/test evaluation.

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

import math
from pathlib import Path
from typing import Any, Callable, Mapping

from mobilekit.errors import ConfigError

MULTIPATH_WEIGHT_SHARE = 0.8       # multipath's weight split of the train split (its architecture split is the rest)
AUTOHAS_PASSES_PER_EPOCH = 2 * MULTIPATH_WEIGHT_SHARE   # a weight batch + an encoding batch per step on 80 %
TNAS_PROPOSALS_FILE = "tnas_proposals.json"            # where tnas-os keeps the proposals scored at each tell


class BudgetTooSmall(ConfigError):
    """The search share cannot hold the smallest search of a method (raised by a rule with the smallest S it needs)."""

    def __init__(self, message: str, min_search_epochs: int) -> None:
        super().__init__(message)
        self.min_search_epochs = min_search_epochs


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


def _trials(search_epochs: int) -> tuple[int, int]:
    """(candidates, epochs per candidate) of a multi-trial search in S epochs: >= 4 candidates once S >= 4."""
    per_trial = max(1, search_epochs // 4)
    return search_epochs // per_trial, per_trial


def _random(search_epochs: int) -> tuple[dict, float]:
    samples, proxy = _trials(search_epochs)
    return {"epochs": search_epochs, "random_samples": samples, "proxy_epochs": proxy}, float(samples * proxy)


def _joint_trials(search_epochs: int) -> tuple[dict, float]:
    trials, per_trial = _trials(search_epochs)
    return {"epochs": search_epochs, "trials": trials, "trial_epochs": per_trial}, float(trials * per_trial)


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


def _autohas(search_epochs: int) -> tuple[dict, float]:
    epochs = math.floor(search_epochs / AUTOHAS_PASSES_PER_EPOCH + 1e-9)
    if epochs < 1:
        raise BudgetTooSmall(f"one autohas epoch sees {AUTOHAS_PASSES_PER_EPOCH:g} passes over the train split (a "
                             "weight batch and an encoding batch per step, on its 80/20 split), more than the search "
                             f"share of {search_epochs} epoch(s)", math.ceil(AUTOHAS_PASSES_PER_EPOCH))
    return {"epochs": epochs}, AUTOHAS_PASSES_PER_EPOCH * epochs


BUDGET_RULES: dict[str, Callable[[int], tuple[dict, float]]] = {
    "single-path": _single_path,
    "random": _random,
    "multipath": _multipath,
    "autohas": _autohas,
    "random-has": _joint_trials,
    "tpe": _joint_trials,
    "spos": _single_path,            # supernet training; the evolution is forward-only
    "tnas-os": _single_path,         # as spos; the sampler learns from forward-only scores
}


def _diffautoml(budget_epochs: int, search_keys: Mapping[str, Any]) -> tuple[dict, float]:
    from mobilekit.search.methods.diffautoml import VALIDATION_SHARE

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

    Raises:
        ConfigError: the budget cannot be split, or its search share is too small for ``method`` (the message
            names the smallest ``--budget`` that works at this final share).
    """
    search_epochs, final_epochs = split_budget(budget_epochs, final_share)
    if method in END_TO_END_RULES:
        keys, seen = END_TO_END_RULES[method](int(budget_epochs), search_keys or {})
        return keys, {"search_epochs_nominal": round(seen, 3), "final_epochs": 0, "images_epochs": round(seen, 3),
                      "rule": method}
    rule = BUDGET_RULES.get(method)
    try:
        keys, seen = (rule or _single_path)(search_epochs)
    except BudgetTooSmall as exc:
        smallest = next(b for b in range(2, 10_000) if split_budget(b, final_share)[0] >= exc.min_search_epochs)
        raise ConfigError(f"budget {budget_epochs:g} epochs is too small for {method}: {exc}; use --budget "
                          f"{smallest} or more (or a smaller --final-share)") from None
    keys = dict(keys, final_epochs=final_epochs)
    facts = {"search_epochs_nominal": round(seen, 3), "final_epochs": final_epochs,
             "images_epochs": round(seen + final_epochs, 3),
             "rule": method if rule else "assumed one training batch per step (no budget rule for this method)"}
    return keys, facts


# ---- forward-only images (reported beside the budget, not part of it) ------------------------------------------------
def _batch_images(n_images: int, batch_size: int, batches: int) -> int:
    """Images in the first ``batches`` seeded batches of a split (a split smaller than a batch is one batch)."""
    full = n_images // batch_size
    return min(batches, full) * batch_size if full else (n_images if batches >= 1 else 0)


def _scored_on_val(count_key: str) -> Callable[..., int]:
    def images(config: Any, summary: dict, n_train: int, n_val: int, run: Path) -> int:
        return int(getattr(config, count_key)) * n_val
    return images


def _evolution(config: Any, summary: dict, n_train: int, n_val: int, run: Path) -> int:
    per_candidate = (_batch_images(n_train, config.batch_size, config.bn_steps) + min(config.eval_samples, n_val))
    return int(summary.get("candidates_scored") or 0) * per_candidate


def _tnas_os(config: Any, summary: dict, n_train: int, n_val: int, run: Path) -> int:
    from mobilekit.search.runfolder import RunFolder

    folder = RunFolder(run)
    told = sum(int(r.get("told", 0)) for r in folder.records() if r.get("phase") == "search")
    proposals_path = folder.path(TNAS_PROPOSALS_FILE)
    proposals: Any = []
    if proposals_path.exists():     # a JSON list of {"accuracy": [...], ...} entries, one per refit
        from mobilekit.errors import SearchError
        from mobilekit.jsonio import read_json

        fix = "; the run folder is damaged: use another --out for a new run"
        proposals = read_json(proposals_path, SearchError, "missing from the run folder" + fix, fix)
        if not isinstance(proposals, list) or not all(isinstance(e, dict) for e in proposals):
            raise SearchError(f"{proposals_path}: expected a JSON list of objects{fix}")
    proposed = sum(len(entry.get("accuracy", [])) for entry in proposals)
    return _evolution(config, summary, n_train, n_val, run) + (told + proposed) * min(config.tell_batch, n_val)


FORWARD_ONLY: dict[str, Callable[[Any, dict, int, int, Path], int]] = {
    "single-path": lambda *args: 0,
    "multipath": lambda *args: 0,
    "autohas": lambda *args: 0,
    "diffautoml": lambda *args: 0,
    "random": _scored_on_val("random_samples"),
    "random-has": _scored_on_val("trials"),
    "tpe": _scored_on_val("trials"),
    "spos": _evolution,
    "tnas-os": _tnas_os,
}


def forward_only_images(method: str, config: Any, summary: dict, n_train: int, n_val: int, run: Path) -> int | None:
    """Images a finished search of ``method`` passed forward without a gradient step (candidate scoring and BN
    recalibration inside the search), from its ``config`` (a SearchConfig), its ``summary``, the sizes of the train
    and validation splits and its run folder ``run``; None for a method without an entry in :data:`FORWARD_ONLY`."""
    count = FORWARD_ONLY.get(method)
    return None if count is None else int(count(config, summary, n_train, n_val, Path(run)))
