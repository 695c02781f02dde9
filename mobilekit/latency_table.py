"""The latency table: per layer position x layer type latency of one device, as JSON.

Layout (all latencies in milliseconds)::

    {
      "format": "mobilekit-latency-table/1",
      "units": "ms",
      "source": "how it was obtained (command, or the paper/repository it was converted from)",
      "device": {"name": ..., "model": ..., "abi": ..., "runtime": "tflite" | "onnx", "runtime_version": ...,
                 "threads": 1, "os": ...},
      "space": {"name": "spnas-mnasnet", "width": 1.0, "resolution": 224, "num_classes": 1000},
      "settings": {"runs": 50, "repeats": 3, ...},
      "fixed": {"stem": ENTRY, "head": ENTRY},                  # parts no search changes
      "entries": {"0": {"ir_k3_e1": ENTRY}, "1": {"ir_k3_e3": ENTRY, ...}, ...}   # position -> type -> ENTRY
    }

    ENTRY = {"median_ms": float | null, "std_ms": float, "min_ms": float, "max_ms": float, "runs": int,
             "measured": bool, "wall_s": float, "covers": [...], "note": str}

A fixed entry's ``covers`` lists what it accounts for (``"stem"``, ``"head"``, or position indices): a
published table may give one constant for stem, head and the fixed layers together. ``median_ms`` is null for
an entry that was not measured (e.g. SE types of the published Pixel 1 table).

Tables are written atomically (temp file + rename), so a killed profiler never leaves a corrupt file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mobilekit.errors import TableError
from mobilekit.jsonio import json_field_is, read_json, write_json_atomic
from mobilekit.space import Architecture, LayerType, SearchSpace, get_space, parse_layer_type
from mobilekit.validation.table import validate_table_data

FORMAT = "mobilekit-latency-table/1"


#: The two ways on from a partial table (profiled with --positions), named in every refusal of a missing entry.
FILL_ROUTES = ("fill the gaps from the layer regression: 'mobilekit latency fit --table TABLE --out PREDICTOR.json "
               "--filled-table FILLED.json' and use FILLED.json, or search with the predictor: "
               "'mobilekit search --table TABLE --predictor PREDICTOR.json'")


def is_table_file(path: str | Path) -> bool:
    """True when ``path`` is a JSON object with ``"format": "mobilekit-latency-table/1"`` (it may still fail full
    validation); the format check that lets mobilekit replace a table it did not list in a manifest."""
    return json_field_is(path, "format", FORMAT)


@dataclass
class LatencyTable:
    """In-memory latency table. ``entries[position][type_name]`` and ``fixed[name]`` are ENTRY dicts."""

    space: dict[str, Any]
    device: dict[str, Any] = field(default_factory=dict)
    entries: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    path: Path | None = None

    # ---- access -------------------------------------------------------------------------------------------
    def search_space(self) -> SearchSpace:
        """The :class:`SearchSpace` this table was measured for."""
        info = self.space
        return get_space(info.get("name", "spnas-mnasnet"), width=float(info.get("width", 1.0)),
                         resolution=int(info.get("resolution", 224)), num_classes=int(info.get("num_classes", 1000)))

    def entry(self, position: int, layer_type: LayerType | str) -> dict[str, Any] | None:
        name = layer_type if isinstance(layer_type, str) else layer_type.name
        return self.entries.get(position, {}).get(name)

    def latency_ms(self, position: int, layer_type: LayerType | str) -> float:
        """Median latency (ms) of one type at one position. Skip without an entry counts as 0 ms.

        Raises:
            TableError: the entry is missing or was not measured.
        """
        name = layer_type if isinstance(layer_type, str) else layer_type.name
        entry = self.entry(position, name)
        if entry is None:
            if name == "skip":
                return 0.0
            if position in self.fixed_positions():
                return 0.0
            raise TableError(f"{self._where()}: no entry for layer {position} type {name}; profile it "
                             f"(mobilekit profile --positions {position}), or {FILL_ROUTES}")
        if entry.get("median_ms") is None:
            raise TableError(f"{self._where()}: layer {position} type {name} was not measured on this device; "
                             f"leave it out of the search, or {FILL_ROUTES}")
        return float(entry["median_ms"])

    def has(self, position: int, layer_type: LayerType | str) -> bool:
        entry = self.entry(position, layer_type)
        return entry is not None and entry.get("median_ms") is not None

    def fixed_ms(self) -> float:
        """Sum of the fixed parts (stem, head, and whatever else the fixed entries cover), in ms."""
        return float(sum(e["median_ms"] for e in self.fixed.values() if e.get("median_ms") is not None))

    def fixed_positions(self) -> set[int]:
        """Positions whose latency is included in a fixed entry (not looked up in ``entries``)."""
        return {c for e in self.fixed.values() for c in e.get("covers", []) if isinstance(c, int)}

    def measured_types(self, position: int) -> list[str]:
        return [name for name, e in self.entries.get(position, {}).items() if e.get("median_ms") is not None]

    def iter_entries(self) -> Iterator[tuple[int, str, dict[str, Any]]]:
        for position in sorted(self.entries):
            for name, entry in self.entries[position].items():
                yield position, name, entry

    def lookup_ms(self, arch: Architecture) -> float:
        """Predicted latency of a whole network: fixed parts + the entry of each chosen type (ms)."""
        covered = self.fixed_positions()
        total = self.fixed_ms()
        for spec in arch.layers():
            if spec.index not in covered:
                total += self.latency_ms(spec.index, spec.op)
        return total

    def set_entry(self, position: int, layer_type: LayerType | str, entry: dict[str, Any]) -> None:
        name = layer_type if isinstance(layer_type, str) else layer_type.name
        self.entries.setdefault(position, {})[name] = entry

    def _where(self) -> str:
        return str(self.path) if self.path else "latency table"

    # ---- JSON ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "units": "ms",
            "source": self.source,
            "device": self.device,
            "space": self.space,
            "settings": self.settings,
            "fixed": self.fixed,
            "entries": {str(p): dict(sorted(types.items())) for p, types in sorted(self.entries.items())},
        }

    def save(self, path: str | Path | None = None) -> Path:
        """Write atomically (temp file in the same folder, then rename). An existing file is replaced only when
        mobilekit wrote it or it is a mobilekit latency table (:func:`is_table_file`)."""
        self.path = write_json_atomic(path or self.path or "latency_table.json", self.to_dict(), indent=1,
                                      recognise=is_table_file)
        return self.path

    @classmethod
    def from_dict(cls, data: Any, source: str = "latency table") -> "LatencyTable":
        if not isinstance(data, dict):
            raise TableError(f"{source}: expected a JSON object (a mobilekit latency table)")
        if data.get("format") != FORMAT:
            raise TableError(f"{source}: field 'format' is {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("units", "ms") != "ms":
            raise TableError(f"{source}: field 'units' must be 'ms'")
        space = data.get("space")
        if not isinstance(space, dict) or "name" not in space:
            raise TableError(f"{source}: field 'space' must be an object with at least 'name'")
        validate_table_data(data, source)  # typed, range-checked fields (mobilekit/validation/table.py)
        entries: dict[int, dict[str, dict[str, Any]]] = {}
        for key, types in (data.get("entries") or {}).items():
            try:
                position = int(key)
            except ValueError:
                raise TableError(f"{source}: entries key {key!r} is not a layer index") from None
            if not isinstance(types, dict):
                raise TableError(f"{source}: entries[{key}] must map layer types to entries")
            for name, entry in types.items():
                _check_entry(entry, f"{source}: entries[{key}][{name!r}]")
                parse_layer_type(name)
            entries[position] = dict(types)
        fixed = data.get("fixed") or {}
        for name, entry in fixed.items():
            _check_entry(entry, f"{source}: fixed[{name!r}]")
        return cls(space=space, device=data.get("device") or {}, entries=entries, fixed=dict(fixed),
                   settings=data.get("settings") or {}, source=data.get("source", ""))

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        path = Path(path)
        data = read_json(path, TableError, "no such latency table; make one with 'mobilekit profile' or use "
                         "latency_tables/pixel1-spnas.json", "; re-run 'mobilekit profile' to rebuild it")
        table = cls.from_dict(data, source=str(path))
        table.path = path
        return table


def _check_entry(entry: Any, where: str) -> None:
    if not isinstance(entry, dict) or "median_ms" not in entry:
        raise TableError(f"{where}: expected an object with 'median_ms' (number or null)")
    value = entry["median_ms"]
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
        raise TableError(f"{where}: 'median_ms' must be a non-negative number or null, got {value!r}")
