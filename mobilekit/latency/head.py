"""The classifier's share of a table's fixed latency, re-priced for the network's own class count.

A table's fixed entry that covers the ``head`` (1x1 conv to the head channels, pooling, classifier) was
measured with the table space's ``num_classes`` (1000 for the shipped tables); a network for N classes has a
classifier of C x N instead of C x 1000 (C = head channels, 1280 at width 1). The entry is re-priced with the
additive cost model ``opcost`` of :mod:`.regression` (non-negative cost per pointwise MAC, depthwise MAC,
parameter byte, activation byte, kernel launch), fitted on the table's own layer entries, so on that device:

    corrected entry = measured entry x cost(parts with N classes) / cost(parts with the table's classes)

where the parts are what the entry covers (stem 3x3 conv, head 1x1 conv, pooling, classifier, fixed layer
positions). The model only sets the classifier's *share* of the entry; the measurement keeps its absolute scale,
so a model that prices layers badly cannot remove more than the classifier's share. The classifier is a 1x1
convolution on a 1x1 map: ``macs_pointwise = C N``, ``param_bytes = 4 (C N + N)``, ``conv_activation_bytes =
4 (C + N)``, ``ops = 1``. A table with too few layer entries to fit the model is refused with one line
(:class:`TableError`); profile a table with the network's class count (``mobilekit profile --num-classes N``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mobilekit.errors import TableError
from mobilekit.latency.features import COST_TERMS, FLOAT_BYTES
from mobilekit.latency_table import LatencyTable


@dataclass(frozen=True)
class HeadCorrection:
    """``delta_ms`` to add to the table's prediction for a network with ``num_classes`` outputs
    (``table_classes`` in the table). ``head_ms``: the fixed entries covering the head, as measured."""

    table_classes: int
    num_classes: int
    head_channels: int
    head_ms: float
    delta_ms: float
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def classifier_terms(head_channels: int, num_classes: int) -> np.ndarray:
    """The :data:`COST_TERMS` counts of a (1, C) -> (1, N) classifier (a 1x1 conv on a 1x1 map), shape (T,)."""
    values = {"macs_pointwise": head_channels * num_classes, "macs_depthwise": 0, "depthwise_outputs": 0,
              "conv_activation_bytes": FLOAT_BYTES * (head_channels + num_classes), "elementwise_bytes": 0,
              "param_bytes": FLOAT_BYTES * (head_channels * num_classes + num_classes), "ops": 1}
    return np.array([values[name] for name in COST_TERMS], dtype=np.float64)


def fixed_part_terms(space, covers, num_classes: int) -> np.ndarray:
    """:data:`COST_TERMS` counts of the parts a fixed entry covers (``"stem"``, ``"head"`` with a classifier of
    ``num_classes`` outputs, layer positions by index at their only candidate), summed, shape (T,)."""
    from mobilekit.latency.features import cost_matrix
    from mobilekit.space import LayerSpec

    def terms(**values: float) -> np.ndarray:
        return np.array([values.get(name, 0.0) for name in COST_TERMS], dtype=np.float64)

    total = np.zeros(len(COST_TERMS))
    for item in covers:
        if item == "stem":
            h, w = space.stem_out_hw
            c_in, c_out = space.in_channels, space.stem_channels
            total += terms(macs_pointwise=h * w * c_in * c_out * 9, param_bytes=FLOAT_BYTES * (9 * c_in * c_out + c_out),
                           conv_activation_bytes=FLOAT_BYTES * (4 * h * w * c_in + h * w * c_out), ops=1)
        elif item == "head":
            h, w = space.head_in_hw
            c_in, c_head = space.positions[-1].out_channels, space.head_channels
            total += terms(macs_pointwise=h * w * c_in * c_head, param_bytes=FLOAT_BYTES * (c_in * c_head + c_head),
                           conv_activation_bytes=FLOAT_BYTES * h * w * (c_in + c_head),
                           elementwise_bytes=FLOAT_BYTES * h * w * c_head, ops=2)
            total += classifier_terms(c_head, num_classes)
        elif isinstance(item, int) and 0 <= item < len(space.positions):
            position = space.positions[item]
            total += cost_matrix([LayerSpec(position, position.candidates[0])])[0]
    return total


def head_correction(table: LatencyTable, num_classes: int) -> HeadCorrection:
    """How much the table's fixed latency changes when its classifier has ``num_classes`` outputs (ms).

    Raises:
        TableError: the classes differ and the table has fewer layer entries than the cost model needs.
    """
    from mobilekit.latency.regression import LayerLatencyRegressor

    space = table.search_space()
    table_classes = int(table.space.get("num_classes", space.num_classes))
    heads = [e for e in table.fixed.values() if e.get("median_ms") is not None and "head" in e.get("covers", [])]
    head_ms = sum(float(e["median_ms"]) for e in heads)
    if table_classes == num_classes or head_ms == 0:
        return HeadCorrection(table_classes, num_classes, space.head_channels, head_ms, 0.0,
                              "none: same class count" if table_classes == num_classes else
                              "none: no fixed entry covers the head")
    where = str(table.path) if table.path else "latency table"
    try:
        model = LayerLatencyRegressor(model="opcost", cv=0).fit_table(table)
    except TableError as exc:
        raise TableError(f"{exc}; the table's classifier was measured with {table_classes} classes and the network "
                         f"has {num_classes}, which needs those entries to re-price it (or profile a table with "
                         f"--num-classes {num_classes})") from None
    coef = np.asarray(model.params_["opcost"]["coef"], dtype=np.float64)
    delta = 0.0
    for entry in heads:
        measured_as = float(coef @ fixed_part_terms(space, entry.get("covers", []), table_classes))
        if measured_as > 0:
            wanted = float(coef @ fixed_part_terms(space, entry.get("covers", []), num_classes))
            delta += float(entry["median_ms"]) * (wanted / measured_as - 1.0)
    return HeadCorrection(table_classes, num_classes, space.head_channels, head_ms, delta,
                          f"opcost cost model fitted on {model.n_train_} layer entries of {where} sets the "
                          f"classifier's share of the measured fixed entry ({space.head_channels}x{table_classes} "
                          f"re-priced as {space.head_channels}x{num_classes})")
