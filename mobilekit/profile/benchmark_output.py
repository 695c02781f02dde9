"""Parsers for the text printed by on-device benchmark runners.

Two tools are understood:

* TFLite / LiteRT ``benchmark_model`` (:func:`parse_benchmark_model`). Its summary line is printed in
  microseconds (``Inference timings in us: Init: 5685, First inference: 18535, Warmup (avg): 14462.3,
  Inference (avg): 14154.4``); the run statistics line before it (``count=50 first=... curr=... min=...
  max=... avg=... std=...``, newer versions add ``p5=... median=... p95=...``) gives the spread, also in µs.
  With ``--enable_op_profiling=true`` it appends per-operator tables whose times are in milliseconds; the
  "Run Order" table of the "Operator-wise Profiling Info for Regular Benchmark Runs" section becomes
  :attr:`BenchmarkResult.ops`. Both layouts seen in the wild are read: the tab-separated one with a
  ``[start]`` column (TF 2.x) and the space-aligned one without it (LiteRT).
* ONNX Runtime ``onnxruntime_perf_test`` (:func:`parse_onnxruntime_perf_test`): "Average inference time
  cost: X ms", "Session creation time cost: X s", "First inference time cost: X ms", "Min/Max/P50/...
  Latency: X s". Its seconds and milliseconds are converted to µs.

Lines may carry a log prefix (``INFO:``, logcat tags, indentation): values are searched for, not anchored.
Output that is not the tool's, or that stops before the summary (a crashed or killed run), raises
:class:`BenchmarkOutputError`, whose one-line message quotes the offending or the last line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mobilekit.errors import DeviceError

__all__ = [
    "BenchmarkOutputError",
    "BenchmarkResult",
    "OpTiming",
    "parse_benchmark_model",
    "parse_onnxruntime_perf_test",
]

_QUOTE_MAX = 160


class BenchmarkOutputError(DeviceError):
    """A benchmark runner printed something that is not a complete, known benchmark report."""


@dataclass(frozen=True)
class OpTiming:
    """One row of the per-operator "Run Order" table of ``benchmark_model --enable_op_profiling=true``.

    Times are in milliseconds, as the tool prints them; percentages are of the summed operator time.
    """

    node_type: str
    """Operator kind, e.g. ``CONV_2D`` or ``Convolution (NHWC, QC8) GEMM`` (XNNPACK)."""
    name: str
    """The ``[Name]`` column verbatim, e.g. ``[MobilenetV1/Conv2d_0/Relu6]:0``."""
    node_index: int | None
    """Node index parsed from the trailing ``:N`` of the name, if present."""
    start_ms: float | None
    """Start offset within a run in ms (``[start]``; absent in the LiteRT layout)."""
    first_ms: float
    """Duration of the first profiled run in ms."""
    avg_ms: float
    """Average duration in ms."""
    percent: float
    """Share of the total operator time, in %."""
    cdf_percent: float
    """Cumulative share up to and including this row, in %."""
    mem_kb: float
    """Memory column in KB (0 unless the tool tracked it)."""
    times_called: int
    """How often the node ran per inference."""


@dataclass(frozen=True)
class BenchmarkResult:
    """Timings of one benchmark run. Every ``*_us`` field is in microseconds; ``None`` when the tool did not
    print that value."""

    tool: str
    """``"benchmark_model"`` or ``"onnxruntime_perf_test"``."""
    init_us: float | None
    """Initialisation (model load, delegate, allocation / session creation) in µs."""
    first_us: float | None
    """First inference in µs."""
    warmup_us: float | None
    """Average warm-up inference in µs (``benchmark_model`` only)."""
    avg_us: float
    """Average measured inference in µs."""
    std_us: float | None = None
    """Standard deviation of the measured inferences in µs."""
    min_us: float | None = None
    """Fastest measured inference in µs."""
    max_us: float | None = None
    """Slowest measured inference in µs."""
    count: int | None = None
    """Number of measured inferences, if printed."""
    percentiles_us: tuple[tuple[float, float], ...] = ()
    """``(percentile, µs)`` pairs the tool printed, e.g. ``((5.0, ...), (50.0, ...), (95.0, ...))``."""
    ops: tuple[OpTiming, ...] = ()
    """Per-operator timings (``--enable_op_profiling=true``), in run order."""

    @property
    def avg_ms(self) -> float:
        """Average measured inference in milliseconds."""
        return self.avg_us / 1000.0

    def percentile_us(self, percentile: float) -> float | None:
        """The printed value for ``percentile`` (e.g. 50 for the median) in µs, or ``None``."""
        for p, value in self.percentiles_us:
            if math.isclose(p, percentile):
                return value
        return None


# ----------------------------------------------------------------------------------------------------------
# helpers

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"


def _quote(line: str) -> str:
    line = line.strip()
    if len(line) > _QUOTE_MAX:
        line = line[: _QUOTE_MAX - 3] + "..."
    return repr(line)


def _last_line(lines: list[str]) -> str:
    for line in reversed(lines):
        if line.strip():
            return line
    return ""


def _fail(message: str, line: str) -> BenchmarkOutputError:
    return BenchmarkOutputError(f"{message}: {_quote(line)}")


def _to_float(text: str, line: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _fail("not a number in benchmark output line", line) from None


# ----------------------------------------------------------------------------------------------------------
# benchmark_model

_SUMMARY_START = re.compile(r"Inference timings in us:")
_SUMMARY = re.compile(
    r"Inference timings in us:\s*Init:\s*(?P<init>" + _NUM + r"),\s*First inference:\s*(?P<first>" + _NUM
    + r"),\s*Warmup \(avg\):\s*(?P<warmup>" + _NUM + r"),\s*Inference \(avg\):\s*(?P<avg>" + _NUM + r")"
    + r"(?:,\s*Inference \(std\):\s*(?P<std>" + _NUM + r"))?\s*$"
)
_COUNT_LINE = re.compile(r"(?:^|[\s:])count=(\d+)(?=\s|$)(?P<rest>.*)$")
_KV = re.compile(r"(\w+)=(" + _NUM + r")(?=\s|$)")
_OPS_SECTION = "Operator-wise Profiling Info for Regular Benchmark Runs"
_TABLE_TITLE = re.compile(r"^=+ (?P<title>.+?) =+\s*$")
_HEADER_CELL = re.compile(r"\[([^\]]+)\]")
_CELL_SPLIT = re.compile(r"\s*\t\s*|\s{2,}")
_NODE_INDEX = re.compile(r":(\d+)$")
_FAILURE_HINT = re.compile(r"\b(ERROR|Error|FATAL|failed|Failed|Aborted|Segmentation fault)\b")


def _parse_count_line(line: str) -> dict[str, float] | None:
    match = _COUNT_LINE.search(line)
    if match is None:
        return None
    values = {"count": float(match.group(1))}
    for key, value in _KV.findall(match.group("rest")):
        values[key] = _to_float(value, line)
    return values


def _parse_op_rows(lines: list[str], start: int) -> tuple[OpTiming, ...]:
    """Parse the "Run Order" table that follows ``lines[start]`` (the section title line)."""
    i = start + 1
    n = len(lines)
    while i < n and not lines[i].strip():
        i += 1
    if i >= n:
        raise _fail(f"benchmark output ends after the {_OPS_SECTION!r} title", _last_line(lines))
    title = _TABLE_TITLE.match(lines[i].strip())
    if title is None or title.group("title") != "Run Order":
        raise _fail("expected the 'Run Order' table of the operator profile, got", lines[i])
    i += 1
    if i >= n or "[node type]" not in lines[i]:
        raise _fail("operator profile 'Run Order' table has no header", lines[i] if i < n else _last_line(lines))
    header = [cell.lower() for cell in _HEADER_CELL.findall(lines[i])]
    required = {"node type", "first", "avg ms", "%", "cdf%", "mem kb", "times called", "name"}
    if not required.issubset(header):
        raise _fail("unknown operator profile header", lines[i])
    col = {name: k for k, name in enumerate(header)}
    i += 1
    ops: list[OpTiming] = []
    while i < n and lines[i].strip():
        line = lines[i]
        cells = _CELL_SPLIT.split(line.strip())
        if len(cells) != len(header):
            raise _fail(f"operator profile row has {len(cells)} columns, expected {len(header)}", line)
        try:
            name = cells[col["name"]]
            index_match = _NODE_INDEX.search(name)
            ops.append(
                OpTiming(
                    node_type=cells[col["node type"]],
                    name=name,
                    node_index=int(index_match.group(1)) if index_match else None,
                    start_ms=float(cells[col["start"]]) if "start" in col else None,
                    first_ms=float(cells[col["first"]]),
                    avg_ms=float(cells[col["avg ms"]]),
                    percent=float(cells[col["%"]].rstrip("%")),
                    cdf_percent=float(cells[col["cdf%"]].rstrip("%")),
                    mem_kb=float(cells[col["mem kb"]]),
                    times_called=int(cells[col["times called"]]),
                )
            )
        except ValueError:
            raise _fail("malformed operator profile row", line) from None
        i += 1
    if not ops:
        raise _fail("operator profile 'Run Order' table has no rows", _last_line(lines[: i + 1]))
    if i >= n:
        # The tool always prints the "Top by Computation Time" table and a summary after the run order.
        raise _fail("benchmark output ends inside the operator profile", _last_line(lines))
    return tuple(ops)


def parse_benchmark_model(text: str) -> BenchmarkResult:
    """Parse the output of TFLite/LiteRT ``benchmark_model``.

    Returns the summary timings in µs, the spread of the measured runs in µs (when the ``count=...`` line is
    present) and, for ``--enable_op_profiling=true`` output, the per-operator "Run Order" table (ms).

    Raises :class:`BenchmarkOutputError` when there is no complete ``Inference timings in us`` line (a
    failed, truncated or foreign output) or when the operator profile is cut short or malformed.
    """
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise BenchmarkOutputError("benchmark_model printed nothing")

    summary_index = None
    for k, line in enumerate(lines):
        if _SUMMARY_START.search(line):
            summary_index = k
            break
    if summary_index is None:
        last = _last_line(lines)
        failure = next((ln for ln in lines if _FAILURE_HINT.search(ln)), None)
        if failure is not None and failure.strip() != last.strip():
            raise BenchmarkOutputError(
                f"benchmark_model output has no 'Inference timings in us' line; first error "
                f"{_quote(failure)}, last line {_quote(last)}"
            )
        raise _fail("benchmark_model output has no 'Inference timings in us' line; last line", last)

    summary_line = lines[summary_index]
    match = _SUMMARY.search(summary_line)
    if match is None:
        raise _fail("malformed 'Inference timings in us' line", summary_line)
    init_us = _to_float(match.group("init"), summary_line)
    first_us = _to_float(match.group("first"), summary_line)
    warmup_us = _to_float(match.group("warmup"), summary_line)
    avg_us = _to_float(match.group("avg"), summary_line)
    summary_std = match.group("std")

    # The measured-run statistics are the last "count=" line before the summary (the one before it, if any,
    # describes the warm-up runs). Use it only if its average is the summary's, so a warm-up line is never
    # mistaken for the measured runs.
    stats: dict[str, float] | None = None
    for line in reversed(lines[:summary_index]):
        parsed = _parse_count_line(line)
        if parsed is None:
            continue
        if "avg" in parsed and math.isclose(parsed["avg"], avg_us, rel_tol=1e-5, abs_tol=0.5):
            stats = parsed
        break

    std_us = _to_float(summary_std, summary_line) if summary_std is not None else None
    min_us = max_us = None
    count = None
    percentiles: list[tuple[float, float]] = []
    if stats is not None:
        count = int(stats["count"])
        if std_us is None and "std" in stats:
            std_us = stats["std"]
        min_us = stats.get("min")
        max_us = stats.get("max")
        for key, pct in (("p5", 5.0), ("median", 50.0), ("p95", 95.0)):
            if key in stats:
                percentiles.append((pct, stats[key]))

    ops: tuple[OpTiming, ...] = ()
    for k in range(summary_index + 1, len(lines)):
        if _OPS_SECTION in lines[k]:
            ops = _parse_op_rows(lines, k)
            break

    return BenchmarkResult(
        tool="benchmark_model",
        init_us=init_us,
        first_us=first_us,
        warmup_us=warmup_us,
        avg_us=avg_us,
        std_us=std_us,
        min_us=min_us,
        max_us=max_us,
        count=count,
        percentiles_us=tuple(percentiles),
        ops=ops,
    )


# ----------------------------------------------------------------------------------------------------------
# onnxruntime_perf_test

_ORT_AVG = re.compile(r"Average (?:inference )?time cost:\s*(" + _NUM + r")\s*ms")
_ORT_SESSION = re.compile(r"Session creation time cost:\s*(" + _NUM + r")\s*s\b")
_ORT_FIRST = re.compile(r"First inference time cost:\s*(" + _NUM + r")\s*ms")
_ORT_REQUESTS = re.compile(r"Total (?:inference requests|iterations):\s*(\d+)")
_ORT_RUNS = re.compile(r"^\s*Runs:\s*(\d+)\s*$")
_ORT_LATENCY = re.compile(r"\b(Min|Max|P\d+) Latency(?::| is)\s*(" + _NUM + r")\s*(?:s|sec)\b")
_ORT_PERCENTILE = re.compile(r"^P(\d+)$")


def parse_onnxruntime_perf_test(text: str) -> BenchmarkResult:
    """Parse the output of ONNX Runtime ``onnxruntime_perf_test``.

    ``avg_us`` comes from "Average inference time cost" (printed in ms), ``init_us`` from "Session creation
    time cost" (s), ``first_us`` from "First inference time cost" (ms), and min/max/percentiles from the
    ``-s`` statistics ("P50 Latency: X s"); all are converted to µs. ``warmup_us`` and ``std_us`` are not
    printed by this tool and stay ``None``.

    Raises :class:`BenchmarkOutputError` if the average line is missing or malformed.
    """
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise BenchmarkOutputError("onnxruntime_perf_test printed nothing")

    avg_ms = None
    init_s = first_ms = None
    count = None
    min_s = max_s = None
    percentiles: list[tuple[float, float]] = []
    for line in lines:
        if "Average" in line and "time cost" in line:
            match = _ORT_AVG.search(line)
            if match is None:
                raise _fail("malformed 'Average inference time cost' line", line)
            avg_ms = _to_float(match.group(1), line)
            continue
        if (match := _ORT_SESSION.search(line)) is not None:
            init_s = _to_float(match.group(1), line)
        elif (match := _ORT_FIRST.search(line)) is not None:
            first_ms = _to_float(match.group(1), line)
        elif (match := _ORT_REQUESTS.search(line)) is not None:
            count = int(match.group(1))
        elif (match := _ORT_RUNS.match(line)) is not None and count is None:
            count = int(match.group(1))
        elif (match := _ORT_LATENCY.search(line)) is not None:
            label, value = match.group(1), _to_float(match.group(2), line)
            if label == "Min":
                min_s = value
            elif label == "Max":
                max_s = value
            else:
                digits = _ORT_PERCENTILE.match(label).group(1)  # type: ignore[union-attr]
                # "P999" is the 99.9th percentile.
                pct = float(digits) if len(digits) <= 2 else float(digits) / 10 ** (len(digits) - 2)
                percentiles.append((pct, value * 1e6))
    if avg_ms is None:
        raise _fail(
            "onnxruntime_perf_test output has no 'Average inference time cost' line; last line", _last_line(lines)
        )
    return BenchmarkResult(
        tool="onnxruntime_perf_test",
        init_us=init_s * 1e6 if init_s is not None else None,
        first_us=first_ms * 1e3 if first_ms is not None else None,
        warmup_us=None,
        avg_us=avg_ms * 1e3,
        std_us=None,
        min_us=min_s * 1e6 if min_s is not None else None,
        max_us=max_s * 1e6 if max_s is not None else None,
        count=count,
        percentiles_us=tuple(percentiles),
    )
