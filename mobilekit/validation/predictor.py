"""The latency predictor file (``mobilekit latency fit --out``), as typed, range-checked fields: the format, the
feature lists, the fitted parameters (every number in them finite), ``n_train`` >= 0, ``skip_ms`` >= 0 and the
network correction (``scale`` > 0, finite ``overhead_ms``, ``n_networks`` >= 0)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mobilekit.errors import ConfigError
from mobilekit.validation._fields import Finite
from mobilekit.validation._messages import first_error


class NetworkCorrection(BaseModel):
    model_config = ConfigDict(extra="allow")

    scale: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)] = 1.0
    overhead_ms: Finite = 0.0
    n_networks: Annotated[int, Field(strict=True, ge=0)] = 0


class PredictorFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: Annotated[str, Field(strict=True)]
    hyperparameters: dict[str, Any]
    model: Annotated[str, Field(strict=True)]
    feature_names: list[Annotated[str, Field(strict=True)]]
    cost_terms: list[Annotated[str, Field(strict=True)]]
    params: dict[str, Any]
    n_train: Annotated[int, Field(strict=True, ge=0)]
    skip_ms: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] = 0.0
    table: dict[str, Any] | None = None
    network_correction: NetworkCorrection | None = None


def _first_non_finite(value: Any, where: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _first_non_finite(item, f"{where}.{key}")
        if found:
            return found
    return None


def validate_predictor_data(data: Any, source: str) -> PredictorFile:
    """Check a parsed predictor file; raise :class:`ConfigError` with one line naming the field."""
    fix = "; re-fit it with 'mobilekit latency fit'"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object (a latency predictor), got {type(data).__name__}{fix}")
    try:
        predictor = PredictorFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(first_error(exc, source, fix)) from None
    bad = _first_non_finite(data["params"], "params")
    if bad:
        raise ConfigError(f"{source}: field {bad!r} is not a finite number{fix}")
    return predictor


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_numbers(values: Any, length: int | None, where: str, source: str, fix: str) -> None:
    if not isinstance(values, list) or (length is not None and len(values) != length) \
            or not all(_is_number(v) for v in values):
        size = f"{length} " if length is not None else ""
        raise ConfigError(f"{source}: field {where!r} must be a list of {size}finite numbers{fix}")


def _check_tree(tree: Any, n_features: int, where: str, source: str, fix: str) -> None:
    """One dumped scikit-learn tree: parallel lists ``left``/``right``/``feature``/``threshold``/``value``; a node
    is a leaf (left = right = -1) or splits on a feature index in [0, n_features) at a finite threshold into two
    children with larger indices (scikit-learn numbers children after their parent), so the walk from node 0
    always ends at a leaf: no index out of range, no cycle."""
    keys = ("left", "right", "feature", "threshold", "value")
    if not isinstance(tree, dict) or any(not isinstance(tree.get(k), list) for k in keys):
        raise ConfigError(f"{source}: field {where!r} must be an object with the lists {', '.join(keys)}{fix}")
    size = len(tree["left"])
    if size == 0 or any(len(tree[k]) != size for k in keys):
        raise ConfigError(f"{source}: field {where!r}: the lists {', '.join(keys)} must have one equal, non-zero "
                          f"length (one item per node){fix}")
    _check_numbers(tree["value"], size, f"{where}.value", source, fix)
    for node in range(size):
        left, right, feature = tree["left"][node], tree["right"][node], tree["feature"][node]
        if not (_is_int(left) and _is_int(right) and _is_int(feature)):
            raise ConfigError(f"{source}: field '{where}' node {node}: left, right and feature must be integers{fix}")
        if left == -1 and right == -1:
            continue
        if not (node < left < size and node < right < size):
            raise ConfigError(f"{source}: field '{where}' node {node}: children {left}, {right} must be -1 (a leaf) "
                              f"or node indices after {node} and below {size} (a tree has no cycles){fix}")
        if not 0 <= feature < n_features:
            raise ConfigError(f"{source}: field '{where}.feature.{node}' is {feature}: a feature index must be from "
                              f"0 to {n_features - 1}{fix}")
        if not _is_number(tree["threshold"][node]):
            raise ConfigError(f"{source}: field '{where}.threshold.{node}' must be a finite number{fix}")


def check_predictor_params(params: Any, model: str, n_features: int, n_shape_features: int, n_cost_terms: int,
                           source: str) -> None:
    """Check the fitted parameters of ``model`` (one of the families of :mod:`mobilekit.latency.regression`):
    the parts it uses are present and well formed — ``opcost.coef`` one finite coefficient per cost term, each
    tree of ``gbr``/``rf`` a finite tree over the right number of features (``opcost+gbr``'s trees read the shape
    features only), ``ridge``'s vectors one finite number per feature.

    Raises:
        ConfigError: one line naming ``source`` and the field.
    """
    fix = "; re-fit it with 'mobilekit latency fit'"
    parts = {"opcost": ("opcost",), "opcost+gbr": ("opcost", "gbr"), "gbr": ("gbr",), "rf": ("rf",),
             "ridge": ("ridge",)}.get(model)
    if parts is None:
        raise ConfigError(f"{source}: field 'model' is {model!r}, not one of opcost, opcost+gbr, gbr, rf, ridge{fix}")
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: field 'params' must be an object{fix}")
    for part in parts:
        if not isinstance(params.get(part), dict):
            raise ConfigError(f"{source}: field 'params.{part}' must be an object (model {model} uses it){fix}")
    if "opcost" in parts:
        _check_numbers(params["opcost"].get("coef"), n_cost_terms, "params.opcost.coef", source, fix)
    for part in ("gbr", "rf"):
        if part not in parts:
            continue
        ensemble = params[part]
        if ensemble.get("combine") not in ("sum", "mean"):
            raise ConfigError(f"{source}: field 'params.{part}.combine' must be 'sum' or 'mean'{fix}")
        for key in ("init", "learning_rate"):
            if not _is_number(ensemble.get(key)):
                raise ConfigError(f"{source}: field 'params.{part}.{key}' must be a finite number{fix}")
        trees = ensemble.get("trees")
        if not isinstance(trees, list) or not trees:
            raise ConfigError(f"{source}: field 'params.{part}.trees' must be a non-empty list of trees{fix}")
        width = n_shape_features if model == "opcost+gbr" else n_features
        for i, tree in enumerate(trees):
            _check_tree(tree, width, f"params.{part}.trees.{i}", source, fix)
    if "ridge" in parts:
        ridge = params["ridge"]
        for key in ("mean", "scale", "coef"):
            _check_numbers(ridge.get(key), n_features, f"params.ridge.{key}", source, fix)
        if any(v == 0 for v in ridge["scale"]):
            raise ConfigError(f"{source}: field 'params.ridge.scale' must not hold 0 (it divides){fix}")
        if not _is_number(ridge.get("intercept")):
            raise ConfigError(f"{source}: field 'params.ridge.intercept' must be a finite number{fix}")
