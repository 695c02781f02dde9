"""What one comparison runs: :class:`CompareSettings` (validated once, stored in the output folder as
``compare.json`` so a rerun resumes only with the same settings; variants may be added on a rerun, but a variant
name keeps its definition)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mobilekit.compare.variants import Variant, parse_variants
from mobilekit.defaults import DEFAULT_DATA
from mobilekit.errors import ConfigError

DEFAULT_METHODS = ("single-path", "random", "multipath")
PROTOCOL = "random-protocol"       # the row name of the paper's random-search protocol
DEPTH_MATCHED = "depth-matched"     # rows "depth-matched:METHOD": random networks with METHOD's skipped-layer counts
# Settings that may change between a comparison and its rerun: they add or drop cells, not change finished ones.
RESUME_FREE = frozenset({"out", "methods", "seeds", "protocol_samples", "threads", "depth_matched", "reference"})
# Settings added since the first comparisons: a stored compare.json without them holds these defaults (what those
# comparisons ran).
ADDED_DEFAULTS: dict[str, Any] = {"variants": {}, "recipe": "legacy", "depth_matched": 0, "reference": None}


@dataclass
class CompareSettings:
    """Everything that defines a comparison. Latencies in ms, budgets in passes over the train split (epochs).

    ``seeds``: how many seeds (0 .. seeds-1) each method runs with; ``protocol_samples``: how many random
    architectures in [0.95 T, T] the random-search protocol trains with the fixed recipe (0: no protocol row).
    ``search_keys``: further search settings (flat :class:`~mobilekit.search.SearchConfig` keys) for every method.
    ``variants``: method variants (:mod:`mobilekit.compare.variants`) by name; ``methods`` may name them. Given as
    ``NAME=METHOD:KEY=VALUE`` strings, stored forms or :class:`~mobilekit.compare.variants.Variant` objects.
    ``retrain_epochs`` 0: no fixed-recipe retraining (the deliverable only; needs ``protocol_samples`` 0).
    ``recipe``: the fixed retraining recipe (:data:`mobilekit.compare.retrain.RECIPES`: standard or legacy).
    ``depth_matched``: random networks per found network with its number of skipped layers in [0.95 T, T]
    (:mod:`mobilekit.compare.protocols`; 0: no depth-matched rows). ``reference``: a hand-designed network
    (:data:`mobilekit.compare.protocols.REFERENCES`, e.g. mnasnet-b1) trained with the recipe once per seed, or None.
    """

    table: str
    target_ms: float
    out: str
    data: str = DEFAULT_DATA
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: int = 5
    budget_epochs: int = 8
    final_share: float = 0.5
    retrain_epochs: int = 4
    protocol_samples: int = 10
    train_subset: int | None = None
    train_resolution: int = 32
    batch_size: int = 64
    steps_per_epoch: int | None = None
    threads: int = 1
    search_keys: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, Variant] = field(default_factory=dict)
    recipe: str = "legacy"
    depth_matched: int = 0
    reference: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            self.methods = tuple(m.strip() for m in self.methods.split(",") if m.strip())
        self.methods = tuple(self.methods)
        self.variants = parse_variants(self.variants)
        self.validate()

    def resolve(self, name: str) -> tuple[str, dict[str, Any]]:
        """(registered method, option overrides) that the ``methods`` entry ``name`` runs."""
        variant = self.variants.get(name)
        return (name, {}) if variant is None else (variant.method, dict(variant.options))

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(bool(self.table), "--table is required (a latency table JSON)")
        need(bool(self.out), "--out is required (the comparison's folder)")
        need(self.target_ms > 0, f"--target-ms must be > 0, got {self.target_ms:g}")
        need(len(self.methods) >= 1, "--methods needs at least one method (e.g. single-path,random,multipath)")
        need(PROTOCOL not in self.methods, f"{PROTOCOL} is not a search method: it is the row --protocol-samples adds")
        need(len(set(self.methods)) == len(self.methods), f"--methods names a method twice: {','.join(self.methods)}")
        need(1 <= self.seeds <= 1000, f"--seeds must be 1 to 1000, got {self.seeds}")
        need(2 <= self.budget_epochs <= 100_000,
             f"--budget must be 2 to 100000 epochs (search + final), got {self.budget_epochs}")
        need(0 <= self.retrain_epochs <= 100_000,
             f"--retrain-epochs must be 0 to 100000 (0: no retraining), got {self.retrain_epochs}")
        need(0 <= self.protocol_samples <= 10_000, f"--protocol-samples must be 0 to 10000, got {self.protocol_samples}")
        need(self.retrain_epochs > 0 or self.protocol_samples == 0,
             f"--retrain-epochs 0 leaves the random-search protocol's {self.protocol_samples} architectures "
             "untrained; add --protocol-samples 0 or retrain for 1 or more epochs")
        need(self.train_subset is None or self.train_subset >= 1, "--train-subset must be >= 1")
        need(self.steps_per_epoch is None or self.steps_per_epoch >= 1, "--steps-per-epoch must be >= 1")
        need(1 <= self.threads <= 4096, f"--threads must be 1 to 4096, got {self.threads}")
        need(32 <= self.train_resolution <= 2048,
             f"--train-resolution must be 32 to 2048, got {self.train_resolution}")
        from mobilekit.compare.protocols import REFERENCES
        from mobilekit.compare.retrain import RECIPES

        if self.reference in ("", "none"):
            self.reference = None
        need(self.recipe in RECIPES, f"--recipe {self.recipe!r} is unknown; use one of {', '.join(RECIPES)}")
        need(self.depth_matched >= 0, f"--depth-matched must be >= 0, got {self.depth_matched}")
        need(self.reference is None or self.reference in REFERENCES,
             f"--reference {self.reference!r} is unknown; use one of {', '.join(REFERENCES)} or none")
        need(self.retrain_epochs > 0 or (self.depth_matched == 0 and self.reference is None),
             "--retrain-epochs 0 leaves the depth-matched and reference networks untrained; add --depth-matched 0 "
             "--reference none or retrain for 1 or more epochs")
        need(not any(m.startswith(DEPTH_MATCHED) for m in self.methods) and self.reference not in self.methods,
             f"{DEPTH_MATCHED} and reference rows are added by --depth-matched / --reference, not --methods")
        reserved = {"table", "target_ms", "out", "method", "data", "seed", "resume", "train_subset", "epochs",
                    "final_epochs", "threads"} & set(self.search_keys)
        need(not reserved, f"search settings {sorted(reserved)} are set by the comparison itself; drop them")
        self._validate_methods()

    def _validate_methods(self) -> None:
        from mobilekit.compare.budget import method_settings
        from mobilekit.search.registry import METHODS

        for name in self.methods:
            if name not in METHODS and name not in self.variants:
                raise ConfigError(f"--methods: method {name!r} is unknown; use one of {', '.join(METHODS)}, or a "
                                  f"variant defined with --variant {name}=METHOD:KEY=VALUE")
        for name, variant in self.variants.items():
            if name not in self.methods:
                raise ConfigError(f"--variant {name}: the variant is not in --methods; add {name} to --methods or "
                                  "drop the --variant")
            owned = sorted(set(method_settings(variant.method, self.budget_epochs, self.final_share)[0])
                           & set(variant.options))
            if owned:
                raise ConfigError(f"--variant {name}: {', '.join(owned)} {'is' if len(owned) == 1 else 'are'} set by "
                                  f"{variant.method}'s budget rule (the same budget for every method); drop it from "
                                  "the variant")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["methods"] = list(self.methods)
        data["variants"] = {name: variant.to_dict() for name, variant in sorted(self.variants.items())}
        return data
