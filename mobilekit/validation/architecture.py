"""The architecture file (``{"space": {...}, "layers": ["ir_k3_e6", ...]}``), as typed, range-checked fields:
``layers`` a list of block strings; ``space`` a space name or an object with a string ``name``, a finite
``width`` > 0 and integer ``resolution``/``num_classes`` >= 1. Whether the blocks fit the space is checked by
:func:`mobilekit.space.architecture.validate_choices`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mobilekit.errors import ArchitectureError
from mobilekit.validation._messages import first_error


class ArchitectureSpace(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(strict=True, min_length=1)] = "spnas-mnasnet"
    width: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    resolution: Annotated[int, Field(ge=1)] = 224
    num_classes: Annotated[int, Field(ge=1)] = 1000


class ArchitectureFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    layers: list[Annotated[str, Field(strict=True)]]
    space: Annotated[str, Field(strict=True)] | ArchitectureSpace = ArchitectureSpace()


def validate_architecture_data(data: Any, source: str) -> ArchitectureSpace:
    """Check a parsed architecture file; return its space fields. Raises :class:`ArchitectureError`."""
    if not isinstance(data, dict):
        raise ArchitectureError(f"{source}: expected a JSON object with a 'layers' list of block strings, got "
                                f"{type(data).__name__}")
    try:
        parsed = ArchitectureFile.model_validate(data)
    except ValidationError as exc:
        raise ArchitectureError(first_error(exc, source, "; see 'mobilekit export --help' for the format")) from None
    return ArchitectureSpace(name=parsed.space) if isinstance(parsed.space, str) else parsed.space
