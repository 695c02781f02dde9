"""Candidate layer types and their compact block-string notation.

A layer type is what a search chooses at one layer position: an inverted-residual MBConv block with a
depthwise kernel size ``k``, an expansion ratio ``e`` and a squeeze-and-excitation ratio ``se``, or ``skip``
(the identity). The notation follows MnasNet / timm block strings without the parts that the position fixes
(repeats, stride, channels)::

    ir_k5_e6_se0.25   kernel 5, expansion 6, SE ratio 0.25
    ir_k3_e3          kernel 3, expansion 3, no SE
    skip              identity (only where stride is 1 and channels do not change)

:func:`parse_layer_type` is the one decoder; every backend consumes the decoded :class:`LayerType`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mobilekit.errors import ArchitectureError

SKIP_NAME = "skip"


@dataclass(frozen=True, order=True)
class LayerType:
    """One candidate operation. ``kernel``/``expansion`` are 0 for skip; ``se_ratio`` is 0.0 for no SE."""

    kernel: int = 0
    expansion: int = 0
    se_ratio: float = 0.0

    @property
    def is_skip(self) -> bool:
        return self.kernel == 0

    @property
    def name(self) -> str:
        """Block string, e.g. ``ir_k5_e6_se0.25`` or ``skip``."""
        if self.is_skip:
            return SKIP_NAME
        text = f"ir_k{self.kernel}_e{self.expansion}"
        if self.se_ratio:
            text += f"_se{self.se_ratio:g}"
        return text

    def __str__(self) -> str:
        return self.name


SKIP = LayerType()


def parse_layer_type(text: str) -> LayerType:
    """Decode one block string (``ir_k3_e6``, ``ir_k5_e3_se0.25``, ``skip``) into a :class:`LayerType`.

    Raises:
        ArchitectureError: the string is not in the notation (the message shows the expected form).
    """
    token = text.strip().lower()
    if token in (SKIP_NAME, "identity", "none"):
        return SKIP
    parts = token.split("_")
    if not parts or parts[0] not in ("ir", "ds"):
        raise ArchitectureError(
            f"cannot read layer type {text!r}: expected 'ir_k<kernel>_e<expansion>[_se<ratio>]' or 'skip'"
        )
    fields: dict[str, str] = {}
    for part in parts[1:]:
        for key in ("se", "k", "e"):
            if part.startswith(key) and part[len(key):]:
                fields[key] = part[len(key):]
                break
        else:
            raise ArchitectureError(f"cannot read {part!r} in layer type {text!r}: allowed parts are k<int>, e<int>, se<ratio>")
    try:
        kernel = int(fields["k"])
        expansion = int(fields.get("e", "1" if parts[0] == "ds" else ""))
        se_ratio = float(fields.get("se", "0"))
    except (KeyError, ValueError):
        raise ArchitectureError(
            f"cannot read layer type {text!r}: expected 'ir_k<kernel>_e<expansion>[_se<ratio>]', e.g. 'ir_k5_e6_se0.25'"
        ) from None
    if kernel < 1 or kernel % 2 == 0 or expansion < 1 or not 0.0 <= se_ratio < 1.0:
        raise ArchitectureError(
            f"layer type {text!r} is out of range: kernel must be odd and >= 1, expansion >= 1, 0 <= se < 1"
        )
    return LayerType(kernel=kernel, expansion=expansion, se_ratio=se_ratio)
