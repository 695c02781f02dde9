"""Numeric fields of a device descriptor (see :mod:`mobilekit.profile.devices`), range-checked and finite.

TOML allows ``nan`` and ``inf``; a ``cooldown_s = nan`` or ``timeout_s = inf`` would pass a plain ``< 0``
check and break the runner later, so every time and temperature here must be a finite number.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mobilekit.errors import ConfigError
from mobilekit.validation._messages import first_error


def _seconds(low: float, strict_low: bool = False, high: float = 7 * 24 * 3600):
    bound = {"gt": low} if strict_low else {"ge": low}
    return Annotated[float, Field(strict=True, le=high, allow_inf_nan=False, **bound)]


class DeviceNumbers(BaseModel):
    """The numeric fields of a descriptor; others are checked by :func:`~mobilekit.profile.devices.parse_device`."""

    model_config = ConfigDict(extra="ignore")

    threads: Annotated[int, Field(strict=True, ge=1, le=1024)] = 1
    runs: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = 50
    warmup: Annotated[int, Field(strict=True, ge=0, le=1_000_000)] = 5
    cooldown_s: _seconds(0) = 0.0
    thermal_max_c: Annotated[float, Field(strict=True, gt=-100, lt=200, allow_inf_nan=False)] = 45.0
    thermal_timeout_s: _seconds(0) = 300.0
    thermal_poll_s: _seconds(0, strict_low=True) = 2.0
    timeout_s: _seconds(0, strict_low=True) = 600.0


def check_device_numbers(data: dict[str, Any], source: str) -> None:
    """Raise :class:`ConfigError` (one line: file, field, allowed range) if a numeric field is wrong."""
    try:
        DeviceNumbers.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(first_error(exc, source, "; see devices/host.toml for the format")) from None
