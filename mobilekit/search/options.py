"""Typed, range-checked option dataclasses: the one description of a setting from which the recipe keys, the
command-line flags (:mod:`mobilekit.cli.search`) and the validation all derive.

A field is declared with :func:`option`: its default, a help line, an optional range (``ge``/``gt``/``le``/``lt``)
and choices. :func:`check_options` validates a whole dataclass instance (types from its annotations, then ranges
and choices) and raises one :class:`~mobilekit.errors.ConfigError` line naming where the value came from (recipe
file or flag), the field and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from typing import Any, Mapping

from mobilekit.errors import ConfigError

_MISSING = dataclasses.MISSING


def option(default: Any = None, help: str = "", *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, choices: tuple | Mapping | None = None,
           flags: tuple[str, ...] = (), resume_free: bool = False, required: bool = False) -> Any:
    """A dataclass field with its help line, range, choices, extra command-line ``flags`` (the default flag is
    ``--field-name``), ``resume_free`` (may change between a run and its ``--resume``) and ``required``.
    ``choices`` may map command-line words to values (e.g. ``{"auto": None, "on": True, "off": False}``)."""
    metadata = dict(help=help, ge=ge, gt=gt, le=le, lt=lt, choices=choices, flags=flags, resume_free=resume_free,
                    required=required)
    return field(default=default, metadata=metadata)


def option_fields(cls: type) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls))


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_types(annotation: Any) -> tuple[tuple[type, ...], bool]:
    """(accepted Python types, None allowed) of an annotation such as ``int | None`` or ``tuple[str, ...]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        accepted: tuple[type, ...] = ()
        for arg in args:
            if arg is not type(None):
                accepted += _base_types(arg)[0]
        return accepted, type(None) in args
    if origin is not None:
        return (origin,), False
    return (annotation,), False


def _type_word(kinds: tuple[type, ...]) -> str:
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false", tuple: "a list"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def _where(name: str, origins: Mapping[str, str], default_source: str) -> str:
    return origins.get(name, default_source)


def coerce(cls: type, name: str, value: Any, where: str) -> Any:
    """``value`` checked against the annotation of field ``name`` (ints become floats where a float is wanted;
    a comma-separated string becomes a tuple where a tuple is wanted). Raises :class:`ConfigError`."""
    annotation = field_types(cls)[name]
    kinds, nullable = _base_types(annotation)
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{where}: {name} needs a value ({_type_word(kinds)})")
    if tuple in kinds:
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{where}: {name} must be a list of strings or a comma-separated string, got {value!r}")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"{where}: {name} must be {_type_word(kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        example = {int: "8", float: "0.5", str: '"text"', bool: "true"}.get(kinds[0], "...")
        raise ConfigError(f"{where}: {name} must be {_type_word(kinds)}, got {value!r} ({type(value).__name__}); "
                          f"write e.g. {name} = {example}")
    return value


def check_options(options: Any, origins: Mapping[str, str] | None = None, default_source: str = "settings",
                  only: list[dataclasses.Field] | None = None) -> None:
    """Validate the fields (``only`` these, default all) of a dataclass instance: type (converting in place where
    harmless), range, choices.

    ``origins`` maps a field name to where its value came from (``recipe.toml`` or ``--flag``), for the message.
    """
    origins = origins or {}
    cls = type(options)
    for f in option_fields(cls) if only is None else only:
        where = _where(f.name, origins, default_source)
        value = coerce(cls, f.name, getattr(options, f.name), where)
        object.__setattr__(options, f.name, value)
        meta = f.metadata
        if value is None:
            continue
        choices = meta.get("choices")
        if choices is not None:
            allowed = tuple(choices.values()) if isinstance(choices, Mapping) else tuple(choices)
            if value not in allowed:
                words = tuple(choices) if isinstance(choices, Mapping) else allowed
                raise ConfigError(f"{where}: {f.name} {value!r} is not allowed; use one of "
                                  f"{', '.join(str(w) for w in words)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: {f.name} must be a finite number, got {value}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for key, test, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                                    ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
                bound = meta.get(key)
                if bound is not None and not test(value, bound):
                    raise ConfigError(f"{where}: {f.name} must be {word} {bound:g}, got {value:g}")


def options_dict(options: Any, only: list[dataclasses.Field] | None = None) -> dict[str, Any]:
    """A JSON-able flat dict of the fields (``only`` these, default all; tuples become lists)."""
    return {f.name: (list(v) if isinstance(v := getattr(options, f.name), tuple) else v)
            for f in (option_fields(type(options)) if only is None else only)}
