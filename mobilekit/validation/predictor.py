"""The latency predictor file (``mobilekit latency fit --out``), as typed, range-checked fields: the format, the
feature lists, the fitted parameters (every number in them finite), ``n_train`` >= 0, ``skip_ms`` >= 0 and the
network correction (``scale`` > 0, finite ``overhead_ms``, ``n_networks`` >= 0)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mobilekit.errors import ConfigError
from mobilekit.validation._messages import first_error

Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]


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
