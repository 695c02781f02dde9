"""Tuned parameters: ``NAME:log|lin|int|cat:...`` specs decoded once into :class:`ParamSpec`, and the flat search
options (``--set KEY=VALUE``) that every trial shares.

Names are search option names (common options and any registered method's own, dashes allowed) or one of the
short names in :data:`ALIASES` (``lambda`` is the search's ``lambda_init``, the weight of log R in
CE + λ·log R).

    lambda:log:1e-3:1        float, sampled on a log scale in [1e-3, 1]
    lr:lin:1e-4:1e-2         float, uniform
    epochs:int:2:8           integer in [2, 8]
    relax:cat:sigmoid,ste    one of the listed values (numbers are read as numbers)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mobilekit.errors import ConfigError

ALIASES = {"lambda": "lambda_init"}
KINDS = ("log", "lin", "int", "cat")
UNTUNABLE = frozenset({"out", "resume"})  # each trial owns its run folder


def option_names() -> frozenset[str]:
    """Every flat search option name: the common options of :class:`~mobilekit.search.SearchConfig` and the
    ``Options`` fields of every registered method."""
    from mobilekit.search.config import common_fields
    from mobilekit.search.registry import METHODS

    names = {f.name for f in common_fields()}
    for method in METHODS.values():
        names.update(f.name for f in dataclasses.fields(method.options))
    return frozenset(names)


def option_name(name: str, where: str) -> str:
    """The search option a user-facing name stands for (aliases resolved, dashes to underscores).

    Raises:
        ConfigError: the name is not a search option, or names the run folder.
    """
    option = ALIASES.get(name, name).replace("-", "_")
    known = option_names()
    if option not in known:
        raise ConfigError(f"{where}: {name!r} is not a search option; use one of "
                          f"{', '.join(sorted(set(ALIASES) | known - UNTUNABLE))}")
    if option in UNTUNABLE:
        raise ConfigError(f"{where}: {name!r} cannot be set per trial; every trial gets its own run folder under --out")
    return option


def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.1"`` -> 0.1, ``"true"``/``"false"`` -> bool, ``"none"`` -> None, else the text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


@dataclass(frozen=True)
class ParamSpec:
    """One tuned search option. ``low``/``high`` bound log/lin/int kinds; ``choices`` lists cat values."""

    name: str                      # as the user wrote it (the name Optuna shows)
    option: str                    # the search option it sets
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        """The value of this parameter for an Optuna trial (``trial.suggest_*``)."""
        if self.kind == "cat":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log")

    def grid(self, points: int) -> list[Any]:
        """``points`` values spanning the range (geometric for log, every integer for int when they are fewer),
        or all choices: the axis of a grid search."""
        if self.kind == "cat":
            return list(self.choices)
        if self.kind == "int":
            values = np.unique(np.round(np.linspace(self.low, self.high, points)).astype(int))
            return [int(v) for v in values]
        space = np.geomspace if self.kind == "log" else np.linspace
        return [float(f"{v:.6g}") for v in space(self.low, self.high, points)]


def parse_param(text: str) -> ParamSpec:
    """Decode ``NAME:log|lin|int|cat:...`` (see the module docstring).

    Raises:
        ConfigError: unknown option or kind, unreadable or empty range, non-positive log bound.
    """
    where = f"--param {text}"
    parts = text.split(":")
    if len(parts) < 3 or parts[1] not in KINDS:
        raise ConfigError(f"{where}: write NAME:KIND:..., KIND one of {', '.join(KINDS)} "
                          "(e.g. lambda:log:1e-3:1, epochs:int:2:8, relax:cat:sigmoid,ste)")
    name, kind = parts[0], parts[1]
    option = option_name(name, where)
    if kind == "cat":
        choices = tuple(parse_value(v) for v in ":".join(parts[2:]).split(",") if v.strip())
        if not choices:
            raise ConfigError(f"{where}: list at least one value after cat:, comma-separated")
        return ParamSpec(name, option, kind, choices=choices)
    if len(parts) != 4:
        raise ConfigError(f"{where}: write {name}:{kind}:LOW:HIGH")
    try:
        low, high = float(parts[2]), float(parts[3])
    except ValueError:
        raise ConfigError(f"{where}: LOW and HIGH must be numbers, got {parts[2]!r} and {parts[3]!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"{where}: LOW and HIGH must be finite numbers, got {parts[2]!r} and {parts[3]!r}")
    if not low < high:
        raise ConfigError(f"{where}: LOW must be below HIGH, got {low:g} and {high:g}")
    if kind == "log" and low <= 0:
        raise ConfigError(f"{where}: a log range needs LOW > 0 (e.g. {name}:log:1e-3:{high:g})")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise ConfigError(f"{where}: int bounds must be whole numbers")
    return ParamSpec(name, option, kind, low, high)


def parse_set(text: str) -> tuple[str, Any]:
    """Decode ``KEY=VALUE`` (a search option for every trial) into (option name, value).

    Raises:
        ConfigError: no ``=``, or the key is not a search option.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text}: write KEY=VALUE with a search option as KEY (e.g. epochs=2)")
    option = option_name(key.strip(), f"--set {text}")
    if option == "export":
        return option, value.strip()            # a format list: the search's own parser reads it
    return option, parse_value(value)
