"""Search settings: one :class:`SearchConfig`, read from a TOML recipe (``search/*.toml``) and overridden by
command-line flags. Recipe keys are the field names (``target_ms``, ``final_epochs``; dashes work too)."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilekit.errors import ConfigError
from mobilekit.latency.runtime_loss import RELAX_MODES

METHODS = ("single-path", "random", "multipath")
FINAL_INIT = ("inherit", "scratch")

# Fields that may change between a run and its --resume (they do not change what is computed).
RESUME_FREE = frozenset({"out", "resume", "device", "export", "measure_runs", "threads"})


@dataclass
class SearchConfig:
    """Everything that defines one search run. Latencies in ms, durations in epochs."""

    table: str = ""
    target_ms: float = 0.0
    out: str = ""
    method: str = "single-path"
    data: str = "digits"
    train_subset: int | None = None          # train on this many training images (stratified, seeded); None = all
    epochs: int = 8
    final_epochs: int | None = None          # default: ``epochs``
    final_init: str = "inherit"              # inherit the search weights, or train the derived net from scratch
    relax: str = "sigmoid"
    seed: int = 0
    train_resolution: int = 32
    batch_size: int = 64
    steps_per_epoch: int | None = None       # cap on batches per epoch (quick tries); None = whole split
    lr: float = 3e-3                         # weights (Adam)
    threshold_lr: float = 0.003              # single-path thresholds (SGD + momentum on normalised gradients)
    threshold_momentum: float = 0.9          # SGD momentum of the thresholds
    threshold_init: float = 0.9              # initial thresholds (statistics start at 1: every subset on)
    threshold_reach: float = 0.25            # a threshold stays at most this far above its statistic
    arch_lr: float = 0.05                    # multipath architecture weights
    lambda_init: float = 0.0                 # weight of log R in CE + lambda * log R (its integral part)
    lambda_lr: float = 0.1                   # integral gain steering lambda toward the aim (see budget.steer_lambda)
    lambda_p: float = 8.0                    # proportional gain; both 0 keep lambda fixed (the paper's setting)
    target_aim: float = 0.95                 # the search steers R toward target_aim * target_ms
    tau_start: float = 1.0                   # temperature of the single-path softmax relaxation, annealed ...
    tau_end: float = 0.1                     # ... geometrically to this
    gumbel_tau_start: float = 5.0            # multipath Gumbel-softmax temperature (FBNet starts at 5) ...
    gumbel_tau_end: float = 1.0              # ... annealed to this
    subset_dropout: float = 0.1              # single-path: drop weight subsets with this probability ...
    subset_dropout_epochs: int | None = None  # ... during the first epochs (default: a quarter of them)
    include_se: bool | None = None           # None: SE types searched iff the table has them (or se_factors)
    se_factors: str | None = None            # a table with SE entries to scale this table's non-SE ones
    arch_warmup_epochs: int | None = None    # multipath: weight-only epochs first (default: a quarter of them)
    random_samples: int = 4                  # random baseline: architectures tried ...
    proxy_epochs: int | None = None          # ... each trained this long (default: epochs // random_samples)
    device: str | None = None                # device descriptor to measure the exported model on
    export: tuple[str, ...] = ("onnx", "tflite")
    measure_runs: int = 50
    checkpoint_every: int = 20               # steps between checkpoints (and at every epoch end)
    resume: bool = False                     # continue the run in ``out`` from its checkpoint
    threads: int | None = None               # torch CPU threads; None: half the cores (at least 1)

    def __post_init__(self) -> None:
        self.validate()

    # ---- derived values -----------------------------------------------------------------------------------
    @property
    def final_epochs_(self) -> int:
        return self.epochs if self.final_epochs is None else self.final_epochs

    @property
    def subset_dropout_epochs_(self) -> int:
        return max(1, self.epochs // 4) if self.subset_dropout_epochs is None else self.subset_dropout_epochs

    @property
    def arch_warmup_epochs_(self) -> int:
        return self.epochs // 4 if self.arch_warmup_epochs is None else self.arch_warmup_epochs

    @property
    def proxy_epochs_(self) -> int:
        return max(1, self.epochs // self.random_samples) if self.proxy_epochs is None else self.proxy_epochs

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.method in METHODS, f"method {self.method!r} is unknown: use one of {', '.join(METHODS)}")
        need(self.relax in RELAX_MODES, f"relax {self.relax!r} is unknown: use one of {', '.join(RELAX_MODES)}")
        need(self.final_init in FINAL_INIT, f"final_init {self.final_init!r} is unknown: use inherit or scratch")
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.final_epochs is None or self.final_epochs >= 0, "final_epochs must be >= 0")
        need(self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}")
        need(self.train_resolution >= 32, f"train_resolution {self.train_resolution} is too small: the network "
                                          "downsamples by 32, use >= 32")
        need(self.steps_per_epoch is None or self.steps_per_epoch >= 1, "steps_per_epoch must be >= 1")
        need(0 < self.target_aim <= 1, "target_aim must be in (0, 1]")
        need(0 <= self.subset_dropout < 1, "subset_dropout must be in [0, 1)")
        need(self.random_samples >= 1, "random_samples must be >= 1")
        need(min(self.tau_start, self.tau_end, self.gumbel_tau_start, self.gumbel_tau_end) > 0,
             "temperatures (tau_start, tau_end, gumbel_tau_start, gumbel_tau_end) must be > 0")
        need(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        need(self.threads is None or self.threads >= 1, "threads must be >= 1")
        need(self.threshold_reach > 0, "threshold_reach must be > 0")
        need(0 <= self.threshold_momentum < 1, "threshold_momentum must be in [0, 1)")
        unknown = set(self.export) - {"onnx", "tflite"}
        need(not unknown, f"export formats {sorted(unknown)} are unknown: use onnx, tflite, or none")

    # ---- I/O ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["export"] = list(self.export)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "SearchConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        clean: dict[str, Any] = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in names:
                raise ConfigError(f"{source}: unknown key {key!r}; known keys: {', '.join(sorted(names))}")
            clean[name] = value
        if "export" in clean:
            clean["export"] = _formats(clean["export"])
        try:
            return cls(**clean)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def _formats(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    value = tuple(str(v) for v in value)
    return () if value in ((), ("none",)) else value


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a TOML recipe into a dict of config keys (``[search]`` table or top level)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such recipe; the repository ships some in search/") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    section = data.get("search", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [search] must be a table of settings")
    base = path.parent
    for key in ("table", "se_factors", "se-factors"):
        value = section.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute() and not Path(value).exists():
            # relative to the recipe's folder's parent (recipes live in search/, paths name the repo root)
            for root in (base, base.parent):
                if (root / value).exists():
                    section[key] = str(root / value)
                    break
    return dict(section)


def make_config(recipe: str | Path | None = None, **overrides: Any) -> SearchConfig:
    """A config from a recipe (optional) with ``overrides`` (None values are ignored) on top."""
    data: dict[str, Any] = load_recipe(recipe) if recipe else {}
    data.update({k.replace("-", "_"): v for k, v in overrides.items() if v is not None})
    source = str(recipe) if recipe else "settings"
    config = SearchConfig.from_dict(data, source)
    missing = [name for name in ("table", "out") if not getattr(config, name)]
    if missing or config.target_ms <= 0:
        what = ", ".join(missing + ([] if config.target_ms > 0 else ["target_ms"]))
        raise ConfigError(f"{source}: missing {what}; give them as flags (--table, --target-ms, --out) or in the recipe")
    return config
