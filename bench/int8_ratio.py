"""float32 / int8 latency ratio per layer type, from a float table and an int8 table of the same device and space.

For every layer type, the ratio float_ms / int8_ms of each position both tables measured, summarised by its
median (and range) over positions; plus stem, head and the whole reference network the tables imply.

    python bench/int8_ratio.py [--float latency_tables/host.json] [--int8 latency_tables/host-int8.json] [--smoke]

It only reads two tables (seconds), so ``--smoke`` (the test suite's check that the script runs) runs it as is.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict

from mobilekit.latency_table import LatencyTable
from mobilekit.space import reference_architecture


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--float", dest="float_table", default="latency_tables/host.json")
    parser.add_argument("--int8", dest="int8_table", default="latency_tables/host-int8.json")
    parser.add_argument("--smoke", action="store_true", help="the test suite's run: the same, it takes seconds")
    args = parser.parse_args()
    fp, q = LatencyTable.load(args.float_table), LatencyTable.load(args.int8_table)
    if fp.space != q.space:
        print(f"the tables are for different spaces: {fp.space} vs {q.space}", file=sys.stderr)
        return 2
    print(f"{args.float_table} ({fp.settings.get('precision', 'float32')}) vs {args.int8_table} "
          f"({q.settings.get('precision')}), space {fp.space}")
    ratios: dict[str, list[float]] = defaultdict(list)
    for position, name, entry in fp.iter_entries():
        other = q.entry(position, name)
        if entry.get("measured") and other and other.get("measured") and other["median_ms"] > 0:
            ratios[name].append(entry["median_ms"] / other["median_ms"])
    for part in ("stem", "head"):
        if part in fp.fixed and part in q.fixed:
            ratios[part].append(fp.fixed[part]["median_ms"] / q.fixed[part]["median_ms"])
    print(f"{'layer type':18} {'positions':>9} {'median float/int8':>18} {'min':>6} {'max':>6}")
    for name in sorted(ratios):
        values = ratios[name]
        print(f"{name:18} {len(values):9d} {statistics.median(values):18.2f} {min(values):6.2f} {max(values):6.2f}")
    every = [r for values in ratios.values() for r in values]
    print(f"{'all entries':18} {len(every):9d} {statistics.median(every):18.2f} {min(every):6.2f} {max(every):6.2f}")
    arch = reference_architecture(fp.search_space())
    float_ms, int8_ms = fp.lookup_ms(arch), q.lookup_ms(arch)
    print(f"reference network (table lookup): float {float_ms:.2f} ms, int8 {int8_ms:.2f} ms, "
          f"ratio {float_ms / int8_ms:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
