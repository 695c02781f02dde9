"""Table lookup: the latency of a network is its fixed parts plus the table entry of each chosen layer type.

:class:`LookupPredictor` is the estimator form of :meth:`LatencyTable.lookup_ms
<mobilekit.latency_table.LatencyTable.lookup_ms>`: ``fit(table)`` then ``predict(archs)``. A skipped layer costs
its table entry where the table has one (the Single-Path NAS Pixel 1 model charges 0.7 ms), else 0 ms.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from mobilekit.errors import TableError
from mobilekit.latency_table import LatencyTable
from mobilekit.space import Architecture


class LookupPredictor:
    """Whole-network latency from a table. Learned state: ``table_`` and ``fixed_ms_`` (ms of the fixed parts)."""

    def fit(self, table: LatencyTable) -> "LookupPredictor":
        self.table_ = table
        self.fixed_ms_ = table.fixed_ms()
        return self

    def predict(self, archs: Architecture | Iterable[Architecture]) -> np.ndarray:
        """Latency (ms) of each architecture, shape (N,).

        Raises:
            TableError: an architecture is from another space (width, resolution) than the table, or uses a type
                the table did not measure (use :class:`~mobilekit.latency.regression.LayerLatencyRegressor`).
        """
        archs = [archs] if isinstance(archs, Architecture) else list(archs)
        return np.array([self._check_space(arch).lookup_ms(arch) for arch in archs], dtype=np.float64)

    def predict_layers(self, arch: Architecture) -> list[tuple[int, str, float]]:
        """``(position, type, ms)`` of every layer the sum adds (positions covered by a fixed entry left out)."""
        table = self._check_space(arch)
        covered = table.fixed_positions()
        return [(spec.index, spec.op.name, table.latency_ms(spec.index, spec.op)) for spec in arch.layers()
                if spec.index not in covered]

    def _check_space(self, arch: Architecture) -> LatencyTable:
        if not hasattr(self, "table_"):
            raise TableError("the lookup predictor is not fitted: call fit(table)")
        table = self.table_
        wanted = arch.space.describe()
        have = {key: table.space.get(key, wanted[key]) for key in wanted}
        if (have["name"], float(have["width"]), int(have["resolution"])) != (
                wanted["name"], float(wanted["width"]), int(wanted["resolution"])):
            where = table.path or "the latency table"
            raise TableError(
                f"{where} was measured for {have['name']} width {have['width']} at {have['resolution']}px, the "
                f"architecture is {wanted['name']} width {wanted['width']} at {wanted['resolution']}px; "
                "profile that space or use the regression predictor")
        return table
