"""``mobilekit search``: search an architecture under a latency target, train, export and measure it.

A thin layer over :func:`mobilekit.search.run_search`. Its flags are derived from the option dataclasses: the
common :class:`~mobilekit.search.config.SearchConfig` fields, then one group per registered method
(:mod:`mobilekit.search.registry`). Method modules are imported only when the ``search`` command is parsed, so
other commands stay light. A recipe (``--config search/pixel1-80ms.toml``) holds the same settings; flags given
on the command line override it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any, Mapping

from mobilekit.validation.options import OneLineArgumentParser

CLI_ONLY = ("config", "no_progress")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_option(group, f, type_hints: Mapping[str, Any]) -> None:
    from mobilekit.search.options import _base_types

    meta = f.metadata
    kinds, _ = _base_types(type_hints[f.name])
    flags = tuple(meta.get("flags", ())) + (_flag(f.name),)
    help_text = meta.get("help", "")
    default = f.default if f.default is not None else None
    if default not in (None, "") and not isinstance(default, tuple):
        help_text += f" (default {default})"
    choices = meta.get("choices")
    kwargs: dict[str, Any] = dict(dest=f.name, default=None, help=help_text)
    if isinstance(choices, Mapping):
        kwargs.update(choices=tuple(choices), type=str)
    elif bool in kinds:
        kwargs.update(action=argparse.BooleanOptionalAction if f.name != "resume" else "store_true")
        if f.name == "resume":
            kwargs["default"] = None
    else:
        if choices is not None:
            kwargs["choices"] = tuple(choices)
        kinds = tuple(k for k in kinds if k is not tuple)
        kwargs["type"] = kinds[0] if kinds and kinds[0] in (int, float) else str
    group.add_argument(*flags, **kwargs)


class SearchParser(OneLineArgumentParser):
    """The ``search`` sub-command's parser: adds the method groups on first use (parsing or help)."""

    _methods_added = False

    def _add_methods(self) -> None:
        if self._methods_added:
            return
        self._methods_added = True
        import typing

        from mobilekit.search.registry import METHODS

        seen = {a.dest for a in self._actions}
        lines = []
        for method in METHODS.values():
            module = method.load()
            lines.append(f"  {method.name:<12} {module.SUMMARY}")
            group = self.add_argument_group(f"{method.name} options",
                                            f"recipe section [search.{method.name}]; only with --method {method.name}")
            hints = typing.get_type_hints(module.Options)
            for f in fields(module.Options):
                if f.name not in seen:
                    seen.add(f.name)
                    _add_option(group, f, hints)
        self.description = (self.description or "") + "\n\nmethods (--method):\n" + "\n".join(lines)
        self.set_defaults(method_names=tuple(METHODS))

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self._add_methods()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_methods()
        return super().format_help()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search", help="search a network under a latency target (single-path NAS, multipath, random, ...)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search an architecture whose table latency meets --target-ms, train it on --data, export "
                    "ONNX/TFLite and measure it on the table's device when reachable. Results go to --out.\n"
                    "Run data-parallel with: torchrun --nproc_per_node N -m mobilekit search ...")
    parser.__class__ = SearchParser
    parser.add_argument("--config", help="TOML recipe with the same settings (e.g. search/pixel1-80ms.toml): "
                                         "[search] common keys, [search.<method>] per method; flags override it")
    import typing

    from mobilekit.search.config import SearchConfig, common_fields

    hints = typing.get_type_hints(SearchConfig)
    common = parser.add_argument_group("common options", "recipe section [search]")
    for f in common_fields():
        _add_option(common, f, hints)
    parser.add_argument("--no-progress", action="store_true", help="no progress display (a bar on a terminal, one line per epoch elsewhere)")
    parser.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """Flag values given on the command line and how each was spelled (for messages)."""
    from mobilekit.search.config import common_fields
    from mobilekit.search.registry import METHODS

    chosen: dict[str, Any] = {}
    names: dict[str, str] = {}
    option_fields = list(common_fields())
    for method in METHODS.values():
        option_fields += list(fields(method.options))
    for f in option_fields:
        value = getattr(args, f.name, None)
        if value is None or f.name in chosen:
            continue
        choices = f.metadata.get("choices")
        if isinstance(choices, Mapping):
            value = choices[value]
            if value is None:
                continue
        chosen[f.name] = value
        names[f.name] = (f.metadata.get("flags") or (_flag(f.name),))[0]
    return chosen, names


def run(args: argparse.Namespace) -> int:
    from mobilekit.search import run_search
    from mobilekit.search.config import build_config

    overrides, names = _overrides(args)
    config = build_config(args.config, overrides, names)
    try:
        summary = run_search(config, progress=not args.no_progress, log=print)
    except KeyboardInterrupt:
        print(f"mobilekit search: interrupted; the checkpoint in {config.out} keeps the work done: re-run the same "
              "command with --resume to continue", file=sys.stderr)
        return 130
    if summary.get("rank", 0):
        return 0
    measured = summary.get("measured_ms")
    print(f"{summary['method']}: {summary['arch']}")
    head = summary.get("head_correction") or {}
    reprice = (f" (table {summary['predicted_ms_table']:.2f} ms, classifier re-priced for {head['num_classes']} "
               "classes)" if head.get("delta_ms") else "")
    print(f"target {summary['target_ms']:g} ms | predicted {summary['predicted_ms']:.2f} ms{reprice} | measured "
          + (f"{measured:.2f} ms on {summary.get('measured_on')}" if measured is not None else
             f"- ({summary.get('measure_note')})"))
    proxy = " (PROXY: trained at another resolution than the exported files)" if summary.get("accuracy_is_proxy") else ""
    if summary.get("accuracy") is not None:
        score = summary["exported_accuracy"][summary["accuracy_file"]]
        agreement = (f"; top-1 agreement with {score['agreement_with']} {score['agreement']:.1%}"
                     if score.get("agreement") is not None else "")
        print(f"deliverable accuracy {summary['accuracy']:.4f}: {score['file']} on {score['images']} test images at "
              f"{score['resolution']}x{score['resolution']}{agreement}")
    print(f"PyTorch val accuracy {summary['val_accuracy']:.4f} | PyTorch test accuracy {summary['test_accuracy']:.4f} "
          f"at {summary['train_resolution']}x{summary['train_resolution']}{proxy} | search {summary['search_s']:.0f} s | "
          f"{summary['resolution_note']}")
    if summary.get("latency_warning"):
        print(f"warning: {summary['latency_warning']}")
    if summary.get("resolution_warning"):
        print(f"warning: {summary['resolution_warning']}")
    print(f"run folder: {config.out} (summary.json, arch.json, weights.pt, bundle.json, metrics.jsonl, search.png, "
          "architecture.png)")
    if summary.get("export_error"):
        print(f"mobilekit search: export failed: {summary['export_error']}", file=sys.stderr)
        return 1
    return 0
