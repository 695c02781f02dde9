"""Few-shot latency tables (:mod:`mobilekit.latency.adapt`): held-out error of a new device's table built from a
reference table plus ``budget`` measured entries, against a layer regression fitted on the full new table.

Scenarios (all layers of the new table are known; the ``budget`` chosen ones count as measured, the MAPE is on
all the others):

* Pixel 1: the ProxylessNAS table (kernels 3/5/7) from the Single-Path NAS table (kernels 3/5) of the same
  phone model, two independent measurements (shared/latency).
* Note10: each Once-for-All resolution from another one (224 from 160, 160 from 224, 192 from 176).
* this CPU: the onnxruntime table from the LiteRT one, and the int8 LiteRT table from the float one
  (latency_tables/, when present).

The baseline is the regression fitted on the *full* new table (every layer measured), with its grouped 5-fold
cross-validated MAPE (the error it makes on layer shapes it did not see). Goal: few-shot MAPE with 20 entries
within 1.5x of that baseline.

    python bench/adapt.py [--data /work/shared/latency] [--budgets 10,20,40] [--smoke]

``--smoke`` (seconds; the test suite runs it): the Pixel 1 scenario only, budget 10.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mobilekit.latency.adapt import few_shot_heldout
from mobilekit.latency.features import LayerShape
from mobilekit.latency.metrics import error_metrics
from mobilekit.latency.published_eval import load_ofa_note10, load_proxyless_pixel1, load_spnas_pixel1
from mobilekit.latency.regression import LayerLatencyRegressor
from mobilekit.latency_table import LatencyTable
from mobilekit.space import LayerSpec, parse_layer_type


def full_regression_mape(shapes, latency_ms, groups) -> float:
    """Grouped 5-fold CV MAPE (%) of the layer regression on the full new table."""
    from sklearn.model_selection import GroupKFold

    codes = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    group_ids = np.array([codes[g] for g in groups])
    predicted = np.empty_like(latency_ms)
    for train, test in GroupKFold(5, shuffle=True, random_state=0).split(shapes, groups=group_ids):
        model = LayerLatencyRegressor(cv=3).fit([shapes[i] for i in train], latency_ms[train],
                                                 groups=[groups[i] for i in train])
        predicted[test] = model.predict([shapes[i] for i in test])
    return error_metrics(latency_ms, predicted)["mape_pct"]


def table_layers(path: Path) -> tuple[list[LayerShape], np.ndarray, list]:
    table = LatencyTable.load(path)
    space = table.search_space()
    shapes, latency = [], []
    for index, name, entry in table.iter_entries():
        op = parse_layer_type(name)
        if op.is_skip or not entry.get("measured") or entry.get("median_ms") is None:
            continue
        shapes.append(LayerShape.from_spec(LayerSpec(space.positions[index], op)))
        latency.append(float(entry["median_ms"]))
    return shapes, np.array(latency), [s.key() for s in shapes]


def report(label: str, reference, target, budgets) -> list[float]:
    ref_shapes, ref_ms, _ = reference
    shapes, latency, groups = target
    baseline = full_regression_mape(shapes, latency, groups)
    row = [f"{label:44} {len(latency):5d} {baseline:9.1f}%"]
    ratios = []
    for budget in budgets:
        result = few_shot_heldout(ref_shapes, ref_ms, shapes, latency, budget)
        ratios.append(result.mape / baseline)
        row.append(f"{result.mape:7.1f}% ({result.mape / baseline:4.2f}x)")
    print("  ".join(row))
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/work/shared/latency")
    parser.add_argument("--tables", default="latency_tables")
    parser.add_argument("--budgets", default="10,20,40")
    parser.add_argument("--smoke", action="store_true", help="seconds: the Pixel 1 scenario at budget 10 only")
    args = parser.parse_args()
    budgets = [10] if args.smoke else [int(b) for b in args.budgets.split(",")]
    print(f"{'scenario (new table from reference)':44} {'layers':>5} {'full reg.':>10}  "
          + "  ".join(f"{'k=' + str(b):>16}" for b in budgets))
    print("  few-shot: held-out MAPE (ratio to the full-table regression's CV MAPE)")

    def pack(layers):
        return layers.shapes, layers.latency_ms, layers.groups

    spnas, proxyless, ofa = load_spnas_pixel1(args.data), load_proxyless_pixel1(args.data), load_ofa_note10(args.data)
    ratios = {b: [] for b in budgets}

    def add(values):
        for b, r in zip(budgets, values):
            ratios[b].append(r)

    add(report("Pixel 1: ProxylessNAS from Single-Path NAS", pack(spnas), pack(proxyless), budgets))
    if args.smoke:
        return 0
    resolution = ofa.attrs["resolution"]
    for new, ref in ((224, 160), (160, 224), (192, 176)):
        add(report(f"Note10: {new} px from {ref} px", pack(ofa.subset(resolution == ref)),
                   pack(ofa.subset(resolution == new)), budgets))
    tables = Path(args.tables)
    for new, ref, label in (("onnx-host.json", "host.json", "this CPU: onnxruntime from LiteRT"),
                            ("host-int8.json", "host.json", "this CPU: LiteRT int8 from float")):
        target = table_layers(tables / new) if (tables / new).exists() and (tables / ref).exists() else None
        if target is not None and len(set(target[2])) >= 10 and len(target[1]) > max(budgets) + 10:
            add(report(label, table_layers(tables / ref), target, budgets))
        else:
            print(f"{label}: {tables / new} or {tables / ref} missing or incomplete (profile them first)")
    print("median ratio to the full-table regression: " + ", ".join(
        f"k={b}: {np.median(r):.2f}x" for b, r in ratios.items()) + "  (goal at k=20: <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
