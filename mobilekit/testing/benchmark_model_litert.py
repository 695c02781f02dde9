"""A stand-in for TFLite's ``benchmark_model`` binary, built on the LiteRT Python interpreter.

Run it like the real tool::

    python -m mobilekit.testing.benchmark_model_litert --graph=model.tflite --num_threads=1 --num_runs=50 \\
        --warmup_runs=5 [--enable_op_profiling=true] [--use_caching=true] [--use_xnnpack=false]

It loads the model with :class:`ai_edge_litert.interpreter.Interpreter`, fills the inputs with random data,
really times the warm-up and measured runs (``time.perf_counter_ns``, µs), and prints them in the format of
TFLite 2.x ``benchmark_model`` (the tab-separated layout of ``tests/fixtures/benchmark_output``): the
``count=... first=... curr=... min=... max=... avg=... std=...`` lines, ``Inference timings in us: Init: ...,
First inference: ..., Warmup (avg): ..., Inference (avg): ...`` and, with ``--enable_op_profiling=true``, the
"Operator-wise Profiling Info for Regular Benchmark Runs" tables (times in ms).

The Python interpreter has no per-operator profiler, so operator times are measured differently from the C++
tool: every operator of the main subgraph is cut out into a one-operator model (its non-constant inputs
become model inputs, constant tensors keep their buffers) and that model is timed on its own for the same
number of runs. ``[start]`` is the sum of the preceding operators' averages. Operators that cannot run alone
are left out with a ``WARN`` line.

:func:`write_benchmark_model_wrapper` writes an executable ``benchmark_model`` shell script that runs this
module, for pushing to the ADB device emulator (:mod:`mobilekit.testing.adb_emulator`) the way the real
binary is pushed to a phone.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["main", "write_benchmark_model_wrapper"]

_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}

# name -> (type, default, label printed by LogParams)
_FLAGS: dict[str, tuple[type, object, str]] = {
    "graph": (str, "", "Graph"),
    "num_runs": (int, 50, "Min num runs"),
    "min_secs": (float, 1.0, "Min runs duration (seconds)"),
    "max_secs": (float, 150.0, "Max runs duration (seconds)"),
    "run_delay": (float, -1.0, "Inter-run delay (seconds)"),
    "num_threads": (int, -1, "Num threads"),
    "use_caching": (bool, False, "Use caching"),
    "benchmark_name": (str, "", "Benchmark name"),
    "output_prefix": (str, "", "Output prefix"),
    "warmup_runs": (int, 1, "Min warmup runs"),
    "warmup_min_secs": (float, 0.5, "Min warmup runs duration (seconds)"),
    "verbose": (bool, False, "Verbose"),
    "enable_op_profiling": (bool, False, "Enable op profiling"),
    "max_profiling_buffer_entries": (int, 1024, "Max profiling buffer entries"),
    "use_xnnpack": (bool, True, "Use xnnpack"),
    "input_layer": (str, "", "Input layers"),
    "input_layer_shape": (str, "", "Input shapes"),
    "random_seed": (int, 0, "Random seed"),
}


class _FlagError(Exception):
    pass


def _parse_flags(argv: Sequence[str]) -> tuple[dict[str, object], list[str], list[str]]:
    """Returns (values, names given on the command line, unconsumed args)."""
    values = {name: spec[1] for name, spec in _FLAGS.items()}
    given: list[str] = []
    unknown: list[str] = []
    for arg in argv:
        if not arg.startswith("--"):
            unknown.append(arg)
            continue
        name, sep, text = arg[2:].partition("=")
        if name not in _FLAGS:
            unknown.append(arg)
            continue
        kind = _FLAGS[name][0]
        try:
            if kind is bool:
                lowered = text.lower() if sep else "true"
                if lowered not in _BOOL_TRUE | _BOOL_FALSE:
                    raise ValueError(text)
                values[name] = lowered in _BOOL_TRUE
            else:
                values[name] = kind(text)
        except ValueError:
            raise _FlagError(f"Failed to parse {arg}") from None
        given.append(name)
    return values, given, unknown


def _g(value: float) -> str:
    """Format like a C++ ostream with default precision (6 significant digits, %g)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return "%g" % value


@dataclass
class _Stat:
    """The subset of tensorflow::Stat that benchmark_model prints (values in µs)."""

    values: list[int] = field(default_factory=list)

    def add(self, value: int) -> None:
        self.values.append(value)

    @property
    def count(self) -> int:
        return len(self.values)

    @property
    def first(self) -> int:
        return self.values[0] if self.values else 0

    @property
    def avg(self) -> float:
        return sum(self.values) / len(self.values) if self.values else math.nan

    @property
    def std(self) -> int:
        if not self.values:
            return 0
        mean = self.avg
        variance = sum(v * v for v in self.values) / len(self.values) - mean * mean
        return int(math.sqrt(max(variance, 0.0)))

    def line(self) -> str:
        if not self.values:
            return "count=0"
        if min(self.values) == max(self.values):
            text = f"count={self.count} curr={self.values[-1]}"
            return text + ("(all same)" if self.count > 1 else "")
        return (
            f"count={self.count} first={self.first} curr={self.values[-1]} min={min(self.values)} "
            f"max={max(self.values)} avg={_g(self.avg)} std={self.std}"
        )


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return 0.0


def _fill_inputs(interpreter: object, rng: object) -> None:
    import numpy as np

    for detail in interpreter.get_input_details():  # type: ignore[attr-defined]
        shape = [max(int(d), 1) for d in detail["shape"]]
        dtype = np.dtype(detail["dtype"])
        if np.issubdtype(dtype, np.floating):
            data = rng.random(shape, dtype=np.float32).astype(dtype)  # type: ignore[attr-defined]
        elif dtype == np.bool_:
            data = rng.integers(0, 2, size=shape).astype(dtype)  # type: ignore[attr-defined]
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            data = rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(dtype)  # type: ignore[attr-defined]
        else:
            data = np.zeros(shape, dtype=dtype)
        interpreter.set_tensor(detail["index"], data)  # type: ignore[attr-defined]


def _run(interpreter: object, min_runs: int, min_secs: float, max_secs: float, delay: float) -> _Stat:
    """Mirror of BenchmarkModel::Run: at least ``min_runs`` runs and ``min_secs`` s, stop after ``max_secs``."""
    stat = _Stat()
    print(
        f"Running benchmark for at least {min_runs} iterations and at least {_g(min_secs)} seconds but "
        f"terminate if exceeding {_g(max_secs)} seconds."
    )
    now = time.perf_counter()
    min_finish = now + min_secs
    max_finish = now + max_secs
    run = 0
    while (run < min_runs or now < min_finish) and now <= max_finish:
        start = time.perf_counter_ns()
        interpreter.invoke()  # type: ignore[attr-defined]
        stat.add((time.perf_counter_ns() - start) // 1000)
        if delay > 0:
            time.sleep(delay)
        now = time.perf_counter()
        run += 1
    print(stat.line())
    print()
    return stat


# ----------------------------------------------------------------------------------------------------------
# per-operator timing


@dataclass
class _OpProfile:
    node_type: str
    name: str
    times_us: list[int]

    @property
    def avg_ms(self) -> float:
        return sum(self.times_us) / len(self.times_us) / 1000.0

    @property
    def first_ms(self) -> float:
        return self.times_us[0] / 1000.0


def _builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def _single_op_models(model_bytes: bytes) -> list[tuple[int, str, str, bytes | None]]:
    """For each operator of subgraph 0: (index, node type, [outputs]:index name, one-op model bytes or None)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    names = _builtin_names()
    base = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    subgraph = base.subgraphs[0]
    count = len(subgraph.operators or [])
    out = []
    for index in range(count):
        op = subgraph.operators[index]
        code = base.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
        if builtin == schema.BuiltinOperator.CUSTOM and code.customCode:
            node_type = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
        else:
            node_type = names.get(builtin, f"OP_{builtin}")
        tensor_names = []
        for t in op.outputs if op.outputs is not None else []:
            raw = subgraph.tensors[t].name
            tensor_names.append(raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw))
        label = f"[{', '.join(tensor_names)}]:{index}"
        try:
            model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
            sg = model.subgraphs[0]
            one = sg.operators[index]
            inputs = []
            for t in one.inputs if one.inputs is not None else []:
                if t < 0 or t in inputs:
                    continue
                tensor = sg.tensors[t]
                buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers or []) else None
                constant = buffer is not None and (
                    (buffer.data is not None and len(buffer.data) > 0) or int(getattr(buffer, "size", 0) or 0) > 0
                )
                if not constant and not tensor.isVariable:
                    inputs.append(t)
            sg.operators = [one]
            sg.inputs = inputs
            sg.outputs = [t for t in (one.outputs if one.outputs is not None else []) if t >= 0]
            model.signatureDefs = []
            builder = flatbuffers.Builder(1024)
            builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
            out.append((index, node_type, label, bytes(builder.Output())))
        except Exception:  # noqa: BLE001 - an operator that cannot be cut out is reported, not fatal
            out.append((index, node_type, label, None))
    return out


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the runtime's own stderr lines (one "Created ... delegate" per one-operator model)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _intermediate_values(model_bytes: bytes, threads: int, rng: object) -> dict[int, object]:
    """Run the whole model once with every tensor preserved; tensor index -> value (inputs of each op)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=model_bytes,
        num_threads=threads,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interpreter.allocate_tensors()
    _fill_inputs(interpreter, rng)
    interpreter.invoke()
    values = {}
    for detail in interpreter.get_tensor_details():
        with contextlib.suppress(ValueError):
            values[detail["index"]] = interpreter.get_tensor(detail["index"])
    return values


def _profile_ops(
    model_bytes: bytes, make_interpreter: object, runs: int, rng: object, threads: int
) -> list[_OpProfile]:
    profiles = []
    with _quiet_stderr():
        try:
            values = _intermediate_values(model_bytes, threads, rng)
        except (ValueError, RuntimeError):
            values = {}
        singles = _single_op_models(model_bytes)
    for index, node_type, label, single in singles:
        if single is None:
            print(f"WARN: Operator {index} ({node_type}) could not be profiled on its own; left out.")
            continue
        try:
            with _quiet_stderr():
                interpreter = make_interpreter(single)  # type: ignore[operator]
                interpreter.allocate_tensors()
            _fill_inputs(interpreter, rng)
            for detail in interpreter.get_input_details():
                value = values.get(detail["index"])
                if value is not None and tuple(value.shape) == tuple(detail["shape"]):  # type: ignore[attr-defined]
                    interpreter.set_tensor(detail["index"], value)
            interpreter.invoke()
            times = []
            for _ in range(max(runs, 1)):
                start = time.perf_counter_ns()
                interpreter.invoke()
                times.append((time.perf_counter_ns() - start) // 1000)
        except Exception as exc:  # noqa: BLE001
            print(f"WARN: Operator {index} ({node_type}) could not be profiled on its own ({exc}); left out.")
            continue
        profiles.append(_OpProfile(node_type=node_type, name=label, times_us=times))
    return profiles


_RUN_HEADER = (
    "\t" + "[node type]".rjust(24) + "\t" + "[start]".rjust(17) + "\t" + "[first]".rjust(9) + "\t"
    + "[avg ms]".rjust(9) + "\t" + "[%]".rjust(8) + "\t" + "[cdf%]".rjust(8) + "\t" + "[mem KB]".rjust(10)
    + "\t" + "[times called]".rjust(9) + "\t[Name]"
)
_SUMMARY_HEADER = (
    "\t" + "[Node type]".rjust(24) + "\t" + "[count]".rjust(9) + "\t" + "[avg ms]".rjust(10) + "\t"
    + "[avg %]".rjust(11) + "\t" + "[cdf %]".rjust(11) + "\t" + "[mem KB]".rjust(10) + "\t"
    + "[times called]".rjust(9)
)


def _row(node_type: str, start: float, first: float, avg: float, pct: float, cdf: float, times: int, name: str) -> str:
    return (
        "\t" + node_type.rjust(24) + "\t" + f"{start:.3f}".rjust(17) + "\t" + f"{first:.3f}".rjust(9) + "\t"
        + f"{avg:.3f}".rjust(9) + "\t" + f"{pct:.3f}%".rjust(8) + "\t" + f"{cdf:.3f}%".rjust(8) + "\t"
        + f"{0.0:.3f}".rjust(10) + "\t" + str(times).rjust(9) + "\t" + name
    )


def _print_tables(entries: list[tuple[str, float, float, float, str]], total_line: str, top_n: int = 10) -> None:
    """entries: (node type, start ms, first ms, avg ms, name), in run order."""
    total = sum(e[3] for e in entries) or 1.0
    print("============================== Run Order ==============================")
    print(_RUN_HEADER)
    cdf = 0.0
    for node_type, start, first, avg, name in entries:
        pct = avg / total * 100.0
        cdf += pct
        print(_row(node_type, start, first, avg, pct, cdf, 1, name))
    print()
    print("============================== Top by Computation Time ==============================")
    print(_RUN_HEADER)
    cdf = 0.0
    for node_type, start, first, avg, name in sorted(entries, key=lambda e: -e[3])[:top_n]:
        pct = avg / total * 100.0
        cdf += pct
        print(_row(node_type, start, first, avg, pct, cdf, 1, name))
    print()
    print(f"Number of nodes executed: {len(entries)}")
    print("============================== Summary by node type ==============================")
    print(_SUMMARY_HEADER)
    by_type: dict[str, list[float]] = {}
    for node_type, _start, _first, avg, _name in entries:
        by_type.setdefault(node_type, []).append(avg)
    cdf = 0.0
    for node_type, avgs in sorted(by_type.items(), key=lambda item: -sum(item[1])):
        pct = sum(avgs) / total * 100.0
        cdf += pct
        print(
            "\t" + node_type.rjust(24) + "\t" + str(len(avgs)).rjust(9) + "\t" + f"{sum(avgs):.3f}".rjust(10)
            + "\t" + f"{pct:.3f}%".rjust(11) + "\t" + f"{cdf:.3f}%".rjust(11) + "\t" + f"{0.0:.3f}".rjust(10)
            + "\t" + str(len(avgs)).rjust(9)
        )
    print()
    print(total_line)
    print("Memory (bytes): count=0")
    print(f"{len(entries)} nodes observed")
    print()
    print()
    print()


# ----------------------------------------------------------------------------------------------------------
# main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print like ``benchmark_model``; return its exit status (0 ok, 1 failure)."""
    args = list(sys.argv[1:] if argv is None else argv)
    print("STARTING!", flush=True)
    try:
        flags, given, unknown = _parse_flags(args)
    except _FlagError as exc:
        print(f"ERROR: {exc}")
        print("Benchmarking failed.")
        return 1
    if unknown:
        print(f"WARN: Unconsumed cmdline flags: {' '.join(unknown)}")
    verbose = bool(flags["verbose"])
    print(f"Log parameter values verbosely: [{int(verbose)}]")
    for name, (kind, _default, label) in _FLAGS.items():
        if name in ("verbose",) or (name not in given and not verbose):
            continue
        value = flags[name]
        shown = int(value) if kind is bool else (_g(value) if kind is float else value)  # type: ignore[arg-type]
        print(f"{label}: [{shown}]")
    num_threads = int(flags["num_threads"])  # type: ignore[arg-type]
    threads = num_threads if num_threads > 0 else 1
    if "num_threads" in given or verbose:
        print(f"#threads used for CPU inference: [{threads}]")

    graph = str(flags["graph"])
    if not graph:
        print("ERROR: Please specify the name of your TF Lite input file with --graph")
        print("Benchmarking failed.")
        return 1
    try:
        model_bytes = Path(graph).read_bytes()
    except OSError:
        print(f"ERROR: Could not open '{graph}'.")
        print(f"ERROR: Failed to mmap model {graph}")
        print("Benchmarking failed.")
        return 1

    cost_s = os.environ.get("MOBILEKIT_EMULATOR_RUN_COST_S")  # the ADB emulator's run_cost_s (a phone-like device)
    if cost_s:
        time.sleep(float(cost_s))

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if flags["use_xnnpack"] else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES

    def make_interpreter(content: bytes) -> Interpreter:
        return Interpreter(model_content=content, num_threads=threads, experimental_op_resolver_type=resolver)

    rng = np.random.default_rng(int(flags["random_seed"]))  # type: ignore[arg-type]
    rss_start = _rss_mb()
    init_start = time.perf_counter_ns()
    try:
        interpreter = make_interpreter(model_bytes)
        print(f"Loaded model {graph}")
        alloc_start = time.perf_counter_ns()
        interpreter.allocate_tensors()
        alloc_us = (time.perf_counter_ns() - alloc_start) // 1000
    except (ValueError, RuntimeError) as exc:
        print(f"ERROR: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
        print("Benchmarking failed.")
        return 1
    init_us = (time.perf_counter_ns() - init_start) // 1000
    rss_init = _rss_mb()
    print(f"The input model file size (MB): {_g(len(model_bytes) / 1e6)}")
    print(f"Initialized session in {_g(init_us / 1e3)}ms.")
    try:
        _fill_inputs(interpreter, rng)
        max_secs = float(flags["max_secs"])  # type: ignore[arg-type]
        delay = float(flags["run_delay"])  # type: ignore[arg-type]
        warmup = _run(interpreter, int(flags["warmup_runs"]), float(flags["warmup_min_secs"]), max_secs, delay)  # type: ignore[arg-type]
        regular = _run(interpreter, int(flags["num_runs"]), float(flags["min_secs"]), max_secs, delay)  # type: ignore[arg-type]
    except (ValueError, RuntimeError) as exc:
        print(f"ERROR: {exc}")
        print("Benchmarking failed.")
        return 1
    rss_end = _rss_mb()
    print(
        f"Inference timings in us: Init: {init_us}, First inference: {warmup.first}, "
        f"Warmup (avg): {_g(warmup.avg)}, Inference (avg): {_g(regular.avg)}"
    )
    print(
        "Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the "
        "actual memory footprint of the model at runtime. Take the information at your discretion."
    )
    print(f"Memory footprint delta from the start of the tool (MB): init={_g(rss_init - rss_start)} overall={_g(rss_end - rss_start)}")

    if flags["enable_op_profiling"]:
        print("Profiling Info for Benchmark Initialization:")
        alloc_ms = alloc_us / 1000.0
        _print_tables([("AllocateTensors", 0.0, alloc_ms, alloc_ms, "AllocateTensors/0")], f"Timings (microseconds): count=1 curr={alloc_us}")
        profiles = _profile_ops(model_bytes, make_interpreter, max(regular.count, 1), rng, threads)
        entries = []
        start_ms = 0.0
        for profile in profiles:
            entries.append((profile.node_type, start_ms, profile.first_ms, profile.avg_ms, profile.name))
            start_ms += profile.avg_ms
        per_run = _Stat()
        runs = min((len(p.times_us) for p in profiles), default=0)
        for k in range(runs):
            per_run.add(sum(p.times_us[k] for p in profiles))
        print("Operator-wise Profiling Info for Regular Benchmark Runs:")
        _print_tables(entries, f"Timings (microseconds): {per_run.line()}")
    sys.stdout.flush()
    return 0


def write_benchmark_model_wrapper(path: Path) -> Path:
    """Write an executable ``benchmark_model`` shell script that runs this module with this Python.

    ``path`` is a folder (the script is ``path/benchmark_model``) or the script's path. The script puts the
    folder holding the ``mobilekit`` package on ``PYTHONPATH``, so it also works from another working
    directory (the emulator runs commands in its storage folder). Returns the script's path.
    """
    path = Path(path)
    target = path / "benchmark_model" if path.is_dir() else path
    package_root = Path(__file__).resolve().parents[2]
    script = "\n".join(
        [
            "#!/bin/sh",
            "# benchmark_model stand-in written by mobilekit.testing.benchmark_model_litert: runs the LiteRT",
            "# Python interpreter with benchmark_model's flags and prints benchmark_model's output format.",
            f"PYTHONPATH={shlex.quote(str(package_root))}${{PYTHONPATH:+:$PYTHONPATH}}",
            "export PYTHONPATH",
            f'exec {shlex.quote(sys.executable)} -m mobilekit.testing.benchmark_model_litert "$@"',
            "",
        ]
    )
    target.write_text(script)
    target.chmod(0o755)
    return target


if __name__ == "__main__":
    sys.exit(main())
