"""Architectures: one chosen layer type per position of a search space, with JSON and block-string I/O.

The decoded form that every backend consumes is :class:`LayerSpec` (a position with its chosen type), obtained
from :meth:`Architecture.layers`. Nothing downstream parses block strings again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from mobilekit import __version__
from mobilekit.errors import ArchitectureError, SpaceError
from mobilekit.jsonio import read_json, write_json_atomic
from mobilekit.space.layer_types import LayerType, parse_layer_type
from mobilekit.space.search_space import LayerPosition, SearchSpace, get_space


@dataclass(frozen=True)
class LayerSpec:
    """A layer position with its chosen type: everything a builder or a latency lookup needs.

    Input shape (1, in_channels, H, W) with (H, W) = ``in_hw``; output (1, out_channels, *out_hw).
    """

    position: LayerPosition
    op: LayerType

    @property
    def index(self) -> int:
        return self.position.index

    @property
    def in_channels(self) -> int:
        return self.position.in_channels

    @property
    def out_channels(self) -> int:
        return self.position.out_channels

    @property
    def stride(self) -> int:
        return self.position.stride

    @property
    def in_hw(self) -> tuple[int, int]:
        return self.position.in_hw

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.position.out_hw

    @property
    def mid_channels(self) -> int:
        """Channels of the depthwise convolution (in_channels x expansion); 0 for skip."""
        return self.in_channels * self.op.expansion

    @property
    def se_channels(self) -> int:
        """Squeeze width of the SE block: max(1, int(in_channels x se_ratio)), 0 without SE (MnasNet's rule)."""
        return max(1, int(self.in_channels * self.op.se_ratio)) if self.op.se_ratio else 0

    @property
    def has_residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class Architecture:
    """A search space plus one :class:`LayerType` per position (fixed positions included)."""

    space: SearchSpace
    choices: tuple[LayerType, ...]

    def __post_init__(self) -> None:
        validate_choices(self.space, self.choices)

    # ---- decoded form -------------------------------------------------------------------------------------
    def layers(self) -> list[LayerSpec]:
        return [LayerSpec(p, c) for p, c in zip(self.space.positions, self.choices)]

    @property
    def searchable_choices(self) -> tuple[LayerType, ...]:
        return tuple(c for p, c in zip(self.space.positions, self.choices) if p.searchable)

    # ---- block strings ------------------------------------------------------------------------------------
    def to_string(self) -> str:
        """Comma-separated block strings of the searchable positions (20 in the reference space)."""
        return ",".join(c.name for c in self.searchable_choices)

    @classmethod
    def from_string(cls, space: SearchSpace, text: str) -> "Architecture":
        """Read block strings: one per searchable position, or one per position (fixed ones included)."""
        tokens = [t for t in (s.strip() for s in text.replace(";", ",").split(",")) if t]
        types = [parse_layer_type(t) for t in tokens]
        searchable = [p.index for p in space.searchable_positions]
        if len(types) == len(space.positions):
            return cls(space, tuple(types))
        if len(types) != len(searchable):
            raise ArchitectureError(
                f"architecture has {len(types)} layers; space {space.name!r} needs {len(searchable)} "
                f"(the searchable positions) or {len(space.positions)} (all positions)"
            )
        chosen = dict(zip(searchable, types))
        return cls(space, tuple(chosen.get(p.index, p.candidates[0]) for p in space.positions))

    # ---- JSON ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "space": self.space.describe(),
            "layers": [c.name for c in self.choices],
            "block_string": self.to_string(),
            "mobilekit_version": __version__,
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "architecture") -> "Architecture":
        from mobilekit.validation.architecture import validate_architecture_data

        if not isinstance(data, dict) or "layers" not in data:
            raise ArchitectureError(f"{source}: expected a JSON object with a 'layers' list of block strings")
        layers = data["layers"]
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ArchitectureError(f"{source}: field 'layers' must be a list of block strings like 'ir_k3_e6'")
        info = validate_architecture_data(data, source)  # typed, range-checked (mobilekit/validation/architecture.py)
        try:
            space = get_space(info.name, width=info.width, resolution=info.resolution, num_classes=info.num_classes)
        except SpaceError as exc:
            raise ArchitectureError(f"{source}: field 'space' is invalid ({exc})") from None
        return cls.from_string(space, ",".join(layers))

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Architecture":
        data = read_json(path, ArchitectureError, "no such architecture file")
        return cls.from_dict(data, source=str(path))

    def with_space(self, space: SearchSpace) -> "Architecture":
        """The same choices in another instance of the space (other width, resolution or classes)."""
        return Architecture(space, self.choices)

    def __str__(self) -> str:
        return self.to_string()


def validate_choices(space: SearchSpace, choices: tuple[LayerType, ...]) -> None:
    """Check one choice per position, each allowed there. Errors name the layer index and allowed values."""
    if len(choices) != len(space.positions):
        raise ArchitectureError(
            f"architecture has {len(choices)} layers; space {space.name!r} has {len(space.positions)} positions"
        )
    for position, choice in zip(space.positions, choices):
        if choice in position.candidates:
            continue
        allowed = ", ".join(c.name for c in position.candidates)
        if choice.is_skip:
            reason = (f"skip is not allowed at layer {position.index} (stride {position.stride}, "
                      f"{position.in_channels}->{position.out_channels} channels)")
        elif not position.searchable:
            reason = f"layer {position.index} is fixed to {position.candidates[0].name}, got {choice.name}"
        elif choice.se_ratio not in {c.se_ratio for c in position.candidates}:
            ratios = sorted({c.se_ratio for c in position.candidates if not c.is_skip})
            reason = f"SE ratio {choice.se_ratio:g} at layer {position.index} is not in the space (allowed: {ratios})"
        else:
            reason = f"layer type {choice.name} is not allowed at layer {position.index}"
        raise ArchitectureError(f"{reason}; allowed: {allowed}")


def read_architecture(arg: str, space: SearchSpace | None = None,
                      string_space: SearchSpace | None = None) -> Architecture:
    """Read an architecture given on the command line: a JSON file path or a block string.

    A block string is read in ``space`` (else ``string_space``, else the reference space at its defaults); a
    file keeps its own space unless ``space`` is given. ``ARG`` ending in ``.json`` is a file; anything else is
    parsed as block strings first and tried as a file only if that fails (so a long block string is never
    handed to the file system as a name).

    Raises:
        ArchitectureError: neither a readable architecture file nor valid block strings (the message says
            which, naming the layer or the file).
    """
    if not isinstance(arg, str) or not arg.strip():
        raise ArchitectureError("empty architecture: pass a JSON file or comma-separated block strings")
    if arg.endswith(".json"):
        return _load_file(arg, space)
    try:
        return Architecture.from_string(space or string_space or get_space(), arg)
    except ArchitectureError as parse_error:
        candidate = Path(arg)
        try:
            is_dir, is_file = candidate.is_dir(), candidate.is_file()
        except (OSError, ValueError):  # a name too long or with NUL: it was meant as block strings
            raise parse_error from None
        if is_dir:
            raise ArchitectureError(f"{arg}: is a folder; pass an architecture JSON file or comma-separated "
                                    "block strings") from None
        if is_file:
            return _load_file(arg, space)
        raise


def _load_file(arg: str, space: SearchSpace | None) -> Architecture:
    from mobilekit.validation.paths import check_input_file

    path = check_input_file(arg, error=ArchitectureError, missing="no such architecture file")
    arch = Architecture.load(path)
    return arch if space is None else arch.with_space(space)


def sample_architecture(space: SearchSpace, rng: random.Random, allow: set[LayerType] | None = None) -> Architecture:
    """A uniformly random architecture (each position independently), optionally restricted to ``allow``."""
    choices = []
    for position in space.positions:
        options = [c for c in position.candidates if allow is None or c in allow or not position.searchable]
        choices.append(rng.choice(options))
    return Architecture(space, tuple(choices))


def largest_architecture(space: SearchSpace) -> Architecture:
    """Every position at its largest candidate (largest kernel, then expansion, then SE ratio): the network a
    single-path superkernel computes while every subset is on (its warm-up)."""
    return Architecture(space, tuple(max(p.candidates, key=lambda t: (t.kernel, t.expansion, t.se_ratio))
                                     for p in space.positions))


def reference_architecture(space: SearchSpace) -> Architecture:
    """The demo network: every searchable position ``ir_k3_e6`` except the last of each stage, which is
    ``ir_k5_e3_se0.25`` (so both kernels, both expansions and SE appear in one model)."""
    choices = []
    for position in space.positions:
        if not position.searchable:
            choices.append(position.candidates[0])
            continue
        wanted = LayerType(3, 6, 0.0)
        last_in_stage = position.index + 1 < len(space.positions) and (
            space.positions[position.index + 1].out_channels != position.out_channels)
        if last_in_stage:
            wanted = LayerType(5, 3, 0.25)
        choices.append(wanted if wanted in position.candidates else position.candidates[-1])
    return Architecture(space, tuple(choices))
