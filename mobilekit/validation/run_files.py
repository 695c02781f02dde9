"""The two files of a search's run folder that other commands read back: ``bundle.json`` (read by ``export --run``
and by ``export --weights`` when it lies beside the weights) and ``summary.json`` (read by ``search --resume`` on
a finished run, and through it by ``compare``). Checked completely at load, as typed, range-checked fields, so a
damaged file is one line naming the file, the field and the fix, before anything is written.

``bundle.json`` (written by :func:`mobilekit.search.run.run_bundle`): ``mean`` and ``std`` (3 finite values per
RGB channel on the [0, 1] scale, std > 0) are required; typed when present (a search writes them all; a bundle
made by hand may hold only what it needs): ``class_names`` (strings, one per class: as many as ``num_classes``),
``num_classes`` (>= 1), ``train_resolution`` and ``deploy_resolution`` (pixels, 16..2048), ``data`` (the data set
name), ``seed`` (0..2**32-1), ``arch`` / ``weights`` (file names), ``architecture`` (an object), ``preprocessing``,
``table`` and ``table_device`` (strings). Unknown keys are refused: a bundle holds only what the deliverable
needs; ``null`` counts as absent.

``summary.json``: the fields ``search`` prints and ``compare`` reads are typed and range-checked (latencies in ms
finite and >= 0, accuracies in [0, 1], durations in s finite and >= 0, counts integers >= 0, the searched
learning rates finite and > 0), and ``accuracy_file`` must name an entry of ``exported_accuracy``. Other keys pass:
each search method adds its own results (its history, candidates, hyper-parameters) next to the common ones.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mobilekit.errors import ConfigError, SearchError
from mobilekit.jsonio import read_json
from mobilekit.validation._fields import (ClassCount, Count, Finite, Flag, Fraction, Name, NonNegative, Positive,
                                           Resolution, Seed, Text)
from mobilekit.validation._messages import first_error

Channel = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
Spread = Annotated[float, Field(strict=True, gt=0, le=1, allow_inf_nan=False)]


class RunBundle(BaseModel):
    """``bundle.json``: what ``export --run`` needs besides ``arch.json`` and ``weights.pt``."""

    model_config = ConfigDict(extra="forbid")

    mean: Annotated[list[Channel], Field(min_length=3, max_length=3)]
    std: Annotated[list[Spread], Field(min_length=3, max_length=3)]
    class_names: list[Text] | None = None
    num_classes: ClassCount | None = None
    train_resolution: Resolution | None = None
    deploy_resolution: Resolution | None = None
    data: Name | None = None
    seed: Seed | None = None
    arch: Name | None = None
    weights: Name | None = None
    architecture: dict[str, Any] | None = None
    preprocessing: Text | None = None
    table: Text | None = None
    table_device: Text | None = None

    @model_validator(mode="after")
    def _names_per_class(self) -> "RunBundle":
        names, count = self.class_names, self.num_classes
        if names is not None and count is not None and len(names) != count:
            raise ValueError(f"class_names lists {len(names)} names for num_classes {count}; one name per class")
        return self


class Hyperparameters(BaseModel):
    """The final training's hyper-parameters as a summary records them (the searched ones, for some methods)."""

    model_config = ConfigDict(extra="allow")

    lr: Positive
    weight_decay: NonNegative
    lr_stages: list[Positive] | None = None
    source: Text | None = None


class FileScore(BaseModel):
    """One exported file's accuracy on the run's test split."""

    model_config = ConfigDict(extra="allow")

    file: Name
    accuracy: Fraction | None = None
    images: Count
    resolution: Resolution
    agreement: Fraction | None = None
    agreement_with: Text | None = None


class HeadCorrection(BaseModel):
    """How the classifier's latency was re-priced for the run's number of classes."""

    model_config = ConfigDict(extra="allow")

    num_classes: ClassCount
    delta_ms: Finite | None = None


class RunSummary(BaseModel):
    """``summary.json`` of a finished search (the common fields; each method adds its own)."""

    model_config = ConfigDict(extra="allow")

    method: Name
    arch: Name
    target_ms: Positive
    predicted_ms: NonNegative
    val_accuracy: Fraction
    test_accuracy: Fraction
    search_s: NonNegative
    train_resolution: Resolution
    resolution_note: Text
    within_window: Flag
    predicted_ms_table: NonNegative | None = None
    derived_ms: NonNegative | None = None
    measured_ms: Positive | None = None
    measured_on: Text | None = None
    measure_note: Text | None = None
    final_train_s: NonNegative | None = None
    deploy_resolution: Resolution | None = None
    num_classes: ClassCount | None = None
    seed: Seed | None = None
    rank: Count | None = None
    repairs: list[Any] | None = None
    head_correction: HeadCorrection | None = None
    accuracy: Fraction | None = None
    accuracy_file: Text | None = None
    accuracy_is_proxy: Flag | None = None
    exported_accuracy: dict[str, FileScore] | None = None
    final_hyperparameters: Hyperparameters | None = None
    searched_hyperparameters: Hyperparameters | None = None
    candidates_scored: Count | None = None
    latency_warning: Text | None = None
    resolution_warning: Text | None = None
    export_error: Text | None = None

    @model_validator(mode="after")
    def _scored_file_exists(self) -> "RunSummary":
        if self.accuracy is not None and (self.accuracy_file is None
                                          or self.accuracy_file not in (self.exported_accuracy or {})):
            raise ValueError(f"accuracy_file {self.accuracy_file!r} names no entry of exported_accuracy")
        return self


def _non_finite(value: Any, path: tuple = ()) -> tuple | None:
    """The path of the first NaN or infinite number in ``value`` (nested lists and objects), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, (*path, key))
        if found is not None:
            return found
    return None


def _validated(model: type[BaseModel], data: Any, source: str, error: type[ConfigError] | type[SearchError],
               fix: str, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise error(f"{source}: expected a JSON object ({what}), got {type(data).__name__}{fix}")
    # NaN and infinity anywhere in a checked field (nested ones too: repairs, architecture, head_correction)
    checked = data if model.model_config.get("extra") == "forbid" else {k: data[k] for k in model.model_fields
                                                                          if k in data}
    where = _non_finite(checked)
    if where is not None:
        field = ".".join(map(str, where))
        raise error(f"{source}: field {field!r} must be a finite number (not NaN or infinity), got "
                    f"{_get(data, where)!r}{fix}")
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise error(first_error(exc, source, fix)) from None
    return data


def _get(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


BUNDLE_FIX = "; re-run the search, or pass --arch, --weights and --data instead of the bundle"
SUMMARY_FIX = "; the run folder is damaged: use another --out for a new run"


def load_bundle(path: str | Path) -> dict[str, Any]:
    """``bundle.json`` at ``path``, validated (see the module docstring); the parsed object.

    Raises:
        ConfigError: one line naming the file, the field and the fix.
    """
    data = read_json(path, ConfigError, "no such file" + BUNDLE_FIX, BUNDLE_FIX)
    return _validated(RunBundle, data, str(path), ConfigError, BUNDLE_FIX, "a run bundle")


def load_summary(path: str | Path) -> dict[str, Any]:
    """``summary.json`` at ``path``, validated (see the module docstring); the parsed object.

    Raises:
        SearchError: one line naming the file, the field and the fix.
    """
    data = read_json(path, SearchError, "missing from the run folder" + SUMMARY_FIX, SUMMARY_FIX)
    return _validated(RunSummary, data, str(path), SearchError, SUMMARY_FIX, "a search summary")
