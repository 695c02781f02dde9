"""One line out of a pydantic ValidationError: ``SOURCE: field 'a.b' must be <rule>, got <value>; <fix>``."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


def _rule(error: dict[str, Any]) -> str:
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    if kind == "greater_than_equal":
        return "a non-negative number" if ctx.get("ge") == 0 else f"a number >= {ctx.get('ge')}"
    if kind == "greater_than":
        return "a positive number" if ctx.get("gt") == 0 else f"a number > {ctx.get('gt')}"
    if kind == "less_than_equal":
        return f"a number <= {ctx.get('le')}"
    if kind == "less_than":
        return f"a number < {ctx.get('lt')}"
    if kind == "finite_number":
        return "a finite number (not NaN or infinity)"
    if kind in ("float_type", "float_parsing"):
        return "a number"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "an integer"
    if kind in ("bool_type", "bool_parsing"):
        return "true or false"
    if kind == "string_type":
        return "a string"
    if kind == "string_too_short":
        return "a non-empty string"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "an object"
    if kind == "list_type":
        return "a list"
    if kind == "literal_error":
        return f"one of {ctx.get('expected')}"
    if kind == "missing":
        return "present (it is missing)"
    text = error.get("msg", "valid").replace("\n", " ")
    return "valid (" + text[0].lower() + text[1:] + ")"


def first_error(exc: ValidationError, source: str, fix: str = "") -> str:
    """The first error of ``exc`` as one line naming ``source``, the field path and the rule it breaks."""
    errors = exc.errors(include_url=False)
    error = errors[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    got = error.get("input")
    got_text = repr(got) if not isinstance(got, (dict, list)) else f"a {'list' if isinstance(got, list) else 'object'}"
    if len(got_text) > 60:
        got_text = got_text[:57] + "..."
    got_part = "" if error.get("type") == "missing" else f", got {got_text}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    field = f"field {where!r}" if where else "the file"
    return f"{source}: {field} must be {_rule(error)}{got_part}{more}{fix}"
