"""Synthetic latency tables for the search tests: every type measured (SE included), costs growing with
kernel, expansion and SE ratio, distinct per position, so each decision changes R."""

from __future__ import annotations

from pathlib import Path

from mobilekit.latency_table import LatencyTable
from mobilekit.space import get_space

REPO = Path(__file__).resolve().parents[1]
PIXEL1 = REPO / "latency_tables" / "pixel1-spnas.json"


def type_cost_ms(position: int, kernel: int, expansion: int, se_ratio: float) -> float:
    base = 1.0 + 0.05 * position
    return base * (1 + 0.3 * (kernel == 5)) * (expansion / 3) * (1 + 0.4 * se_ratio) + 0.001 * position


SEARCH_WIDTH = 0.35  # width of the search tests' table (small networks, quick steps)


def synthetic_table(width: float = 1.0, resolution: int = 224, with_se: bool = True, cover_fixed: bool = False,
                    device: str = "synthetic") -> LatencyTable:
    """A full table for spnas-mnasnet at ``width``/``resolution``. ``cover_fixed``: the fixed entry covers
    positions 0 and 21 too (as the Pixel 1 table does); otherwise they have their own entries."""
    space = get_space(width=width, resolution=resolution)
    table = LatencyTable(space=space.describe(), device={"name": device}, source="synthetic (tests)")
    covers = ["stem", "head"] + ([p.index for p in space.positions if not p.searchable] if cover_fixed else [])
    table.fixed["stem_head"] = {"median_ms": 5.0, "covers": covers}
    for position in space.positions:
        for layer_type in position.candidates:
            if layer_type.is_skip:
                value = 0.1 + 0.01 * position.index
            elif layer_type.se_ratio and not with_se:
                value = None
            else:
                value = type_cost_ms(position.index, layer_type.kernel, layer_type.expansion, layer_type.se_ratio)
            table.set_entry(position.index, layer_type, {"median_ms": value})
    return table
