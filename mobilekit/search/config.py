"""Search settings: :class:`SearchConfig` (the options every method shares) plus the chosen method's own options
dataclass (:mod:`.registry`), read from a TOML recipe and overridden by command-line flags.

Recipe layout: ``[search]`` holds the common keys, ``[search.<method>]`` the keys of one method (applied only when
that method runs); a method's keys may also sit in ``[search]``. Keys are the field names (dashes work too).
Every value is type- and range-checked; a mistake is one :class:`~mobilekit.errors.ConfigError` line naming the
recipe file or flag, the field and the fix.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from mobilekit.defaults import DEFAULT_DATA
from mobilekit.errors import ConfigError
from mobilekit.search.options import check_options, option, options_dict
from mobilekit.search.registry import METHODS, get_method

ACCELERATORS = ("auto", "cpu", "cuda")
PRECISIONS = ("off", "bf16", "fp16")
LR_SCHEDULES = ("cosine", "linear", "constant")
OPTIMIZERS = ("adam", "adamw", "sgd")
AUGMENTATIONS = ("none", "flip", "crop-flip")
REQUIRED = ("table", "target_ms", "out")
FLAG_FOR = {"target_ms": "--target-ms"}


@dataclass
class SearchConfig:
    """Everything that defines one search run: the common options below and ``method_options`` (the chosen
    method's ``Options`` instance; its fields read as attributes of the config too, e.g. ``config.relax``).
    Latencies in ms, durations in epochs, learning rates per step."""

    table: str | None = option(None, "latency table JSON (e.g. latency_tables/pixel1-spnas.json)", required=True)
    target_ms: float | None = option(None, "latency target in ms (must lie within the table's range)", gt=0,
                                     required=True)
    out: str | None = option(None, "run folder, e.g. runs/p80", resume_free=True, required=True)
    method: str = option("single-path", "searcher (see the list above)")
    data: str = option(DEFAULT_DATA, "digits (default), fashion-mnist, idx:DIR, cifar10:DIR or folder:DIR (folder "
                                 "images stream from disk)")
    train_subset: int | None = option(None, "train on N training images (stratified, seeded) for quick runs", ge=1,
                                          le=1_000_000_000)
    epochs: int = option(8, "search epochs", ge=1, le=100_000)
    final_epochs: int | None = option(None, "epochs to train the derived network (default: --epochs, or the "
                                            "method's own, 0 for an end-to-end method); 0: the search's own "
                                            "network is the deliverable", ge=0, le=100_000)
    final_init: str = option("inherit", "start the final training from the search weights or from scratch",
                             choices=("inherit", "scratch"))
    seed: int = option(0, "random seed (0 to 2**32-1: numpy and torch both accept it)", ge=0, le=2**32 - 1)
    train_resolution: int | None = option(None, "training input resolution in pixels (the network downsamples by "
                                               "32); default: the latency table's resolution, the one the latency "
                                               "is predicted for and the files are exported at", ge=32, le=2048)
    finetune_epochs: int = option(0, "after training at a --train-resolution smaller than the table's, fine-tune "
                                     "this many epochs at the table's (deployed) resolution so the exported files "
                                     "are not a proxy", ge=0, le=100_000)
    batch_size: int = option(64, "global batch size (split across distributed processes)", ge=2,
                            le=65_536)
    steps_per_epoch: int | None = option(None, "cap on batches per epoch, for quick tries", ge=1,
                                             le=10_000_000)
    lr: float = option(3e-3, "weight learning rate", gt=0)
    lr_schedule: str = option("cosine", "learning-rate schedule (torch.optim.lr_scheduler)", choices=LR_SCHEDULES)
    weight_decay: float = option(0.0, "weight decay of the network weights", ge=0)
    optimizer: str = option("adam", "optimiser of the network weights", choices=OPTIMIZERS)
    augment: str = option("none", "augmentation policy of the training batches", choices=AUGMENTATIONS)
    lambda_init: float = option(0.0, "initial weight lambda of log R in the loss CE + lambda log R",
                                flags=("--lambda",))
    lambda_lr: float = option(0.1, "integral gain steering lambda toward the target", ge=0)
    lambda_p: float = option(8.0, "proportional gain of lambda; both gains 0 keep lambda fixed", ge=0)
    target_aim: float = option(0.95, "the search steers its latency toward target_aim * target_ms", gt=0, le=1)
    include_se: bool | None = option(None, "search SE types: auto (when the table has them or --se-factors is "
                                           "given), on, off", flags=("--se",),
                                     choices={"auto": None, "on": True, "off": False})
    se_factors: str | None = option(None, "table with SE entries whose SE/non-SE ratios fill this table's "
                                          "missing SE types")
    predictor: str | None = option(None, "latency predictor JSON (mobilekit latency fit) that fills the table's "
                                         "unmeasured entries (e.g. SE types) for the search")
    device: str | None = option(None, "device descriptor TOML to measure the exported model on (default: the "
                                      "host when the table was measured on the host)", resume_free=True)
    export: tuple[str, ...] = option(("onnx", "tflite"), "comma-separated export formats (onnx, tflite, tflite-int8), or "
                                     "none; with an int8 table tflite-int8 is added and measured",
                                     resume_free=True)
    score_images: int | None = option(None, "score the exported files on N test images (stratified, seeded) at "
                                            "their resolution; default: the whole test split", ge=1,
                                      resume_free=True)
    measure_runs: int = option(50, "timed runs when measuring the exported model", ge=1, le=100_000,
                              resume_free=True)
    checkpoint_every: int = option(20, "steps between checkpoints (and at every epoch end)", ge=1)
    resume: bool = option(False, "continue the run in --out from its checkpoint", resume_free=True)
    threads: int | None = option(None, "torch CPU threads (default: half the cores, at least 1)", ge=1, le=1024,
                                 resume_free=True)
    accelerator: str = option("auto", "where to train: cpu, cuda, or auto (CUDA when available)",
                              choices=ACCELERATORS, resume_free=True)
    mixed_precision: str = option("off", "autocast precision on CUDA (ignored on the CPU)", choices=PRECISIONS)
    channels_last: str = option("auto", "channels-last memory format: auto (on the CPU, and on CUDA with mixed "
                                        "precision), on, off",
                                choices=("auto", "on", "off"), resume_free=True)
    workers: int = option(2, "data-loader worker processes for streamed data sets (folder:DIR)", ge=0, le=256,
                          resume_free=True)
    tensorboard: bool = option(True, "write TensorBoard event files to OUT/tensorboard/ (watch with tensorboard "
                                     "--logdir OUT); --no-tensorboard: none", resume_free=True)
    method_options: Any = field(default=None, metadata={"internal": True})

    def __post_init__(self) -> None:
        if self.method_options is None:
            self.method_options = get_method(self.method).options()
        self.validate()

    def __getattr__(self, name: str) -> Any:
        # the method's own options read as attributes of the config (config.relax, config.random_samples)
        if name != "method_options" and "method_options" in self.__dict__:
            options = self.__dict__["method_options"]
            if options is not None and name in {f.name for f in fields(options)}:
                return getattr(options, name)
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")

    # ---- derived values -----------------------------------------------------------------------------------------
    @property
    def final_epochs_(self) -> int:
        """``final_epochs`` when given, else the method's own default (``FINAL_EPOCHS``), else ``epochs``."""
        if self.final_epochs is not None:
            return self.final_epochs
        own = get_method(self.method).final_epochs_default
        return self.epochs if own is None else own

    def validate(self, origins: Mapping[str, str] | None = None, source: str = "settings") -> None:
        get_method(self.method, origins.get("method", source) if origins else source)
        if self.export in (("none",), ["none"], "none"):
            self.export = ()
        check_options(self, origins, source, only=common_fields())
        check_options(self.method_options, origins, source)
        unknown = set(self.export) - {"onnx", "tflite", "tflite-int8"}
        if unknown:
            where = (origins or {}).get("export", source)
            raise ConfigError(f"{where}: export formats {sorted(unknown)} are unknown; use onnx, tflite, tflite-int8, "
                              "or none")

    # ---- I/O ----------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able dict: the common options and the method's options (what config.json holds)."""
        return {**options_dict(self, only=common_fields()), **options_dict(self.method_options)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config",
                  origins: Mapping[str, str] | None = None) -> "SearchConfig":
        """A config from flat keys (common and the method's own), checked; :class:`ConfigError` on a mistake."""
        return _build(dict(data), source, dict(origins or {}))


def common_fields() -> list:
    return [f for f in fields(SearchConfig) if not f.metadata.get("internal")]


RESUME_FREE = frozenset(f.name for f in common_fields() if f.metadata.get("resume_free"))


def _build(data: dict[str, Any], source: str, origins: dict[str, str]) -> SearchConfig:
    common = {f.name for f in common_fields()}
    method_name = data.get("method", "single-path")
    if not isinstance(method_name, str):
        raise ConfigError(f"{origins.get('method', source)}: method must be a string, got {method_name!r}")
    method = get_method(method_name, origins.get("method", source))
    own = {f.name for f in fields(method.options)}
    clash = common & own
    if clash:
        raise ConfigError(f"method {method.name!r}: options {sorted(clash)} repeat common option names; rename them")
    common_values, own_values = {}, {}
    for key, value in data.items():
        if key in common:
            common_values[key] = value
        elif key in own:
            own_values[key] = value
        else:
            where = origins.get(key, source)
            owner = next((m.name for m in METHODS.values() if m.name != method.name
                          and key in {f.name for f in fields(m.options)}), None)
            if owner is not None:
                raise ConfigError(f"{where}: {key!r} is a {owner} option, but the method is {method.name}; drop it "
                                  f"or put it under [search.{owner}]")
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(common | own))}")
    missing = [name for name in REQUIRED if common_values.get(name) in (None, "")]
    if missing:
        flags = ", ".join(f"--{m.replace('_', '-')}" for m in missing)
        raise ConfigError(f"{source}: missing {', '.join(missing)}; give them as flags ({flags}) or in the recipe")
    try:
        options = method.options(**own_values)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    config = SearchConfig.__new__(SearchConfig)
    method_defaults = method.common_defaults(common_values)
    for f in common_fields():
        setattr(config, f.name, common_values.get(f.name, method_defaults.get(f.name, f.default)))
    config.method_options = options
    config.validate(origins, source)
    return config


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a TOML recipe: ``{common key: value, ..., "<method>": {method key: value}}`` from its ``[search]``
    table (or the top level); relative table paths are resolved against the recipe's folder or its parent."""
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
    if "search" in data:
        stray = next((key for key in data if key != "search"), None)
        if stray is not None:
            kind = "section" if isinstance(data[stray], dict) else "key"
            name = f"[{stray}]" if kind == "section" else repr(stray)
            raise ConfigError(f"{path}: {kind} {name} is outside [search] and would be ignored; a recipe holds "
                              f"[search] and [search.METHOD] only: move it under [search] or remove it")
    section = {key.replace("-", "_") if not isinstance(value, dict) else key: value for key, value in section.items()}
    base = path.parent
    for key in ("table", "se_factors", "predictor"):
        value = section.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute() and not Path(value).exists():
            # relative to the recipe's folder's parent (recipes live in search/, paths name the repo root)
            for root in (base, base.parent):
                if (root / value).exists():
                    section[key] = str(root / value)
                    break
    return section


def make_config(recipe: str | Path | None = None, **overrides: Any) -> SearchConfig:
    """A config from a recipe (optional) with flat ``overrides`` (common or method option names; None values are
    ignored) on top. Raises :class:`ConfigError` naming the recipe or ``settings``, the field and the fix."""
    return build_config(recipe, overrides)


def build_config(recipe: str | Path | None, overrides: Mapping[str, Any],
                 override_names: Mapping[str, str] | None = None) -> SearchConfig:
    """:func:`make_config` with ``override_names`` (field -> how the user wrote it, e.g. ``--target-ms``) so that
    messages about an overridden value name the flag."""
    source = str(recipe) if recipe else "settings"
    sections = load_recipe(recipe) if recipe else {}
    overrides = {k.replace("-", "_"): v for k, v in overrides.items() if v is not None}
    method = overrides.get("method", sections.get("method", "single-path"))
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for key, value in sections.items():
        if isinstance(value, dict):
            if key not in METHODS:
                raise ConfigError(f"{source}: section [search.{key}] names no method; use one of "
                                  f"{', '.join(f'[search.{m}]' for m in METHODS)}")
            if key != method:
                _check_idle_section(key, value, source)  # its keys are not applied, but a typo is still one
                continue
            for inner, inner_value in value.items():
                data[inner.replace("-", "_")] = inner_value
                origins[inner.replace("-", "_")] = f"{source} [search.{key}]"
        else:
            data[key] = value
            origins[key] = source
    for key, value in overrides.items():
        data[key] = value
        origins[key] = (override_names or {}).get(key, "settings")
    return SearchConfig.from_dict(data, source, origins)


def _check_idle_section(name: str, values: Mapping[str, Any], source: str) -> None:
    """Check the ``[search.NAME]`` section of a method that does not run in this search: each key must be an
    option of that method, with a value of the right type and range, so a recipe that switches methods later
    works and a typo is found now. Raises :class:`ConfigError` naming the section and key."""

    method = METHODS[name]
    own = {f.name: f for f in fields(method.options)}
    given = {key.replace("-", "_"): value for key, value in values.items()}
    where = f"{source} [search.{name}]"
    for key, value in given.items():
        if key not in own:
            raise ConfigError(f"{where}: unknown key {key!r} for method {name} (its options: "
                              f"{', '.join(sorted(own)) or 'none'}); fix the name or remove it")
    try:
        options = method.options(**given)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    check_options(options, {key: where for key in given}, where, only=[own[key] for key in given])
