"""Stage 5: searching an architecture under a latency budget.

The engine, one concept per module:

- :mod:`.registry`: method name -> the module that implements it (``Options``, ``LATENCY_MODEL``, ``SUMMARY``,
  ``search``); nothing else names a method.
- :mod:`.options`: typed, range-checked option fields from which flags, recipe sections and validation derive.
- :mod:`.config`: :class:`SearchConfig` (common options + the method's options) and TOML recipes.
- :mod:`.outcome`: :class:`SearchOutcome` and the :class:`TrainingHyperparameters` handed to the final training.
- :mod:`.penalty`: the latency penalty ``lambda * log R`` with lambda steered toward the target (or fixed).
- :mod:`.training`: seeded batches (in memory or streamed), the resumable phase loop with ``torch.optim``
  optimisers and schedules, augmentation, evaluation, BN re-calibration.
- :mod:`.engine`: accelerator, mixed precision, channels-last, data parallelism under torchrun.
- :mod:`.depthwise`: the CPU depthwise convolution with a fast weight gradient that ``Engine.place`` swaps in.
- :mod:`.supernets`: superkernel, multi-path and sampled-path supernets (block factories of the one skeleton)
  and :func:`~.supernets.extract_network`.
- :mod:`.budget`: target check, sampling inside a latency window, repair of a result outside [0.9 T, T].
- :mod:`.runfolder`: run-folder files, atomic ``.npz`` checkpoints, metrics JSONL.
- :mod:`.plots`: search curves and the final architecture.
- :mod:`.run`: :func:`run_search`, the whole pipeline behind ``mobilekit search``.
- :mod:`.temporary_weights`: one optimiser step as a function of its hyper-parameters (updates through
  temporary weights, ``torch.func.functional_call``), shared by AutoHAS and DiffAutoML.

The searchers are in :mod:`.methods`, one module per method (helpers that one method uses beside it).
"""

from mobilekit.search.config import SearchConfig, load_recipe, make_config
from mobilekit.search.run import run_search

__all__ = ["SearchConfig", "load_recipe", "make_config", "run_search"]
