"""What one comparison runs: :class:`CompareSettings` (validated once, stored in the output folder as
``compare.json`` so a rerun resumes only with the same settings)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mobilekit.errors import ConfigError

DEFAULT_METHODS = ("single-path", "random", "multipath")
PROTOCOL = "random-protocol"       # the row name of the paper's random-search protocol
# Settings that may change between a comparison and its rerun: they add or drop cells, not change finished ones.
RESUME_FREE = frozenset({"out", "methods", "seeds", "protocol_samples", "threads"})


@dataclass
class CompareSettings:
    """Everything that defines a comparison. Latencies in ms, budgets in passes over the train split (epochs).

    ``seeds``: how many seeds (0 .. seeds-1) each method runs with; ``protocol_samples``: how many random
    architectures in [0.95 T, T] the random-search protocol trains with the fixed recipe (0: no protocol row).
    ``search_keys``: further search settings (flat :class:`~mobilekit.search.SearchConfig` keys) for every method.
    """

    table: str
    target_ms: float
    out: str
    data: str = "fashion-mnist"
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

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            self.methods = tuple(m.strip() for m in self.methods.split(",") if m.strip())
        self.methods = tuple(self.methods)
        self.validate()

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
        need(self.seeds >= 1, f"--seeds must be >= 1, got {self.seeds}")
        need(self.budget_epochs >= 2, f"--budget must be >= 2 epochs (search + final), got {self.budget_epochs}")
        need(self.retrain_epochs >= 1, f"--retrain-epochs must be >= 1, got {self.retrain_epochs}")
        need(self.protocol_samples >= 0, f"--protocol-samples must be >= 0, got {self.protocol_samples}")
        need(self.train_subset is None or self.train_subset >= 1, "--train-subset must be >= 1")
        need(self.steps_per_epoch is None or self.steps_per_epoch >= 1, "--steps-per-epoch must be >= 1")
        need(self.threads >= 1, "--threads must be >= 1")
        reserved = {"table", "target_ms", "out", "method", "data", "seed", "resume", "train_subset", "epochs",
                    "final_epochs", "threads"} & set(self.search_keys)
        need(not reserved, f"search settings {sorted(reserved)} are set by the comparison itself; drop them")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["methods"] = list(self.methods)
        return data
