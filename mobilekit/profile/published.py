"""Convert published phone latency tables into mobilekit's table format.

:func:`convert_spnas_pixel1` reads the Google Pixel 1 table of Single-Path NAS (Stamoulis et al., "Single-Path
NAS: Designing Hardware-Efficient ConvNets in less than 4 Hours", ECML-PKDD 2019; repository
dstamoulis/single-path-nas, ``nas-search/pixel1_runtime_model.json``). That file maps layer -> op -> ms with
op 0 = k3 e3, 1 = k3 e6, 2 = k5 e3, 3 = k5 e6, measured with TFLite, batch 1, one thread. The reference code
adds a constant 19.6 ms for the stem, head and the two fixed blocks, and 0.7 ms for a skipped layer; both are
carried over. SE types were not measured on the phone and are stored with ``median_ms: null``.
"""

from __future__ import annotations

import json
from pathlib import Path

from mobilekit.errors import TableError
from mobilekit.latency_table import LatencyTable
from mobilekit.space import LayerType, spnas_mnasnet

SPNAS_OP_ORDER = (LayerType(3, 3), LayerType(3, 6), LayerType(5, 3), LayerType(5, 6))
SPNAS_FIXED_MS = 19.6
SPNAS_SKIP_MS = 0.7
SPNAS_SOURCE = (
    "Google Pixel 1, TFLite, batch 1, one thread. Published by Stamoulis et al., Single-Path NAS (ECML-PKDD 2019), "
    "repository dstamoulis/single-path-nas, nas-search/pixel1_runtime_model.json; stem/head/fixed-layer constant "
    "(19.6 ms) and skip cost (0.7 ms) from the same repository's runtime model. SE types not measured."
)


def convert_spnas_pixel1(path: str | Path) -> LatencyTable:
    """Read ``pixel1_spnas_runtime_model.json`` and return the table for the ``spnas-mnasnet`` space (224, w=1.0)."""
    path = Path(path)
    try:
        published = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TableError(f"{path}: cannot read the published table ({exc})") from None
    space = spnas_mnasnet()
    table = LatencyTable(
        space=space.describe(),
        device={"name": "pixel1", "model": "Google Pixel 1", "abi": "arm64-v8a", "runtime": "tflite", "threads": 1},
        settings={"published": True},
        source=SPNAS_SOURCE,
    )
    fixed_positions = [p.index for p in space.positions if not p.searchable]
    table.fixed["stem_head_fixed_layers"] = {
        "median_ms": SPNAS_FIXED_MS, "measured": False, "covers": ["stem", "head", *fixed_positions],
        "note": "constant of the reference runtime model",
    }
    for position in space.searchable_positions:
        ops = published.get(str(position.index))
        if not isinstance(ops, dict):
            raise TableError(f"{path}: layer {position.index} missing from the published table")
        for candidate in position.candidates:
            if candidate.is_skip:
                entry = {"median_ms": SPNAS_SKIP_MS, "measured": False, "note": "skip cost of the reference runtime model"}
            elif candidate.se_ratio:
                entry = {"median_ms": None, "measured": False, "note": "SE not measured in the published table"}
            else:
                op_index = SPNAS_OP_ORDER.index(LayerType(candidate.kernel, candidate.expansion))
                entry = {"median_ms": float(ops[str(op_index)]), "measured": True, "note": "published"}
            table.set_entry(position.index, candidate, entry)
    return table
