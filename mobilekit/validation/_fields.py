"""Typed, range-checked field kinds shared by the validation models (pydantic ``Annotated`` types; strict: no
coercion from strings, NaN and infinity refused)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True, ge=0)]
ClassCount = Annotated[int, Field(strict=True, ge=1)]
Seed = Annotated[int, Field(strict=True, ge=0, le=2**32 - 1)]
Text = Annotated[str, Field(strict=True)]
Name = Annotated[str, Field(strict=True, min_length=1)]
Flag = Annotated[bool, Field(strict=True)]
Resolution = Annotated[int, Field(strict=True, ge=16, le=2048)]  # pixels
