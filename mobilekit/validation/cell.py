"""A finished ``compare`` cell (``cells/METHOD-sSEED.json``, see :mod:`mobilekit.compare.run`), as typed,
range-checked fields, checked whenever a rerun or a report reads one back.

Required: ``method`` (a non-empty string), ``seed`` (an integer >= 0), ``arch`` (a non-empty block string) and
``predicted_ms`` (finite, >= 0, ms). Optional, typed when present: ``kind`` (search, protocol, depth-matched,
reference), latencies and durations (finite, >= 0; ms or s as named), accuracies (fractions in [0, 1]), counts
(integers >= 0), flags (true/false). Other keys pass through (rows grow with new methods). NaN and infinity are
refused everywhere.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from mobilekit.errors import ConfigError
from mobilekit.validation._fields import Count, Flag, Fraction, Name, NonNegative, Positive
from mobilekit.validation._messages import first_error



class CompareCell(BaseModel):
    """One row of a comparison: a searched, protocol, depth-matched or reference network and its scores."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["search", "protocol", "depth-matched", "reference"] | None = None
    method: Name
    seed: Count
    arch: Name
    predicted_ms: NonNegative
    derived_ms: NonNegative | None = None
    within_window: Flag | None = None
    within_window_without_repair: Flag | None = None
    repairs: Count | None = None
    skipped_layers: Count | None = None
    sample: Count | None = None
    test_accuracy: Fraction | None = None
    val_accuracy: Fraction | None = None
    retrain_test_accuracy: Fraction | None = None
    retrain_val_accuracy: Fraction | None = None
    retrain_s: NonNegative | None = None
    search_s: NonNegative | None = None
    final_train_s: NonNegative | None = None
    total_s: NonNegative | None = None
    cell_wall_s: NonNegative | None = None
    search_epochs_nominal: NonNegative | None = None
    final_epochs: NonNegative | None = None
    images_epochs: NonNegative | None = None
    forward_only_images: NonNegative | None = None
    forward_only_epochs: NonNegative | None = None
    searched_lr: Positive | None = None
    searched_weight_decay: NonNegative | None = None


def validate_cell_data(data: Any, source: str) -> CompareCell:
    """Check a parsed cell file and return it typed.

    Raises:
        ConfigError: one line naming ``source``, the field and the rule, and the fix (remove the damaged cell so
            the rerun computes it again).
    """
    fix = "; the cell is damaged: move it out of cells/ and rerun 'mobilekit compare' to compute it again"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object (a finished compare cell), got "
                          f"{type(data).__name__}{fix}")
    try:
        return CompareCell.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(first_error(exc, source, fix)) from None
