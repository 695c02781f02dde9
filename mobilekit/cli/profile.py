"""``mobilekit profile``: measure a device's latency table (a thin layer over
:func:`mobilekit.profile.profiler.profile_device`)."""

from __future__ import annotations

import argparse
import time

from mobilekit.space.search_space import MIN_RESOLUTION
from mobilekit.validation.options import int_at_least, int_in, nonempty_text, positive_float, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile", help="measure every layer position x type of a search space on a device -> latency table",
        description="Build a single-layer model for every position x candidate type (plus stem and head) with the "
                    "input shape that position sees, run it on the device, and write the latency table (JSON, ms). "
                    "The table is saved after every entry; re-running the same command resumes it.")
    parser.add_argument("--device", action="append", default=None,
                        help="device descriptor (TOML), e.g. devices/pixel1.toml; default: this CPU (devices/host.toml); "
                             "repeat to profile several devices at once (a farm: one table each, one model cache)")
    parser.add_argument("--space", default="spnas-mnasnet", help="search space (default spnas-mnasnet)")
    parser.add_argument("--width", type=positive_float, default=1.0, help="width multiplier (default 1.0)")
    parser.add_argument("--resolution", type=int_at_least(MIN_RESOLUTION), default=224,
                        help="input resolution (default 224)")
    parser.add_argument("--num-classes", type=positive_int, default=1000, help="classifier outputs (default 1000)")
    parser.add_argument("--runs", type=int_in(1, 100_000), default=None,
                        help="timed runs per entry and round (default: the device's, 50)")
    parser.add_argument("--warmup", type=int_in(0, 100_000), default=None,
                        help="untimed runs before them (default: the device's, 5)")
    parser.add_argument("--repeats", type=int_in(1, 1000), default=3,
                        help="interleaved rounds over all entries; an entry keeps the median (default 3)")
    parser.add_argument("--positions", type=nonempty_text, default=None,
                        help="layer positions to measure, e.g. 1,2,5-8 (default all; stem and head always)")
    parser.add_argument("--out", default=None, help="table to write (default latency_tables/<device name>.json); "
                                                     "with several --device, the folder of their tables")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="measure everything again instead of continuing an existing table")
    parser.add_argument("--work-dir", default=None,
                        help="where model files are kept and reused (default ~/.cache/mobilekit/model-files)")
    parser.add_argument("--precision", choices=("float32", "int8"), default="float32",
                        help="float32 files, or full-integer int8 TFLite files (an int8 table; default float32)")
    parser.add_argument("--export-workers", type=int_in(0, 1024), default=None,
                        help="processes converting model files ahead of the device (default: one per core; 0: serial)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run_profile)


def run_profile(args: argparse.Namespace) -> int:
    from mobilekit.profile.devices import load_device
    from mobilekit.profile.profiler import ProfileReport, parse_positions, profile_device, summarize_table
    from mobilekit.profile.runners import open_runner
    from mobilekit.space import get_space

    from mobilekit.validation import check_output_dir, check_output_file

    devices = args.device or ["host"]
    space = get_space(args.space, width=args.width, resolution=args.resolution, num_classes=args.num_classes)
    positions = parse_positions(args.positions, space) if args.positions is not None else None
    if args.work_dir is not None:
        check_output_dir(args.work_dir, "--work-dir")
    else:
        from mobilekit.profile.model_files import default_work_dir

        default_work_dir()  # a cache folder that is a file or read-only: one line before any device is touched
    if len(devices) > 1:
        return _run_farm(args, [load_device(d) for d in devices], space, positions)
    descriptor = load_device(devices[0])
    out = str(check_output_file(args.out or f"latency_tables/{_table_name(descriptor.name, args.precision)}", "--out"))
    _claim_tables([out])
    runs = args.runs if args.runs is not None else descriptor.runs
    started = time.perf_counter()
    with open_runner(descriptor) as runner:
        info = runner.info()
        print(f"device {descriptor.name}: {info.get('model')}, {info.get('os')}, {info.get('runtime')} "
              f"{info.get('runtime_version')}, {info.get('threads')} thread(s)")
        print(f"space {space.name} width {space.width:g} resolution {space.resolution}: {runs} runs x "
              f"{args.repeats} rounds per entry -> {out}")
        table = profile_device(runner, space, out, runs=runs, repeats=args.repeats, positions=positions,
                               resume=args.resume, progress=args.progress, work_dir=args.work_dir,
                               warmup=args.warmup, precision=args.precision, export_workers=args.export_workers,
                               report=(report := ProfileReport()))
    summary = summarize_table(table)
    print(f"wrote {out} in {time.perf_counter() - started:.0f} s")
    print(f"  {report.line()}")
    if report.protocol:
        print(f"  {report.protocol}")
    for line in summary.lines():
        print(f"  {line}")
    return 0


def _claim_tables(outs: list) -> None:
    """Refuse, before any device is touched, an output that is a symlink, not a regular file, or a file that is
    neither listed in its folder's manifest nor a mobilekit latency table (with or without --no-resume); a
    damaged or planted manifest in a table's folder; and a file at a table's lock name (``.TABLE.json.lock``)
    that is not a lock (in a farm, met mid-run, it failed that device while the others measured)."""
    from pathlib import Path

    from mobilekit import locks, safewrite
    from mobilekit.latency_table import is_table_file
    from mobilekit.profile.profiler import table_lock

    for out in outs:
        safewrite.written_by_mobilekit(Path(out).parent)
        safewrite.claim(out, recognise=is_table_file)
        locks.check_lock(table_lock(out))


def _table_name(device_name: str, precision: str) -> str:
    return f"{device_name}{'' if precision == 'float32' else '-' + precision}.json"


def _run_farm(args: argparse.Namespace, descriptors: list, space, positions) -> int:
    from pathlib import Path

    from mobilekit.profile.farm import profile_farm
    from mobilekit.profile.profiler import summarize_table

    from mobilekit.validation import check_output_dir, check_output_file

    folder = check_output_dir(args.out or "latency_tables", "--out")
    outs = [Path(check_output_file(folder / _table_name(d.name, args.precision), "--out")) for d in descriptors]
    _claim_tables(outs)
    print(f"farm of {len(descriptors)} devices: {', '.join(d.name for d in descriptors)}; space {space.name} width "
          f"{space.width:g} resolution {space.resolution} -> {folder}/")
    results = profile_farm(descriptors, space, outs, work_dir=args.work_dir, export_workers=args.export_workers,
                           precision=args.precision, runs=args.runs, repeats=args.repeats, positions=positions,
                           resume=args.resume, warmup=args.warmup)
    for result in results:
        if result.error:
            print(f"{result.descriptor.name}: FAILED: {result.error}")
            continue
        print(f"{result.descriptor.name} ({result.info.get('model')}): wrote {result.out}")
        print(f"  {result.report.line()}")
        if result.report.protocol:
            print(f"  {result.report.protocol}")
        for line in summarize_table(result.table).lines()[:1]:
            print(f"  {line}")
    return 2 if any(r.error for r in results) else 0
