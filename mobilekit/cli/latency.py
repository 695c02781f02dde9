"""``mobilekit latency``: predict a network's latency, fit the layer regression, validate against the device,
and evaluate the regression on published phone tables. Each command is a thin call into
:mod:`mobilekit.latency`."""

from __future__ import annotations

import argparse
import json

from mobilekit.latency.metrics import significant
from mobilekit.validation.options import int_at_least, nonempty_text, positive_int

# The families of mobilekit.latency.regression.MODEL_KINDS (kept here so that registering imports nothing heavy).
MODEL_CHOICES = ("auto", "opcost", "opcost+gbr", "gbr", "rf", "ridge")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "latency", help="predict, fit and validate latency models",
        description="Latency models over a latency table: lookup (table sum) and a per-layer regression.")
    commands = parser.add_subparsers(dest="latency_command", metavar="COMMAND", required=True)

    predict = commands.add_parser(
        "predict", help="predicted latency of an architecture (lookup and regression)",
        description="Print the predicted latency (ms) of ARCH by table lookup and by the layer regression.")
    predict.add_argument("arch", metavar="ARCH", type=nonempty_text,
                         help="architecture JSON file or comma-separated block strings")
    predict.add_argument("--table", required=True, help="latency table JSON (e.g. latency_tables/pixel1-spnas.json)")
    predict.add_argument("--predictor", help="fitted regression (from 'mobilekit latency fit'); fitted on the table "
                                             "when omitted")
    predict.add_argument("--json", action="store_true", help="print one JSON object")
    predict.set_defaults(func=run_predict)

    fit = commands.add_parser(
        "fit", help="fit the layer regression on a table and report its held-out error",
        description="Fit the per-layer regression on the measured entries of a table, report held-out RMSE and "
                    "MAPE (cross-validated by layer shape) and save it as JSON.")
    fit.add_argument("--table", required=True, help="latency table JSON")
    fit.add_argument("--out", required=True, help="predictor JSON to write")
    fit.add_argument("--model", default="auto", choices=MODEL_CHOICES,
                     help="regression family; auto chooses by held-out error (default auto)")
    fit.add_argument("--cv", type=_positive_int, default=5, help="cross-validation folds (default 5)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the folds and trees (default 0)")
    fit.add_argument("--filled-table", help="also write the table with its unmeasured entries predicted")
    fit.set_defaults(func=run_fit)

    validate = commands.add_parser(
        "validate", help="measure random whole networks on the device and compare with the predictions",
        description="Sample architectures over the table's latency range, export and measure each whole network "
                    "(repeats interleaved), and report the error of lookup and regression next to the device's "
                    "own repeat noise. Writes CSV, scatter PNG and the predictor with its network correction.")
    validate.add_argument("--device", required=True, help="device descriptor (file or name)")
    validate.add_argument("--table", required=True, help="latency table of that device")
    validate.add_argument("--samples", type=int_at_least(2), default=100, help="networks (default 100, at least 2)")
    validate.add_argument("--repeats", type=_at_least_two, default=2, help="measurements per network (default 2)")
    validate.add_argument("--runs", type=_positive_int, default=30, help="timed inferences per measurement "
                                                                         "(default 30)")
    validate.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    validate.add_argument("--predictor", help="fitted regression to validate (default: fitted on the table)")
    validate.add_argument("--out", help="folder for models, validation.csv/.png/.json and predictor.json")
    validate.add_argument("--no-progress", action="store_true", help="no progress bars")
    validate.set_defaults(func=run_validate)

    adapt = commands.add_parser(
        "adapt", help="a new device's table from a reference table plus a few measured entries",
        description="Measure only the --budget entries that best pin down the new device (the stem, the head and "
                    "layers chosen from the reference) and predict the rest by a map learned from the reference "
                    "table; predicted entries are marked predicted.")
    adapt.add_argument("--reference", required=True, help="latency table of a reference device")
    adapt.add_argument("--device", required=True, help="descriptor of the new device (TOML)")
    adapt.add_argument("--budget", type=_positive_int, default=20, help="entries to measure (default 20)")
    adapt.add_argument("--out", required=True, help="table to write for the new device")
    adapt.add_argument("--runs", type=_positive_int, default=None, help="timed runs per entry (default: the device's)")
    adapt.add_argument("--repeats", type=_positive_int, default=3, help="interleaved rounds (default 3)")
    adapt.add_argument("--work-dir", default=None, help="model-file cache (default ~/.cache/mobilekit/model-files)")
    adapt.add_argument("--no-progress", action="store_true", help="no progress bars")
    adapt.set_defaults(func=run_adapt)

    published = commands.add_parser(
        "published", help="evaluate the regression on published phone tables",
        description="Fit the regression on part of the published Pixel 1 / Note10 layers and predict the rest.")
    published.add_argument("--data", required=True, help="folder with the published tables (shared/latency)")
    published.add_argument("--model", default="auto", choices=MODEL_CHOICES, help="regression family (default auto)")
    published.add_argument("--json", action="store_true", help="print one JSON object")
    published.set_defaults(func=run_published)


_positive_int = positive_int
_at_least_two = int_at_least(2, " (the repeat noise compares two)")


def _input(path: str | None, option: str, missing: str = "no such file") -> None:
    from mobilekit.validation import check_input_file

    if path is not None:
        check_input_file(path, option, missing=missing)


def _load_predictor(path: str | None, table):
    from mobilekit.errors import TableError
    from mobilekit.latency.regression import LayerLatencyRegressor

    if path is None:
        return LayerLatencyRegressor().fit_table(table)
    predictor = LayerLatencyRegressor.load(path)
    fitted_on = (predictor.table_ or {}).get("device", {}).get("name")
    if fitted_on and table.device.get("name") and fitted_on != table.device["name"]:
        raise TableError(f"{path} was fitted on a table of device {fitted_on!r}, but {table.path} is of device "
                         f"{table.device['name']!r}; fit it on this table with 'mobilekit latency fit'")
    return predictor


def run_predict(args: argparse.Namespace) -> int:
    from mobilekit.errors import TableError
    from mobilekit.latency.lookup import LookupPredictor
    from mobilekit.latency_table import LatencyTable
    from mobilekit.space import read_architecture

    _input(args.table, "--table", "no such latency table")
    _input(args.predictor, "--predictor", "no such predictor file; make one with 'mobilekit latency fit'")
    table = LatencyTable.load(args.table)
    arch = read_architecture(args.arch, string_space=table.search_space())  # a file keeps its own space
    predictor = _load_predictor(args.predictor, table)

    lookup = LookupPredictor().fit(table)
    lookup_ms, lookup_note, lookup_layers = None, None, {}
    try:
        lookup_ms = float(lookup.predict(arch)[0])
        lookup_layers = {index: ms for index, _, ms in lookup.predict_layers(arch)}
    except TableError as exc:
        lookup_note = str(exc)
    regression_ms = float(predictor.predict_network(arch)[0])
    layer_sum_ms = float(predictor.predict_network(arch, corrected=False)[0])
    heldout = predictor.heldout_ or {}
    result = {
        "architecture": arch.to_string(),
        "space": arch.space.describe(),
        "table": str(table.path),
        "device": table.device.get("name"),
        "lookup_ms": lookup_ms,
        "regression_ms": regression_ms,
        "regression_layer_sum_ms": layer_sum_ms,
        "fixed_ms": predictor.fixed_ms(arch.space),
        "regression_model": predictor.model_,
        "regression_heldout": {k: heldout[k] for k in ("rmse_ms", "mape_pct") if k in heldout},
        "network_correction": {"scale": predictor.network_scale_, "overhead_ms": predictor.network_overhead_ms_,
                               "n_networks": predictor.network_n_},
        "layers": [{"position": index, "type": name, "lookup_ms": lookup_layers.get(index), "regression_ms": ms}
                   for index, name, ms in predictor.predict_layers(arch)],
    }
    if lookup_note:
        result["lookup_note"] = lookup_note
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    space = arch.space
    print(f"architecture   {result['architecture']}")
    print(f"space          {space.name}, width {space.width:g}, {space.resolution} px")
    print(f"table          {table.path} ({table.device.get('name', '?')}, {table.device.get('runtime', '?')})")
    print(f"lookup_ms      {significant(lookup_ms)}" if lookup_ms is not None else f"lookup_ms      n/a ({lookup_note})")
    detail = f"{predictor.model_}"
    if heldout:
        detail += f"; held-out layer error RMSE {significant(heldout['rmse_ms'])} ms, MAPE {heldout['mape_pct']:.2f} %"
    if predictor.network_n_:
        detail += (f"; network correction x{predictor.network_scale_:.4f} {predictor.network_overhead_ms_:+.3f} ms "
                   f"from {predictor.network_n_} measured networks")
    print(f"regression_ms  {regression_ms:.3f}  ({detail})")
    if args.predictor is None:
        print("(regression fitted on the table now; save it once with 'mobilekit latency fit' and pass --predictor)")
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from mobilekit.latency.metrics import format_metrics_header, format_metrics_row
    from mobilekit.latency.regression import LayerLatencyRegressor
    from mobilekit.latency_table import LatencyTable
    from mobilekit.validation import check_output_file

    from mobilekit import safewrite
    from mobilekit.jsonio import json_field_is
    from mobilekit.latency.regression import FORMAT
    from mobilekit.latency_table import is_table_file

    _input(args.table, "--table", "no such latency table")
    check_output_file(args.out, "--out")
    # both outputs claimed before fitting: a refused --filled-table must not leave a new --out behind
    safewrite.claim(args.out, recognise=lambda p: json_field_is(p, "format", FORMAT), option="--out")
    if args.filled_table:
        check_output_file(args.filled_table, "--filled-table")
        safewrite.claim(args.filled_table, recognise=is_table_file, option="--filled-table")
    table = LatencyTable.load(args.table)
    predictor = LayerLatencyRegressor(model=args.model, cv=args.cv, random_state=args.seed).fit_table(table)
    print(f"fitted on {predictor.n_train_} measured layer entries of {table.path} "
          f"({table.device.get('name', '?')}, {table.device.get('runtime', '?')})")
    if predictor.cv_scores_:
        print(format_metrics_header(f"held-out, {args.cv}-fold by layer shape", 34))
        for kind, scores in predictor.cv_scores_.items():
            print(format_metrics_row(("* " if kind == predictor.model_ else "  ") + kind, scores, 34))
        heldout = predictor.heldout_
        print(f"chosen: {predictor.model_}: held-out RMSE {significant(heldout['rmse_ms'])} ms, "
              f"MAPE {heldout['mape_pct']:.2f} %")
    else:
        print(f"model {predictor.model_}; no held-out error (--cv 1)")
    print(f"wrote {predictor.save(args.out)}")
    if args.filled_table:
        filled = predictor.fill_table(table)
        count = sum(1 for _, _, e in filled.iter_entries() if e.get("note") == "regression")
        print(f"wrote {filled.save(args.filled_table)} ({count} entries predicted by the regression)")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from mobilekit.errors import TableError
    from mobilekit.latency.validate import validate_predictor
    from mobilekit.profile.devices import load_device
    from mobilekit.profile.runners import open_runner
    from mobilekit.latency_table import LatencyTable
    from mobilekit.validation import check_output_dir

    _input(args.table, "--table", "no such latency table")
    _input(args.predictor, "--predictor", "no such predictor file; make one with 'mobilekit latency fit'")
    if args.out:
        from mobilekit.latency.validate import claim_report_files

        check_output_dir(args.out, "--out")
        claim_report_files(args.out)  # a user's file or a symlink: refused before an hour of measuring
    table = LatencyTable.load(args.table)
    descriptor = load_device(args.device)
    table_runtime = table.device.get("runtime")
    if table_runtime and table_runtime != descriptor.runtime:
        raise TableError(f"{table.path} was measured with {table_runtime}, device {descriptor.name!r} runs "
                         f"{descriptor.runtime}; validate a table against the device and runtime it came from")
    predictor = _load_predictor(args.predictor, table)
    from mobilekit.profile.protocol import ProtocolSession, compare_with_table

    with open_runner(descriptor) as runner:
        session = ProtocolSession.start(runner)  # the table's protocol: same cores, governor; checked after
        try:
            report = validate_predictor(runner, table, samples=args.samples, repeats=args.repeats, seed=args.seed,
                                        out_dir=args.out, progress=not args.no_progress, predictor=predictor,
                                        runs=args.runs)
        finally:
            session.finish()
    print(report.format())
    print(session.summary())
    for difference in compare_with_table(session, table.settings):
        print(f"protocol differs from the table's: {difference}")
    return 0


def run_adapt(args: argparse.Namespace) -> int:
    from mobilekit.latency.adapt import adapt_table
    from mobilekit.latency_table import LatencyTable
    from mobilekit.profile.devices import load_device
    from mobilekit.profile.runners import open_runner

    from mobilekit.validation import check_output_dir, check_output_file

    from mobilekit import safewrite
    from mobilekit.latency_table import is_table_file

    check_output_file(args.out, "--out")
    safewrite.claim(args.out, recognise=is_table_file)  # a user's file or a symlink: refused before the device
    if args.work_dir is not None:
        check_output_dir(args.work_dir, "--work-dir")
    else:
        from mobilekit.profile.model_files import default_work_dir

        default_work_dir()  # a cache folder that is a file or read-only: one line before any device is touched
    reference = LatencyTable.load(args.reference)
    descriptor = load_device(args.device)
    with open_runner(descriptor) as runner:
        table, mapping = adapt_table(reference, runner, args.out, budget=args.budget,
                                     runs=args.runs or descriptor.runs, repeats=args.repeats,
                                     work_dir=args.work_dir, progress=not args.no_progress)
    predicted = sum(1 for _, _, e in table.iter_entries() if e.get("predicted"))
    measured = sum(1 for _, _, e in table.iter_entries() if e.get("measured")) + len(table.fixed)
    print(f"wrote {args.out}: {measured} entries measured on {descriptor.name}, {predicted} predicted from "
          f"{args.reference} by a {mapping.family_} map (leave-one-out MAPE "
          f"{mapping.loo_mape_.get(mapping.family_, float('nan')):.1f}% on the measured layers)")
    return 0


def run_published(args: argparse.Namespace) -> int:
    from mobilekit.latency.published_eval import evaluate_published
    from mobilekit.validation import check_input_dir

    check_input_dir(args.data, "--data")
    evaluation = evaluate_published(args.data, model=args.model)
    print(json.dumps(evaluation.to_dict(), indent=1) if args.json else evaluation.format())
    return 0
