"""Method variants, for ablations: a name, a registered method and option overrides, compared as a method of its
own (its own row, colour and cells) under the budget rule of its method.

Syntax (``--variant``, repeatable; the name then goes into ``--methods`` like a method's)::

    NAME=METHOD[:KEY=VALUE]...        e.g.  spos-small=spos:population=8:generations=2
                                            autohas-rf=autohas:estimator=reinforce:tau=5

``NAME``: letters, digits and ``_ . + -`` (no ``,`` ``:`` ``=``, so ``--methods`` stays a plain comma-separated list),
not the name of a registered method. ``KEY``: an option of ``METHOD`` (``mobilekit search --help`` lists them per
method) or a common search option (e.g. ``lr``, ``optimizer``, ``final_init``); dashes work as underscores.
``VALUE`` is read as the option's type: numbers, ``on``/``off`` (or ``true``/``false``) for switches, the option's
words for choices, comma-separated lists for lists (``multipliers=0.5,1,2``). The values are then checked by the
same checker as ``mobilekit search``'s flags when the comparison starts. Settings the comparison owns (the budget's
epochs and its method's budget keys, data, seed, batch size, ...) cannot be overridden.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from mobilekit.errors import ConfigError

# settings every method of a comparison shares: a variant may not change them (the budget rule's own keys are
# refused too, see :meth:`mobilekit.compare.settings.CompareSettings.validate`)
COMPARISON_KEYS = frozenset({"table", "target_ms", "out", "method", "data", "seed", "resume", "train_subset", "epochs",
                             "final_epochs", "threads", "batch_size", "steps_per_epoch", "train_resolution"})
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_TRUE, _FALSE = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


@dataclass(frozen=True)
class Variant:
    """``name`` compared as ``method`` with ``options`` (option name -> typed value) on top of the comparison's
    settings."""

    name: str
    method: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Variant":
        """A variant from ``NAME=METHOD[:KEY=VALUE]...``; :class:`ConfigError` (one line naming ``--variant``)."""
        where = f"--variant {text!r}"
        name, eq, rest = str(text).partition("=")
        name = name.strip()
        if not eq or not rest.strip():
            raise ConfigError(f"{where}: write NAME=METHOD[:KEY=VALUE]..., e.g. spos-small=spos:population=8")
        method, *pairs = [part.strip() for part in rest.split(":")]
        options: dict[str, str] = {}
        for pair in pairs:
            key, eq, value = pair.partition("=")
            key = key.strip().replace("-", "_")
            if not eq or not key or not value.strip():
                raise ConfigError(f"{where}: {pair!r} is not KEY=VALUE; write e.g. {name or 'NAME'}={method}:"
                                  "KEY=VALUE:KEY=VALUE")
            if key in options:
                raise ConfigError(f"{where}: {key} is given twice; keep one")
            options[key] = value.strip()
        return cls.from_text_options(name, method, options, where)

    @classmethod
    def from_text_options(cls, name: str, method: str, options: Mapping[str, str], where: str) -> "Variant":
        """A variant from option texts (``KEY``: ``VALUE`` as written on the command line), typed and checked."""
        check_name(name, where)
        typed: dict[str, Any] = {}
        for key, text in options.items():
            option, value = typed_value(method, key, text, where)
            if option in typed:
                raise ConfigError(f"{where}: {option} is given twice; keep one")
            typed[option] = value
        return cls(name, method, typed).checked(where)

    def checked(self, where: str) -> "Variant":
        """This variant after the checks of ``mobilekit search``'s own settings (types, ranges, choices), with its
        values as the checker normalised them; :class:`ConfigError` naming ``where`` and the option otherwise."""
        from mobilekit.search.config import build_config

        check_name(self.name, where)
        clash = sorted(set(self.options) & COMPARISON_KEYS)
        if clash:
            raise ConfigError(f"{where}: {', '.join(clash)} {'is' if len(clash) == 1 else 'are'} set by the comparison "
                              "itself (the same for every method); drop it from the variant")
        method_fields(self.method, where)
        config = build_config(None, {"table": "-", "target_ms": 1.0, "out": "-", "method": self.method,
                                     **self.options}, {key: where for key in self.options})
        values = {**config.to_dict()}
        return Variant(self.name, self.method, {k: tuple(values[k]) if isinstance(values[k], list) else values[k]
                                                for k in self.options})

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any], where: str = "variants") -> "Variant":
        """A variant from its stored form ``{"method": METHOD, "options": {KEY: value}}`` (values already typed)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("method"), str):
            raise ConfigError(f"{where}: variant {name!r} must be {{\"method\": METHOD, \"options\": {{...}}}}")
        options = data.get("options") or {}
        if not isinstance(options, Mapping):
            raise ConfigError(f"{where}: variant {name!r}: options must be a table of KEY = value")
        return cls(name, data["method"], dict(options)).checked(f"{where}: variant {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able ``{"method": ..., "options": {...}}`` (lists for tuples), as stored in compare.json."""
        return {"method": self.method,
                "options": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(self.options.items())}}

    def describe(self) -> str:
        """The variant in ``--variant`` syntax (options sorted)."""
        def text(value: Any) -> str:
            if isinstance(value, bool):
                return "on" if value else "off"
            return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

        return ":".join([f"{self.name}={self.method}", *(f"{k}={text(v)}" for k, v in sorted(self.options.items()))])


def check_name(name: str, where: str) -> None:
    from mobilekit.compare.settings import PROTOCOL
    from mobilekit.search.registry import METHODS

    if not NAME_PATTERN.fullmatch(name or ""):
        raise ConfigError(f"{where}: variant name {name!r} must be letters, digits and _ . + - (no , : =), e.g. "
                          "spos-small")
    if name in METHODS or name == PROTOCOL:
        owner = "a method" if name in METHODS else "the protocol row"
        raise ConfigError(f"{where}: variant name {name!r} is taken by {owner}; choose another, e.g. {name}-v2")


def method_fields(method: str, where: str) -> dict[str, Any]:
    """{option name: dataclass field} of ``method``'s own options and the common search options."""
    from mobilekit.search.config import common_fields
    from mobilekit.search.registry import METHODS, get_method

    if method not in METHODS:
        raise ConfigError(f"{where}: method {method!r} is unknown; use one of {', '.join(METHODS)}")
    found = {f.name: f for f in common_fields()}
    found.update({f.name: f for f in fields(get_method(method).options)})
    return found


def typed_value(method: str, key: str, text: str, where: str) -> tuple[str, Any]:
    """(option name, value): ``text`` read as option ``key`` of ``method`` (see the module doc; ``key`` may be the
    option's name or its ``mobilekit search`` flag without dashes); :class:`ConfigError` otherwise."""
    import typing

    from mobilekit.search.config import SearchConfig
    from mobilekit.search.options import _base_types
    from mobilekit.search.registry import get_method

    known = method_fields(method, where)
    aliases = {flag[2:].replace("-", "_"): name for name, f in known.items() for flag in f.metadata.get("flags", ())}
    key = key if key in known else aliases.get(key, key)       # the search's flag spelling (se, lambda) works too
    if key not in known:
        own = ", ".join(f.name for f in fields(get_method(method).options)) or "none"
        raise ConfigError(f"{where}: {method} has no option {key!r}; its own options: {own} (or a common search "
                          "option, see mobilekit search --help)")
    f = known[key]
    owner = SearchConfig if key in {g.name for g in fields(SearchConfig)} else get_method(method).options
    kinds, _ = _base_types(typing.get_type_hints(owner)[key])
    choices = f.metadata.get("choices")
    if isinstance(choices, Mapping):
        if text not in choices:
            raise ConfigError(f"{where}: {key} {text!r} is not allowed; use one of {', '.join(map(str, choices))}")
        return key, choices[text]
    if bool in kinds:
        if text.lower() in _TRUE + _FALSE:
            return key, text.lower() in _TRUE
        raise ConfigError(f"{where}: {key} must be on or off, got {text!r}")
    if tuple in kinds:
        return key, tuple(v.strip() for v in text.split(",") if v.strip())
    for kind in (int, float):
        if kind in kinds:
            try:
                return key, kind(text)
            except ValueError:
                if kind is int and float in kinds:
                    continue
                word = "an integer" if kind is int else "a number"
                raise ConfigError(f"{where}: {key} must be {word}, got {text!r}") from None
    return key, text


def parse_variants(value: Any, where: str = "--variant") -> dict[str, Variant]:
    """Variants from a list of ``NAME=METHOD:KEY=VALUE`` strings, a mapping of stored forms, or Variant objects;
    names must be unique."""
    if value is None:
        return {}
    items = value.items() if isinstance(value, Mapping) else [(None, v) for v in value]
    out: dict[str, Variant] = {}
    for name, item in items:
        if isinstance(item, Variant):
            variant = item.checked(f"variant {item.name!r}")
        elif isinstance(item, str):
            variant = Variant.parse(item)
        else:
            variant = Variant.from_dict(str(name), item, where)
        if variant.name in out:
            raise ConfigError(f"{where}: variant {variant.name!r} is defined twice; keep one definition")
        out[variant.name] = variant
    return out
