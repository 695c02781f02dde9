"""The run folder: config, per-step metrics, checkpoints, weights and summary of one search run.

Layout (``runs/NAME/``)::

    config.json        the resolved SearchConfig (recipe + flags)
    metrics.jsonl      one JSON object per step: phase, step, epoch, ce, runtime_ms, lambda, accuracy, arch ...;
                       an epoch's last step also val_accuracy and val_loss (when the phase validates)
    checkpoint.npz     the latest resumable state (written atomically: temp file + rename)
    arch.json          the derived architecture (Architecture.save)
    weights.pt         the trained network's state_dict (torch.save; ``mobilekit export --run`` reads it)
    bundle.json        what the deliverable needs besides them: mean / std, class names in output order,
                       train / deploy resolution, preprocessing recipe, table and device (``run.run_bundle``)
    search.png         CE and R over the search (Single-Path NAS Fig. 5), architecture.png the final network
    exported/          ONNX / TFLite files and their parity checks
    tensorboard/       TensorBoard event files, written once per epoch (``mobilekit.search.board``; off with
                       ``--no-tensorboard``)
    summary.json       method, target_ms, predicted_ms, measured_ms, val/test accuracy, search_s, ...

Checkpoints are ``.npz`` files (tensors, read with ``allow_pickle=False``) plus a JSON metadata blob, so resuming
never unpickles anything.
"""

from __future__ import annotations

import json
import math
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobilekit import safewrite
from mobilekit.errors import SearchError

META_KEY = "__meta__"


# ---- npz state files ----------------------------------------------------------------------------------------------
def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with safewrite.atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)


def save_state(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write tensors and a JSON-able ``meta`` dict to one ``.npz`` file, atomically."""
    path = Path(path)
    arrays = {name: t.detach().cpu().numpy() for name, t in tensors.items()}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    _atomic_savez(path, arrays)
    return path


def load_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_state` (no pickle)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            tensors = {name: torch.from_numpy(data[name].copy()) for name in data.files if name != META_KEY}
            meta = json.loads(data[META_KEY].tobytes().decode()) if META_KEY in data.files else {}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise SearchError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc}); it was cut short or "
                          "damaged: move it away and re-run with --resume to restart the run from scratch, or use "
                          "another --out") from None
    problem = checkpoint_problem(tensors, meta)
    if problem:
        raise damaged_checkpoint(path, problem)
    return tensors, meta


def damaged_checkpoint(path: str | Path, problem: str) -> SearchError:
    """The one-line error for a checkpoint that loads but cannot be what this run saved."""
    return SearchError(f"{path}: damaged checkpoint ({problem}); move it away and re-run with --resume to restart "
                       "the run from scratch, or use another --out")


_PHASE = re.compile(r"(search|final|finetune|proxy-\d+)")


def checkpoint_problem(tensors: dict[str, torch.Tensor], meta: Any) -> str | None:
    """What is wrong with a loaded checkpoint's structure (types, ranges, finiteness of the float tensors), or
    None. Whether the tensors fit the run's modules is checked when they are loaded into them."""
    if not isinstance(meta, dict):
        return "its metadata is not a JSON object"
    if not (isinstance(meta.get("phase"), str) and _PHASE.fullmatch(meta["phase"])):
        return f"phase {meta.get('phase')!r} is not one a run saves"
    for key in ("next_step", "records"):
        value = meta.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{key} {value!r} is not a count"
    elapsed = meta.get("elapsed_s", 0.0)
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not math.isfinite(elapsed) or elapsed < 0:
        return f"elapsed_s {elapsed!r} is not a time in seconds"
    for key in ("optimizers", "schedulers", "state"):
        if not isinstance(meta.get(key, {}), dict):
            return f"{key} is not a JSON object"
    if not all(isinstance(v, dict) and isinstance(v.get("param_groups"), list) and isinstance(v.get("scalars"), dict)
               for v in meta.get("optimizers", {}).values()):
        return "an optimiser's state lacks param_groups or scalars"
    rng = meta.get("rng_numpy")
    if "rng/numpy" in tensors and not (isinstance(rng, list) and len(rng) == 4 and isinstance(rng[0], str)
                                       and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                               for x in rng[1:])):
        return "rng_numpy is not [kind, pos, has_gauss, cached]"
    if not (isinstance(meta.get("rng_python"), list) and len(meta["rng_python"]) == 3):
        return "rng_python is not Python's random state"
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"tensor {name} holds NaN or inf"
    return None


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """A model's ``state_dict`` with ``torch.save`` (what ``mobilekit export --weights`` reads, with
    ``weights_only=True``), written atomically."""
    path = Path(path)
    with safewrite.atomic_open(path, "wb") as handle:
        torch.save(model.state_dict(), handle)
    return path


def pack(modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict, dict]:
    """Flatten modules' and optimisers' state into (tensors, JSON meta) for :func:`save_state`."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"optimizers": {}}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"m/{name}/{key}"] = value
    for name, opt in optimizers.items():
        state = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, values in state["state"].items():
            for key, value in values.items():
                if torch.is_tensor(value):
                    tensors[f"o/{name}/{index}/{key}"] = value
                else:
                    scalars.setdefault(str(index), {})[key] = value
        meta["optimizers"][name] = {"param_groups": state["param_groups"], "scalars": scalars}
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(keys.astype(np.int64))
    meta["rng_numpy"] = [kind, int(pos), int(has_gauss), float(cached)]
    meta["rng_python"] = _jsonable(random.getstate())
    return tensors, meta


def unpack(tensors: dict[str, torch.Tensor], meta: dict[str, Any], modules: dict[str, nn.Module],
           optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Restore what :func:`pack` saved into existing modules and optimisers (and the RNG states).

    Raises:
        RuntimeError, ValueError, KeyError: the checkpoint's networks or optimisers do not fit this run's (saved by
            another mobilekit version or other settings). :meth:`TrainingPhase.restore` turns these into the one
            damaged-checkpoint line, like any other damage found on resume.
    """
    _load_states(tensors, meta, modules, optimizers)
    _restore_rng(tensors, meta)


def _load_states(tensors: dict[str, torch.Tensor], meta: dict[str, Any], modules: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer]) -> None:
    for name, module in modules.items():
        prefix = f"m/{name}/"
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, opt in optimizers.items():
        saved = meta["optimizers"][name]
        state: dict[int, dict[str, Any]] = {}
        prefix = f"o/{name}/"
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, field = key[len(prefix):].split("/", 1)
                state.setdefault(int(index), {})[field] = value
        for index, values in saved["scalars"].items():
            state.setdefault(int(index), {}).update(values)
        opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted((int(k.rsplit("/", 1)[1]), v) for k, v in tensors.items() if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([v for _, v in cuda][:torch.cuda.device_count()])
    if "rng/numpy" in tensors:
        kind, pos, has_gauss, cached = meta["rng_numpy"]
        np.random.set_state((kind, tensors["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_tuples(meta["rng_python"]))


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


# ---- the folder ---------------------------------------------------------------------------------------------------
#: Every file a run (of any method) may write at the top of its folder; checked before the run starts, so a
#: user's file at one of these names is refused at once, not after training (:meth:`RunFolder.claim_outputs`).
OUTPUT_NAMES = ("config.json", "metrics.jsonl", "checkpoint.npz", "arch.json", "weights.pt", "bundle.json",
                "search.png", "architecture.png", "summary.json", "hyperparameters.json", "hyperparameters.png",
                "augment_policy.json", "augment_policy.png", "best_trial.pt", "best_proxy.pt", "evolution.json",
                "tnas_proposals.json", "tnas_proposals.png")


class RunFolder:
    """Paths and small I/O helpers of one run folder (see the module docstring for the layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._count: tuple[int, int] | None = None     # (records, file size) when last counted or written

    def path(self, name: str) -> Path:
        return self.root / name

    def claim_outputs(self) -> None:
        """Refuse (one line) a run folder where a name mobilekit writes is a symlink, not a regular file, or a
        file mobilekit did not write (not in the folder's ``.mobilekit-manifest``).

        Raises:
            safewrite.OutputError
        """
        for name in OUTPUT_NAMES:
            safewrite.claim(self.path(name))

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.npz"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    def write_json(self, name: str, data: Any) -> Path:
        path = self.path(name)
        safewrite.write_text(path, json.dumps(data, indent=2, default=str) + "\n")
        return path

    def read_json(self, name: str) -> Any:
        """A JSON object of the run folder; a missing, damaged or non-object file is one line (SearchError)."""
        from mobilekit.jsonio import read_json

        path = self.path(name)
        fix = "; the run folder is damaged: use another --out for a new run"
        data = read_json(path, SearchError, "missing from the run folder" + fix, fix)
        if not isinstance(data, dict):
            raise SearchError(f"{path}: expected a JSON object, got {type(data).__name__}{fix}")
        return data

    def log(self, record: dict[str, Any]) -> None:
        """Append one metrics record (a line of JSON)."""
        count = self.record_count()
        safewrite.append_line(self.metrics, json.dumps(record))
        self._count = (count + 1, self.metrics.stat().st_size)

    def records(self) -> list[dict[str, Any]]:
        """The metrics records; a damaged ``metrics.jsonl`` (not UTF-8, a line that is not a JSON object) is one
        line (SearchError) naming the file and line, never a traceback."""
        if not self.metrics.exists():
            return []
        fix = "the run folder is damaged: use another --out for a new run"
        try:
            text = self.metrics.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SearchError(f"{self.metrics}: not UTF-8 text; {fix}") from None
        except OSError as exc:
            raise SearchError(f"{self.metrics}: cannot read it ({exc.strerror or exc}); {fix}") from None
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                record = None
            if not isinstance(record, dict):
                raise SearchError(f"{self.metrics}: line {number} is not a JSON object; {fix}")
            records.append(record)
        return records

    def record_count(self) -> int:
        """How many metrics records the folder holds (its non-blank lines). Kept by :meth:`log` and
        :meth:`truncate_metrics` and recounted only when the file's size is not the one they left, so a checkpoint
        does not re-read and parse the whole log (which grows by a record per step)."""
        size = self.metrics.stat().st_size if self.metrics.exists() else 0
        if self._count is None or self._count[1] != size:
            count = 0
            if size:
                with open(self.metrics, "rb") as handle:
                    count = sum(1 for line in handle if line.strip())
            self._count = (count, size)
        return self._count[0]

    def truncate_metrics(self, keep: int) -> None:
        """Keep the first ``keep`` records (those written before the checkpoint a resumed run starts from)."""
        records = self.records()[:keep]
        safewrite.write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in records))
        self._count = (len(records), self.metrics.stat().st_size)

    def save_checkpoint(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        meta = dict(meta, records=self.record_count())
        save_state(self.checkpoint, tensors, meta)

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        return load_state(self.checkpoint) if self.checkpoint.exists() else None
