"""The latency table format (see :mod:`mobilekit.latency_table`), as typed, range-checked fields.

Checked here, once, for every table any command reads: ``format`` and ``units``; ``space`` (a string ``name``,
a finite ``width`` > 0, integer ``resolution`` and ``num_classes`` >= 1); ``entries`` an object of objects and
``fixed`` an object; every ENTRY's ``median_ms`` a finite number >= 0 or null, and > 0 except for ``skip`` (the
identity); ``std_ms``/``min_ms``/``max_ms`` finite and >= 0; ``runs`` an integer >= 0. JSON's ``NaN`` and
``Infinity`` (which Python's reader accepts) are refused.

Against the space the table names (:func:`check_table_space`): the space must exist with those numbers, every
``entries`` key must be a layer position of it, every type name must be in the notation and a candidate at that
position (``skip`` where the position allows it), every integer in a fixed entry's ``covers`` a position, and
no latency may exceed :data:`MAX_LAYER_MS` (one layer taking longer than a minute is a unit or parsing mistake,
not a measurement).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mobilekit.errors import MobilekitError, TableError
from mobilekit.validation._messages import first_error

TABLE_FORMAT = "mobilekit-latency-table/1"

#: The largest latency (ms) one ENTRY may hold: one minute. The slowest real layer of the supported spaces on
#: the slowest supported phone takes tens of ms; a value this large comes from a unit mistake (us or ns read as ms).
MAX_LAYER_MS = 60_000.0

NonNegativeMs = Annotated[float, Field(strict=True, ge=0, le=MAX_LAYER_MS, allow_inf_nan=False)]


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
    check_table_space(table, source, fix)
    return table


def check_table_space(table: TableFile, source: str, fix: str) -> None:
    """Check the table's positions and type names against the search space it names.

    Raises:
        TableError: one line naming ``source`` and the field (``entries.3.ir_k9_e6``) that the space does not have.
    """
    from mobilekit.space import get_space, parse_layer_type  # the space package imports nothing from here

    info = table.space
    try:
        space = get_space(info.name, width=info.width, resolution=info.resolution, num_classes=info.num_classes)
    except MobilekitError as exc:
        raise TableError(f"{source}: field 'space' does not describe a search space ({exc}){fix}") from None
    positions = {p.index: p for p in space.positions}
    for key, types in (table.entries or {}).items():
        try:
            index = int(key)
        except ValueError:
            index = -1
        if index not in positions or str(index) != key:
            raise TableError(f"{source}: entries key {key!r} is not a layer position of {space.name} (positions "
                             f"0 to {len(positions) - 1}){fix}")
        allowed = {t.name for t in positions[index].candidates}
        for name in types:
            try:
                layer_type = parse_layer_type(name)
            except MobilekitError as exc:
                raise TableError(f"{source}: field 'entries.{key}.{name}' is not a layer type ({exc}){fix}") from None
            if layer_type.name != name:
                raise TableError(f"{source}: field 'entries.{key}.{name}' must be written {layer_type.name!r} (the "
                                 f"one spelling lookups use){fix}")
            if layer_type.name not in allowed:
                raise TableError(f"{source}: field 'entries.{key}.{name}': {layer_type.name} is not a candidate at "
                                 f"position {index} of {space.name} (allowed: {', '.join(sorted(allowed))}){fix}")
    for name, entry in (table.fixed or {}).items():
        for cover in entry.covers or []:
            if isinstance(cover, int) and cover not in positions:
                raise TableError(f"{source}: field 'fixed.{name}.covers' names position {cover}, which "
                                 f"{space.name} does not have (0 to {len(positions) - 1}){fix}")
