"""Per-layer latency regression: predicts layers a table never measured, and whole networks.

:class:`LayerLatencyRegressor` is a scikit-learn style estimator over the layer features of
:mod:`mobilekit.latency.features`: ``fit(layers, latency_ms)`` / ``predict(layers)``, hyper-parameters in
``__init__``, learned state with a trailing underscore. :meth:`~LayerLatencyRegressor.fit_table` fits it on the
measured entries of a :class:`~mobilekit.latency_table.LatencyTable`, after which it predicts whole networks
(:meth:`~LayerLatencyRegressor.predict_network`), in the table's space or in another width / resolution, and
fills the table's missing entries (:meth:`~LayerLatencyRegressor.fill_table`).

Model families (``model=``):

``opcost``      latency = non-negative combination of the cost terms of :data:`~.features.COST_TERMS`
                (pointwise MACs, depthwise MACs, ..., ops), fitted for relative error. Extrapolates to other
                widths, resolutions and to SE blocks, because those only change the counts.
``opcost+gbr``  ``opcost`` times exp(gradient-boosted trees on the log shape features, :data:`SHAPE_FEATURES`),
                the trees fitted on log(measured / opcost). Outside the range the trees saw, their correction
                stays bounded and the cost model carries the prediction.
``gbr``/``rf``  gradient-boosted trees / random forest on log features, predicting log latency.
``ridge``       ridge regression on standardised log features, predicting log latency (a power law).
``auto``        all of the above, cross-validated with every operation of one layer shape on the same side of
                the split (``GroupKFold``; positions with the same shapes count as one layer); the family with
                the lowest held-out mean absolute percentage error is kept. ``cv_scores_`` holds every
                candidate's held-out figures, ``heldout_`` the chosen one's.

A whole-network correction ``measured ~ network_scale_ x (layer sum) + network_overhead_ms_`` is fitted from
whole-network measurements with :meth:`~LayerLatencyRegressor.fit_network` (identity until then): layer sums
are biased on real devices (on the development CPU a 22-layer net ran 5-6 % slower than its layers measured
one by one when the machine was quiet, and up to 1.5x slower while other jobs shared its two cores).

Fitted models are saved as JSON (:meth:`~LayerLatencyRegressor.save`): coefficients and the trees' node arrays,
never pickles. Predictions are always computed from those arrays, so a loaded model predicts exactly what the
fitted one did.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from mobilekit.validation.predictor import check_predictor_params, validate_predictor_data
from mobilekit import __version__
from mobilekit.errors import ConfigError, TableError
from mobilekit.jsonio import json_field_is, read_json, write_json_atomic
from mobilekit.latency.features import (
    COST_TERMS, FEATURE_NAMES, LayerLike, as_layer_shape, cost_matrix, feature_matrix,
    fixed_part_macs,
)
from mobilekit.latency.metrics import error_metrics
from mobilekit.latency_table import LatencyTable
from mobilekit.space import Architecture, LayerSpec, LayerType, SearchSpace, parse_layer_type

FORMAT = "mobilekit-latency-regressor/1"
MODEL_KINDS: tuple[str, ...] = ("opcost", "opcost+gbr", "gbr", "rf", "ridge")
MIN_TRAIN_ENTRIES = 5
# The correction trees of ``opcost+gbr`` see the layer's shape, not the derived counts: a count that an SE block
# raises (ops, bytes) must not send an SE layer down a branch learnt from other layers (residual ones, say).
SHAPE_FEATURES = ("in_h", "in_w", "in_channels", "out_channels", "out_h", "out_w", "kernel", "expansion",
                  "mid_channels", "se_ratio", "se_channels", "stride", "residual", "hswish")
SHAPE_COLUMNS = [FEATURE_NAMES.index(name) for name in SHAPE_FEATURES]


class LayerLatencyRegressor:
    """Per-layer latency model over layer features (see the module docstring for the model families).

    Parameters:
        model: one of :data:`MODEL_KINDS` or ``"auto"`` (choose by held-out error).
        cv: folds of the grouped cross-validation that reports held-out error (and chooses under ``auto``);
            0 or 1 skips it (``heldout_`` is then None).
        n_estimators, learning_rate, max_depth: gradient-boosting settings (``max_depth`` also bounds the forest
            trees when given; forests grow ``n_estimators`` trees).
        alpha: ridge penalty.
        random_state: seed of the folds and the trees.

    Learned state: ``model_`` (the family used), ``params_`` (its JSON parameters), ``cv_scores_`` (held-out
    metrics per candidate family), ``heldout_`` (those of ``model_``), ``n_train_``, ``skip_ms_`` (cost of a
    skipped layer), ``table_`` (what :meth:`fit_table` read: space, device, fixed parts), ``network_scale_``,
    ``network_overhead_ms_`` and ``network_n_`` (the whole-network correction and how many networks fitted it).
    """

    def __init__(self, model: str = "auto", cv: int = 5, n_estimators: int = 200, learning_rate: float = 0.05,
                 max_depth: int = 3, alpha: float = 1.0, random_state: int = 0) -> None:
        self.model = model
        self.cv = cv
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.alpha = alpha
        self.random_state = random_state

    # ---- scikit-learn protocol ----------------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in
                ("model", "cv", "n_estimators", "learning_rate", "max_depth", "alpha", "random_state")}

    def set_params(self, **params: Any) -> "LayerLatencyRegressor":
        for name, value in params.items():
            if name not in self.get_params():
                raise ValueError(f"unknown parameter {name!r} of LayerLatencyRegressor")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if v != _DEFAULTS[k]}
        return "LayerLatencyRegressor(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"

    def fit(self, X: Sequence[LayerLike], y: Sequence[float], groups: Sequence[Any] | None = None
            ) -> "LayerLatencyRegressor":
        """Fit on layers ``X`` (LayerSpec or LayerShape, no skips) with measured latencies ``y`` (ms, shape (N,)).

        ``groups`` keeps layers together in the held-out split (default: the layer's shape, so every operation
        of a position, and positions with the same shapes, are held out together): the held-out error is that of
        layers the model never saw.
        """
        kinds = self._candidate_kinds()
        shapes = [as_layer_shape(x) for x in X]
        target = np.asarray(y, dtype=np.float64).ravel()
        if len(shapes) != target.size:
            raise ValueError(f"X has {len(shapes)} layers but y has {target.size} latencies")
        if any(s.is_skip for s in shapes):
            raise ValueError("skip layers have no features to fit; leave them out (their cost is skip_ms_)")
        if target.size < MIN_TRAIN_ENTRIES:
            raise ValueError(f"need at least {MIN_TRAIN_ENTRIES} layers to fit, got {target.size}")
        if not np.all(np.isfinite(target)) or np.any(target <= 0):
            raise ValueError("latencies must be finite and positive (ms)")
        if groups is None:
            groups = [shape.key() for shape in shapes]
        group_ids = _group_codes(groups)
        if len(group_ids) != target.size:
            raise ValueError(f"groups has {len(group_ids)} entries, expected {target.size}")
        features, costs = feature_matrix(shapes), cost_matrix(shapes)
        hyper = self.get_params()

        self.cv_scores_: dict[str, dict[str, float]] = {}
        folds = min(int(self.cv or 0), len(set(group_ids.tolist())))
        if folds >= 2:
            for kind in kinds:
                predicted = _cross_val_predict(kind, features, costs, target, group_ids, folds, hyper)
                self.cv_scores_[kind] = error_metrics(target, predicted)
        if self.model == "auto":
            chosen = (min(kinds, key=lambda k: self.cv_scores_[k]["mape_pct"]) if self.cv_scores_
                      else "opcost+gbr")
        else:
            chosen = self.model
        self.model_ = chosen
        self.params_ = _fit_kind(chosen, features, costs, target, hyper)
        self.heldout_ = self.cv_scores_.get(chosen)
        self.n_train_ = int(target.size)
        self.skip_ms_ = 0.0
        self.table_: dict[str, Any] | None = None
        self.network_scale_, self.network_overhead_ms_, self.network_n_ = 1.0, 0.0, 0
        self._reset_caches()
        return self

    def predict(self, X: Sequence[LayerLike]) -> np.ndarray:
        """Predicted latency (ms) of each layer, shape (N,). A skipped layer costs ``skip_ms_``."""
        self._check_fitted()
        shapes = [as_layer_shape(x) for x in X]
        out = np.full(len(shapes), float(self.skip_ms_))
        rows = [i for i, s in enumerate(shapes) if not s.is_skip]
        if rows:
            chosen = [shapes[i] for i in rows]
            out[rows] = _predict_kind(self.model_, self._compiled(), feature_matrix(chosen), cost_matrix(chosen))
        return out

    def score(self, X: Sequence[LayerLike], y: Sequence[float]) -> float:
        """Negative mean absolute percentage error (higher is better, as scikit-learn scores are)."""
        return -error_metrics(y, self.predict(X))["mape_pct"]

    # ---- tables -------------------------------------------------------------------------------------------
    def fit_table(self, table: LatencyTable) -> "LayerLatencyRegressor":
        """Fit on every measured layer entry of ``table`` and remember its fixed parts and skip cost.

        Raises:
            TableError: the table has fewer than 5 measured layer entries, or entries at unknown positions.
        """
        space = table.search_space()
        where = str(table.path) if table.path else "latency table"
        layers, latencies, skips = [], [], []
        for index, name, entry in table.iter_entries():
            if entry.get("median_ms") is None or entry.get("note") == "regression":
                continue
            if not 0 <= index < len(space.positions):
                raise TableError(f"{where}: entry for layer {index}, but space {space.name!r} has "
                                 f"{len(space.positions)} positions (0-{len(space.positions) - 1})")
            op = parse_layer_type(name)
            if op.is_skip:
                skips.append(float(entry["median_ms"]))
                continue
            layers.append(LayerSpec(space.positions[index], op))
            latencies.append(float(entry["median_ms"]))
        if len(layers) < MIN_TRAIN_ENTRIES:
            raise TableError(f"{where}: only {len(layers)} measured layer entries; the regression needs at least "
                             f"{MIN_TRAIN_ENTRIES} (profile more layers with 'mobilekit profile')")
        self.fit(layers, latencies)
        covers = sorted({c for e in table.fixed.values() if e.get("median_ms") is not None
                         for c in e.get("covers", [])}, key=str)
        self.table_ = {
            "space": dict(table.space), "device": dict(table.device), "source": table.source,
            "path": str(table.path) if table.path else None, "fixed_ms": table.fixed_ms(), "fixed_covers": covers,
            "fixed_macs": fixed_part_macs(space, covers), "covered_positions": sorted(table.fixed_positions()),
        }
        self.skip_ms_ = float(np.median(skips)) if skips else 0.0
        return self

    def predict_network(self, archs: Architecture | Iterable[Architecture], corrected: bool = True) -> np.ndarray:
        """Whole-network latency (ms) of each architecture, shape (N,): the table's fixed parts (scaled by MACs
        for another width or resolution) + the predicted layers, then the network correction if ``corrected``.

        Raises:
            TableError: the regressor was fitted with :meth:`fit`, not :meth:`fit_table` (no fixed parts known).
        """
        archs = [archs] if isinstance(archs, Architecture) else list(archs)
        scale, overhead = (self.network_scale_, self.network_overhead_ms_) if corrected else (1.0, 0.0)
        out = np.empty(len(archs))
        for i, arch in enumerate(archs):
            fixed_ms, layers = self._network_parts(arch)
            out[i] = scale * (fixed_ms + sum(ms for _, _, ms in layers)) + overhead
        return out

    def predict_layers(self, arch: Architecture) -> list[tuple[int, str, float]]:
        """``(position, type, ms)`` of every layer the network sum adds (positions in a fixed entry left out)."""
        return self._network_parts(arch)[1]

    def fixed_ms(self, space: SearchSpace) -> float:
        """Latency (ms) of the fixed parts in ``space``: the table's value, scaled by MACs in another space."""
        self._check_table()
        table = self.table_
        if space.describe() == {k: table["space"].get(k) for k in space.describe()} or not table["fixed_macs"]:
            return float(table["fixed_ms"])
        return float(table["fixed_ms"]) * fixed_part_macs(space, table["fixed_covers"]) / table["fixed_macs"]

    def fit_network(self, archs: Sequence[Architecture], measured_ms: Sequence[float]) -> "LayerLatencyRegressor":
        """Fit the whole-network correction on measured whole networks (``measured_ms`` shape (N,), ms)."""
        base = self.predict_network(archs, corrected=False)
        self.network_scale_, self.network_overhead_ms_ = fit_network_correction(base, measured_ms)
        self.network_n_ = int(len(base))
        return self

    def fill_table(self, table: LatencyTable, anchor: bool = False) -> LatencyTable:
        """A copy of ``table`` with every missing or null layer entry predicted.

        Filled entries are marked ``"measured": false, "note": "regression"``. With ``anchor`` the prediction is
        multiplied by measured / predicted of the nearest measured type at the same position (the same kernel
        and expansion without SE, else the geometric mean over the position's measured types), so a filled SE
        entry keeps the position's measured level and takes only the SE increment from the model. (Hiding the
        SE entries of this CPU's tables and filling them, anchoring gave 13.7 % instead of 14.6 % mean error
        with onnxruntime but 8.1 % instead of 7.0 % with LiteRT: no clear gain, so it is off by default.)
        """
        self._check_fitted()
        space = table.search_space()
        filled = LatencyTable.from_dict(copy.deepcopy(table.to_dict()), source=str(table.path or "latency table"))
        covered = table.fixed_positions()
        todo = [LayerSpec(position, op) for position in space.positions if position.index not in covered
                for op in position.candidates if not op.is_skip and not table.has(position.index, op)]
        if not todo:
            return filled
        predicted = self.predict(todo)
        ratios = self._anchor_ratios(table, space, todo) if anchor else [(1.0, None)] * len(todo)
        heldout = self.heldout_["mape_pct"] if self.heldout_ else None
        for spec, value, (ratio, reference) in zip(todo, predicted, ratios):
            entry = {"median_ms": float(value * ratio), "measured": False, "note": "regression",
                     "predictor": f"LayerLatencyRegressor({self.model_})", "heldout_mape_pct": heldout}
            if reference is not None:
                entry["anchor"] = reference
            filled.set_entry(spec.index, spec.op, entry)
        filled.source = (table.source + "; " if table.source else "") + (
            f"{len(todo)} unmeasured entries predicted by LayerLatencyRegressor({self.model_})")
        return filled

    # ---- persistence --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "format": FORMAT,
            "mobilekit_version": __version__,
            "hyperparameters": self.get_params(),
            "model": self.model_,
            "feature_names": list(FEATURE_NAMES),
            "cost_terms": list(COST_TERMS),
            "params": self.params_,
            "n_train": self.n_train_,
            "heldout": self.heldout_,
            "cv_scores": self.cv_scores_,
            "skip_ms": self.skip_ms_,
            "table": self.table_,
            "network_correction": {"scale": self.network_scale_, "overhead_ms": self.network_overhead_ms_,
                                   "n_networks": self.network_n_},
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "predictor") -> "LayerLatencyRegressor":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"{source}: not a latency predictor (format {got!r}, expected {FORMAT!r}); "
                              "make one with 'mobilekit latency fit'")
        validate_predictor_data(data, source)  # typed, range-checked fields (mobilekit/validation/predictor.py)
        try:
            if list(data["feature_names"]) != list(FEATURE_NAMES) or list(data["cost_terms"]) != list(COST_TERMS):
                raise ConfigError(f"{source}: written with other layer features; "
                                  "re-fit it with 'mobilekit latency fit'")
            model = cls(**data["hyperparameters"])
            model.model_ = str(data["model"])
            if model.model_ not in MODEL_KINDS:
                raise ConfigError(f"{source}: unknown model family {model.model_!r}")
            check_predictor_params(data["params"], model.model_, len(FEATURE_NAMES), len(SHAPE_COLUMNS),
                                   len(COST_TERMS), source)  # tree structure, indices, coefficients
            model.params_ = data["params"]
            model.n_train_ = int(data["n_train"])
            model.heldout_ = data.get("heldout")
            model.cv_scores_ = data.get("cv_scores") or {}
            model.skip_ms_ = float(data.get("skip_ms", 0.0))
            model.table_ = data.get("table")
            correction = data.get("network_correction") or {}
            model.network_scale_ = float(correction.get("scale", 1.0))
            model.network_overhead_ms_ = float(correction.get("overhead_ms", 0.0))
            model.network_n_ = int(correction.get("n_networks", 0))
            model._reset_caches()
            model._compiled()
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: malformed latency predictor ({type(exc).__name__}: {exc}); "
                              "re-fit it with 'mobilekit latency fit'") from None
        return model

    def save(self, path: str | Path) -> Path:
        """Write the fitted model as JSON (atomically)."""
        return write_json_atomic(path, self.to_dict(), indent=None, separators=(",", ":"),
                                 recognise=lambda p: json_field_is(p, "format", FORMAT))  # an older predictor

    @classmethod
    def load(cls, path: str | Path) -> "LayerLatencyRegressor":
        data = read_json(path, ConfigError, "no such predictor file; make one with 'mobilekit latency fit'",
                         "; re-fit it with 'mobilekit latency fit'")
        return cls.from_dict(data, source=str(path))

    # ---- internals ----------------------------------------------------------------------------------------
    def _candidate_kinds(self) -> tuple[str, ...]:
        if self.model == "auto":
            return MODEL_KINDS
        if self.model not in MODEL_KINDS:
            raise ValueError(f"unknown model {self.model!r}: use 'auto' or one of {', '.join(MODEL_KINDS)}")
        return (self.model,)

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise TableError("the latency regressor is not fitted: call fit_table(table) or load a saved one")

    def _check_table(self) -> None:
        self._check_fitted()
        if not self.table_:
            raise TableError("whole-network prediction needs the table's fixed parts: fit with fit_table(table)")

    def _reset_caches(self) -> None:
        self._arrays: dict[str, Any] | None = None
        self._space_cache: dict[tuple, dict[tuple[int, LayerType], float]] = {}

    def _compiled(self) -> dict[str, Any]:
        if getattr(self, "_arrays", None) is None:
            self._arrays = _compile_params(self.params_)
        return self._arrays

    def _layer_cache(self, space: SearchSpace) -> dict[tuple[int, LayerType], float]:
        key = (space.name, space.width, space.resolution, space.num_classes)
        if not hasattr(self, "_space_cache"):
            self._reset_caches()
        if key not in self._space_cache:
            specs = [LayerSpec(p, op) for p in space.positions for op in p.candidates]
            values = self.predict(specs)
            self._space_cache[key] = {(s.index, s.op): float(v) for s, v in zip(specs, values)}
        return self._space_cache[key]

    def _network_parts(self, arch: Architecture) -> tuple[float, list[tuple[int, str, float]]]:
        self._check_table()
        covered = set(self.table_["covered_positions"])
        cache = self._layer_cache(arch.space)
        layers = [(spec.index, spec.op.name, cache[(spec.index, spec.op)]) for spec in arch.layers()
                  if spec.index not in covered]
        return self.fixed_ms(arch.space), layers

    def _anchor_ratios(self, table: LatencyTable, space: SearchSpace, todo: list[LayerSpec]
                       ) -> list[tuple[float, str | None]]:
        out = []
        for spec in todo:
            measured = [op for op in spec.position.candidates if not op.is_skip and _is_measured(table, spec.index, op)]
            if not measured:
                out.append((1.0, None))
                continue
            plain = LayerType(spec.op.kernel, spec.op.expansion, 0.0)
            refs = [plain] if plain in measured else measured
            predicted = self.predict([LayerSpec(spec.position, op) for op in refs])
            logs = [math.log(table.latency_ms(spec.index, op) / p) for op, p in zip(refs, predicted)]
            out.append((math.exp(sum(logs) / len(logs)), refs[0].name if len(refs) == 1 else "position"))
        return out


_DEFAULTS = LayerLatencyRegressor().get_params()


def fit_network_correction(predicted_ms: Sequence[float], measured_ms: Sequence[float]) -> tuple[float, float]:
    """Fit ``measured ~ scale x predicted + overhead_ms`` for relative error; returns ``(scale, overhead_ms)``.

    With fewer than 3 networks, or predictions spanning less than 10 %, only the scale is fitted (overhead 0).
    """
    predicted = np.asarray(predicted_ms, dtype=np.float64).ravel()
    measured = np.asarray(measured_ms, dtype=np.float64).ravel()
    if predicted.size != measured.size or predicted.size == 0:
        raise ValueError(f"need as many predictions as measurements (got {predicted.size} and {measured.size})")
    weights = 1.0 / measured
    if predicted.size < 3 or predicted.max() < 1.1 * predicted.min():
        ratio = predicted * weights
        return float(np.sum(ratio) / np.sum(ratio ** 2)), 0.0
    design = np.stack([predicted, np.ones_like(predicted)], axis=1) * weights[:, None]
    (scale, overhead), *_ = np.linalg.lstsq(design, measured * weights, rcond=None)
    return float(scale), float(overhead)


def _is_measured(table: LatencyTable, index: int, op: LayerType) -> bool:
    """An entry with a value that does not come from a regression."""
    entry = table.entry(index, op)
    return entry is not None and entry.get("median_ms") is not None and entry.get("note") != "regression"


# ---- model families ---------------------------------------------------------------------------------------
def _group_codes(groups: Sequence[Any]) -> np.ndarray:
    codes: dict[Any, int] = {}
    return np.array([codes.setdefault(g if not isinstance(g, list) else tuple(g), len(codes)) for g in groups])


def _log_features(features: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(features, 0.0))


def _cross_val_predict(kind: str, features: np.ndarray, costs: np.ndarray, target: np.ndarray,
                       groups: np.ndarray, folds: int, hyper: dict[str, Any]) -> np.ndarray:
    from sklearn.model_selection import GroupKFold

    predicted = np.empty_like(target)
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=hyper["random_state"])
    for train, test in splitter.split(features, target, groups):
        params = _compile_params(_fit_kind(kind, features[train], costs[train], target[train], hyper))
        predicted[test] = _predict_kind(kind, params, features[test], costs[test])
    return predicted


def _fit_kind(kind: str, features: np.ndarray, costs: np.ndarray, target: np.ndarray,
              hyper: dict[str, Any]) -> dict[str, Any]:
    logs = _log_features(features)
    if kind == "opcost":
        return {"opcost": _fit_opcost(costs, target)}
    if kind == "opcost+gbr":
        opcost = _fit_opcost(costs, target)
        base = np.maximum(costs @ np.asarray(opcost["coef"]), 1e-9)
        return {"opcost": opcost, "gbr": _fit_gbr(logs[:, SHAPE_COLUMNS], np.log(target / base), hyper)}
    if kind == "gbr":
        return {"gbr": _fit_gbr(logs, np.log(target), hyper)}
    if kind == "rf":
        return {"rf": _fit_rf(logs, np.log(target), hyper)}
    if kind == "ridge":
        return {"ridge": _fit_ridge(logs, np.log(target), hyper["alpha"])}
    raise ValueError(f"unknown model {kind!r}")


def _predict_kind(kind: str, arrays: dict[str, Any], features: np.ndarray, costs: np.ndarray) -> np.ndarray:
    logs = _log_features(features)
    if kind == "opcost":
        return costs @ arrays["opcost"]
    if kind == "opcost+gbr":
        correction = _predict_trees(arrays["gbr"], logs[:, SHAPE_COLUMNS])
        return np.maximum(costs @ arrays["opcost"], 1e-9) * np.exp(correction)
    if kind in ("gbr", "rf"):
        return np.exp(_predict_trees(arrays[kind], logs))
    if kind == "ridge":
        ridge = arrays["ridge"]
        return np.exp((logs - ridge["mean"]) / ridge["scale"] @ ridge["coef"] + ridge["intercept"])
    raise ValueError(f"unknown model {kind!r}")


def _fit_opcost(costs: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """Non-negative least squares on the cost terms, minimising the relative error."""
    from scipy.optimize import nnls

    design = costs / target[:, None]
    norms = np.linalg.norm(design, axis=0)
    norms[norms == 0] = 1.0
    coef, _ = nnls(design / norms, np.ones_like(target))
    return {"coef": [float(c) for c in coef / norms], "terms": list(COST_TERMS)}


def _fit_gbr(logs: np.ndarray, target: np.ndarray, hyper: dict[str, Any]) -> dict[str, Any]:
    from sklearn.ensemble import GradientBoostingRegressor

    model = GradientBoostingRegressor(n_estimators=hyper["n_estimators"], learning_rate=hyper["learning_rate"],
                                      max_depth=hyper["max_depth"], random_state=hyper["random_state"])
    model.fit(logs, target)
    return {"combine": "sum", "init": float(np.asarray(model.init_.constant_).ravel()[0]),
            "learning_rate": float(model.learning_rate),
            "trees": [_dump_tree(est.tree_) for est in model.estimators_[:, 0]]}


def _fit_rf(logs: np.ndarray, target: np.ndarray, hyper: dict[str, Any]) -> dict[str, Any]:
    from sklearn.ensemble import RandomForestRegressor

    model = RandomForestRegressor(n_estimators=hyper["n_estimators"] // 2, min_samples_leaf=2,
                                  random_state=hyper["random_state"], n_jobs=1)
    model.fit(logs, target)
    return {"combine": "mean", "init": 0.0, "learning_rate": 1.0,
            "trees": [_dump_tree(est.tree_) for est in model.estimators_]}


def _fit_ridge(logs: np.ndarray, target: np.ndarray, alpha: float) -> dict[str, Any]:
    from sklearn.linear_model import Ridge

    mean = logs.mean(axis=0)
    scale = logs.std(axis=0)
    scale[scale == 0] = 1.0
    model = Ridge(alpha=alpha).fit((logs - mean) / scale, target)
    return {"mean": mean.tolist(), "scale": scale.tolist(), "coef": model.coef_.tolist(),
            "intercept": float(model.intercept_)}


def _dump_tree(tree: Any) -> dict[str, list]:
    """A fitted scikit-learn tree as plain lists (leaves have left = right = -1)."""
    return {"left": tree.children_left.tolist(), "right": tree.children_right.tolist(),
            "feature": tree.feature.tolist(), "threshold": tree.threshold.tolist(),
            "value": tree.value[:, 0, 0].tolist()}


def _compile_params(params: dict[str, Any]) -> dict[str, Any]:
    """The JSON parameters as numpy arrays, ready to predict (trees padded into (T, nodes) arrays)."""
    arrays: dict[str, Any] = {}
    if "opcost" in params:
        arrays["opcost"] = np.asarray(params["opcost"]["coef"], dtype=np.float64)
        if arrays["opcost"].shape != (len(COST_TERMS),):
            raise ValueError(f"opcost has {arrays['opcost'].size} coefficients, expected {len(COST_TERMS)}")
    for name in ("gbr", "rf"):
        if name in params:
            arrays[name] = _compile_trees(params[name])
    if "ridge" in params:
        arrays["ridge"] = {key: np.asarray(params["ridge"][key], dtype=np.float64)
                           for key in ("mean", "scale", "coef", "intercept")}
    return arrays


def _compile_trees(ensemble: dict[str, Any]) -> dict[str, Any]:
    trees = ensemble["trees"]
    if not trees:
        raise ValueError("a tree ensemble without trees")
    width = max(len(t["left"]) for t in trees)

    def stack(key: str, dtype: type, fill: float) -> np.ndarray:
        out = np.full((len(trees), width), fill, dtype=dtype)
        for i, tree in enumerate(trees):
            out[i, :len(tree[key])] = tree[key]
        return out

    return {"combine": ensemble["combine"], "init": float(ensemble["init"]),
            "learning_rate": float(ensemble["learning_rate"]), "left": stack("left", np.int64, -1),
            "right": stack("right", np.int64, -1), "feature": stack("feature", np.int64, 0),
            "threshold": stack("threshold", np.float64, 0.0), "value": stack("value", np.float64, 0.0)}


def _predict_trees(ensemble: dict[str, Any], logs: np.ndarray) -> np.ndarray:
    """Evaluate every tree on every row (as scikit-learn does: features compared as float32)."""
    data = logs.astype(np.float32).astype(np.float64)
    n_trees, n_rows = ensemble["left"].shape[0], data.shape[0]
    tree_ids = np.repeat(np.arange(n_trees), n_rows)
    row_ids = np.tile(np.arange(n_rows), n_trees)
    node = np.zeros(n_trees * n_rows, dtype=np.int64)
    left, right = ensemble["left"], ensemble["right"]
    while True:
        child = left[tree_ids, node]
        active = np.nonzero(child != -1)[0]
        if active.size == 0:
            break
        t, n = tree_ids[active], node[active]
        go_left = data[row_ids[active], ensemble["feature"][t, n]] <= ensemble["threshold"][t, n]
        node[active] = np.where(go_left, left[t, n], right[t, n])
    values = ensemble["value"][tree_ids, node].reshape(n_trees, n_rows)
    total = values.sum(axis=0) if ensemble["combine"] == "sum" else values.mean(axis=0)
    return ensemble["init"] + ensemble["learning_rate"] * total
