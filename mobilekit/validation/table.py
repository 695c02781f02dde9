"""The latency table format (see :mod:`mobilekit.latency_table`), as typed, range-checked fields.

Checked here, once, for every table any command reads: ``format`` and ``units``; ``space`` (a string ``name``,
a finite ``width`` > 0, integer ``resolution`` and ``num_classes`` >= 1); ``entries`` an object of objects and
``fixed`` an object; every ENTRY's ``median_ms`` a finite number >= 0 or null, and > 0 except for ``skip`` (the
identity); ``std_ms``/``min_ms``/``max_ms`` finite and >= 0; ``runs`` an integer >= 0. JSON's ``NaN`` and
``Infinity`` (which Python's reader accepts) are refused.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mobilekit.errors import TableError
from mobilekit.validation._messages import first_error

TABLE_FORMAT = "mobilekit-latency-table/1"

NonNegativeMs = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]


class TableEntry(BaseModel):
    """One ENTRY: a latency in ms (null: not measured) and how it was obtained."""

    model_config = ConfigDict(extra="allow")

    median_ms: NonNegativeMs | None
    std_ms: NonNegativeMs | None = None
    min_ms: NonNegativeMs | None = None
    max_ms: NonNegativeMs | None = None
    runs: Annotated[int, Field(strict=True, ge=0)] | None = None
    measured: Annotated[bool, Field(strict=True)] | None = None
    covers: list[Annotated[str, Field(strict=True)] | Annotated[int, Field(strict=True, ge=0)]] | None = None
    note: Annotated[str, Field(strict=True)] | None = None


class TableSpace(BaseModel):
    """The search space the table was measured for."""

    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(strict=True, min_length=1)]
    width: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)] = 1.0
    resolution: Annotated[int, Field(strict=True, ge=1)] = 224
    num_classes: Annotated[int, Field(strict=True, ge=1)] = 1000


class TableDevice(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(strict=True)] | None = None
    runtime: Annotated[str, Field(strict=True)] | None = None


class TableFile(BaseModel):
    """A whole latency table file."""

    model_config = ConfigDict(extra="allow")

    format: Literal["mobilekit-latency-table/1"]
    units: Literal["ms"] = "ms"
    source: Annotated[str, Field(strict=True)] = ""
    device: TableDevice | None = None
    space: TableSpace
    settings: dict[str, Any] | None = None
    fixed: dict[str, TableEntry] | None = None
    entries: dict[str, dict[str, TableEntry]] | None = None


def validate_table_data(data: Any, source: str) -> TableFile:
    """Check a parsed table (the JSON object) and return it typed.

    Raises:
        TableError: one line naming ``source``, the field (``entries.3.ir_k3_e6.median_ms``) and what it must be.
    """
    if not isinstance(data, dict):
        raise TableError(f"{source}: expected a JSON object (a mobilekit latency table), got {type(data).__name__}")
    fix = "; fix the field or re-run 'mobilekit profile' to rebuild the table"
    try:
        table = TableFile.model_validate(data)
    except ValidationError as exc:
        raise TableError(first_error(exc, source, fix)) from None
    for key, types in (table.entries or {}).items():
        for name, entry in types.items():
            if entry.median_ms == 0 and name != "skip":
                raise TableError(f"{source}: field 'entries.{key}.{name}.median_ms' is 0: only skip (the identity) "
                                 f"takes no time{fix}")
    for name, entry in (table.fixed or {}).items():
        if entry.median_ms == 0:
            raise TableError(f"{source}: field 'fixed.{name}.median_ms' is 0: a fixed part takes time{fix}")
    return table
