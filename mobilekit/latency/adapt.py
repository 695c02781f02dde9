"""Few-shot latency tables: a new device's table from a reference device's table plus a few measured entries.

The new device's latency of a layer is modelled as a learned map of the reference device's latency of the
same layer: ``log new = a + b log ref (+ c log MACs)``. The reference latency ``ref`` of every layer the new
table needs is the reference table's entry when it has one, else the reference device's layer regression
(:class:`~mobilekit.latency.regression.LayerLatencyRegressor` fitted on the reference table) at that layer's
shape: another resolution, a kernel the reference never measured. So the map transfers the reference device's
regression, and only the map is learned on the new device.

:func:`select_entries` chooses the ``budget`` layers that best pin the map down: farthest-point sampling in the
standardised space of (log ref, log MACs, kernel, expansion, SE), so the measured layers span the reference
latency range and the layer kinds, starting from the median. :class:`TransferMap` fits the map on the measured
layers, choosing the family (constant ratio, log-log line, log-log line + MACs, log-log line + MACs, input
size, kernel, expansion and SE: a ratio that depends on the kind of layer) by leave-one-out error; every
coefficient but the intercept and the slope on log ref is ridge-penalised.

::

    prior_ms = reference_prior(reference_shapes, reference_ms, target_shapes)
    chosen = select_entries(target_shapes, prior_ms, budget=20)
    mapping = TransferMap().fit(prior_ms[chosen], measured_ms, [target_shapes[i] for i in chosen])
    predicted_ms = mapping.predict(prior_ms, target_shapes)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from mobilekit.latency.features import FEATURE_NAMES, LayerShape, as_layer_shape, feature_matrix
from mobilekit.latency.regression import LayerLatencyRegressor

FAMILIES = ("ratio", "loglinear", "loglinear+macs", "loglinear+shape")
_MACS = FEATURE_NAMES.index("macs")


def reference_prior(reference_shapes: Sequence[Any], reference_ms: Sequence[float], target_shapes: Sequence[Any],
                    regressor: LayerLatencyRegressor | None = None) -> np.ndarray:
    """The reference device's latency (ms, shape (N,)) of each target layer: its own measurement when the
    reference holds the same layer (shape, kernel, expansion, SE), else its regression's prediction."""
    ref_shapes = [as_layer_shape(s) for s in reference_shapes]
    targets = [as_layer_shape(s) for s in target_shapes]
    known = {_identity(s): float(v) for s, v in zip(ref_shapes, reference_ms)}
    prior = np.array([known.get(_identity(s), np.nan) for s in targets])
    missing = np.isnan(prior)
    if missing.any():
        model = regressor or LayerLatencyRegressor(cv=0).fit(ref_shapes, np.asarray(reference_ms, dtype=float))
        prior[missing] = model.predict([t for t, m in zip(targets, missing) if m])
    return np.maximum(prior, 1e-6)


def _identity(shape: LayerShape) -> tuple:
    return (shape.key(), shape.kernel, shape.mid, shape.se_channels, bool(shape.hswish))


def _descriptors(shapes: Sequence[LayerShape], prior_ms: np.ndarray) -> np.ndarray:
    macs = feature_matrix(shapes)[:, _MACS]
    columns = np.stack([np.log(prior_ms), np.log1p(macs), [s.kernel for s in shapes],
                        [s.mid / max(s.in_channels, 1) for s in shapes],
                        [float(s.se_channels > 0) for s in shapes]], axis=1)
    spread = columns.std(axis=0)
    columns = (columns - columns.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    columns[:, 0] *= 2.0  # the reference latency is what the map is a function of: cover its range first
    return columns


def select_entries(target_shapes: Sequence[Any], prior_ms: Sequence[float], budget: int) -> list[int]:
    """Indices of the ``budget`` target layers to measure (farthest-point sampling, see the module docstring).
    Deterministic."""
    shapes = [as_layer_shape(s) for s in target_shapes]
    prior = np.asarray(prior_ms, dtype=float)
    if budget >= len(shapes):
        return list(range(len(shapes)))
    points = _descriptors(shapes, prior)
    order = np.argsort(prior)
    chosen = [int(order[len(order) // 2])]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    while len(chosen) < budget:
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return sorted(chosen)


def _design(family: str, prior_ms: np.ndarray, shapes: Sequence[LayerShape]) -> np.ndarray:
    ones = np.ones_like(prior_ms)
    if family == "ratio":
        return ones[:, None]
    if family == "loglinear":
        return np.stack([ones, np.log(prior_ms)], axis=1)
    macs = feature_matrix(shapes)[:, _MACS]
    if family == "loglinear+macs":
        return np.stack([ones, np.log(prior_ms), np.log1p(macs)], axis=1)
    # the ratio new/ref may depend on the kind of layer (int8 speeds up some kinds more than others)
    return np.stack([ones, np.log(prior_ms), np.log1p(macs), [np.log(s.in_hw[0] * s.in_hw[1]) for s in shapes],
                     [s.kernel / 5.0 for s in shapes], [np.log(max(s.mid, 1) / max(s.in_channels, 1)) for s in shapes],
                     [float(s.se_channels > 0) for s in shapes]], axis=1)


@dataclass
class TransferMap:
    """``log new = design(ref, shape) . coef_`` fitted on a few measured layers (see the module docstring).

    Parameters: ``family`` one of :data:`FAMILIES` or ``"auto"`` (leave-one-out choice); ``alpha`` the ridge
    penalty on every coefficient but the intercept (and, for ``ratio``, the offset from log ref).
    Learned: ``family_``, ``coef_``, ``loo_mape_`` (leave-one-out MAPE of each family, %).
    """

    family: str = "auto"
    alpha: float = 0.1
    family_: str = ""
    coef_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loo_mape_: dict[str, float] = field(default_factory=dict)

    def _solve(self, family: str, prior: np.ndarray, shapes: list[LayerShape], measured: np.ndarray) -> np.ndarray:
        design = _design(family, prior, shapes)
        target = np.log(measured) - (np.log(prior) if family == "ratio" else 0.0)
        penalty = self.alpha * np.eye(design.shape[1])
        penalty[0, 0] = 0.0
        if family != "ratio":
            penalty[1, 1] = 0.0  # the slope on log ref is the map itself: not shrunk
        return np.linalg.solve(design.T @ design + penalty, design.T @ target)

    def _apply(self, family: str, coef: np.ndarray, prior: np.ndarray, shapes: list[LayerShape]) -> np.ndarray:
        log = _design(family, prior, shapes) @ coef + (np.log(prior) if family == "ratio" else 0.0)
        return np.exp(log)

    def fit(self, prior_ms: Sequence[float], measured_ms: Sequence[float], shapes: Sequence[Any]) -> "TransferMap":
        """Fit on the measured layers: their reference latency ``prior_ms``, new latency ``measured_ms`` (ms)."""
        prior, measured = np.asarray(prior_ms, float), np.asarray(measured_ms, float)
        layer_shapes = [as_layer_shape(s) for s in shapes]
        if prior.size < 2 or np.any(measured <= 0):
            raise ValueError("need at least 2 measured layers with positive latencies")
        families = FAMILIES if self.family == "auto" else (self.family,)
        self.loo_mape_ = {}
        for family in families:
            if _design(family, prior[:1], layer_shapes[:1]).shape[1] >= prior.size:
                continue
            errors = []
            for i in range(prior.size):
                keep = np.arange(prior.size) != i
                coef = self._solve(family, prior[keep], [s for j, s in enumerate(layer_shapes) if j != i],
                                   measured[keep])
                guess = self._apply(family, coef, prior[i:i + 1], layer_shapes[i:i + 1])[0]
                errors.append(abs(guess - measured[i]) / measured[i])
            self.loo_mape_[family] = float(100 * np.mean(errors))
        self.family_ = min(self.loo_mape_, key=self.loo_mape_.get) if self.loo_mape_ else "ratio"
        self.coef_ = self._solve(self.family_, prior, layer_shapes, measured)
        return self

    def predict(self, prior_ms: Sequence[float], shapes: Sequence[Any]) -> np.ndarray:
        """The new device's latency (ms, shape (N,)) of layers with reference latency ``prior_ms``."""
        return self._apply(self.family_, self.coef_, np.asarray(prior_ms, float), [as_layer_shape(s) for s in shapes])

    def describe(self) -> dict[str, Any]:
        return {"family": self.family_, "coef": [round(float(c), 6) for c in self.coef_],
                "loo_mape_percent": {k: round(v, 2) for k, v in self.loo_mape_.items()}}


@dataclass
class FewShotResult:
    """Held-out error of a few-shot table on layers whose true latency is known (for benchmarks)."""

    budget: int
    mape: float
    family: str
    chosen: list[int]


def few_shot_heldout(reference_shapes: Sequence[Any], reference_ms: Sequence[float], target_shapes: Sequence[Any],
                     target_ms: Sequence[float], budget: int) -> FewShotResult:
    """Choose ``budget`` target layers, "measure" them (look up ``target_ms``), predict the others, and return
    the MAPE (%) on those others."""
    from mobilekit.latency.metrics import error_metrics

    target = np.asarray(target_ms, float)
    prior = reference_prior(reference_shapes, reference_ms, target_shapes)
    chosen = select_entries(target_shapes, prior, budget)
    mapping = TransferMap().fit(prior[chosen], target[chosen], [target_shapes[i] for i in chosen])
    rest = np.setdiff1d(np.arange(len(target)), chosen)
    predicted = mapping.predict(prior[rest], [target_shapes[i] for i in rest])
    return FewShotResult(budget, float(error_metrics(target[rest], predicted)["mape_pct"]), mapping.family_, chosen)


# ---- a few-shot table on a device --------------------------------------------------------------------------------
def adapt_table(reference, runner, out, budget: int = 20, **profile_kwargs: Any):
    """Measure ``budget`` entries of ``reference``'s space on ``runner``'s device (the stem, the head and the
    ``budget - 2`` layers :func:`select_entries` picks) and predict every other layer entry by a
    :class:`TransferMap` of the reference table; write the table to ``out``. Predicted entries carry
    ``measured: false, predicted: true``; ``settings.adapt`` records the reference, the chosen entries and the
    map. ``profile_kwargs`` go to :func:`~mobilekit.profile.profiler.profile_device` (runs, repeats, warmup...).

    Raises:
        ConfigError: ``budget`` is below 4.
        TableError: the reference has fewer than 5 measured layer entries.
    """
    from mobilekit.errors import ConfigError, TableError
    from mobilekit.profile.profiler import profile_device
    from mobilekit.space import LayerSpec, parse_layer_type

    if budget < 4:
        raise ConfigError(f"--budget {budget} is too small: the stem, the head and at least 2 layers are measured; "
                          "use --budget 20")
    space = reference.search_space()
    covered = reference.fixed_positions()
    ref_specs, ref_ms = [], []
    for index, name, entry in reference.iter_entries():
        op = parse_layer_type(name)
        if op.is_skip or entry.get("median_ms") is None or entry.get("predicted") or index in covered:
            continue
        ref_specs.append(LayerSpec(space.positions[index], op))
        ref_ms.append(float(entry["median_ms"]))
    where = str(reference.path or "reference table")
    if len(ref_specs) < 5:
        raise TableError(f"{where}: only {len(ref_specs)} measured layer entries; a few-shot table needs a "
                         "reference with at least 5 (profile it with 'mobilekit profile')")
    targets = [LayerSpec(p, op) for p in space.positions if p.index not in covered for op in p.candidates
               if not op.is_skip]
    shapes = [LayerShape.from_spec(spec) for spec in targets]
    prior = reference_prior([LayerShape.from_spec(s) for s in ref_specs], ref_ms, shapes)
    chosen = select_entries(shapes, prior, budget - 2)
    only = [(targets[i].index, targets[i].op.name) for i in chosen]
    table = profile_device(runner, space, out, positions=sorted({p for p, _ in only}), only=only, **profile_kwargs)
    measured = [i for i in chosen if table.has(targets[i].index, targets[i].op)]
    values = [table.latency_ms(targets[i].index, targets[i].op) for i in measured]
    mapping = TransferMap().fit(prior[measured], values, [shapes[i] for i in measured])
    rest = [i for i in range(len(targets)) if i not in set(chosen)]
    predicted = mapping.predict(prior[rest], [shapes[i] for i in rest]) if rest else []
    label = reference.device.get("name") or where
    for i, value in zip(rest, predicted):
        table.set_entry(targets[i].index, targets[i].op, {
            "median_ms": round(float(value), 6), "measured": False, "predicted": True,
            "note": f"few-shot: predicted from {label}'s latency by a {mapping.family_} map"})
    table.settings["adapt"] = {"reference": where, "reference_device": reference.device, "budget": budget,
                               "measured_layers": [f"{p}:{t}" for p, t in only], "map": mapping.describe()}
    table.save(out)
    return table, mapping
