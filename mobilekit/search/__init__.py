"""Stage 5: searching an architecture under a latency budget.

Modules, one concept each:

- :mod:`.superkernel`: the single-path superkernel MBConv and supernet (threshold decisions), and the
  extraction of the derived network with the superkernel's weights.
- :mod:`.single_path`: the single-path searcher (CE + lambda * log R, one optimiser step for weights and
  thresholds; relaxations sigmoid / ste / softmax).
- :mod:`.multipath`: the FBNet/ProxylessNAS-style multi-path baseline (Gumbel-softmax, alternating steps,
  expected-latency loss).
- :mod:`.random_search`: the random-search baseline (latency window [0.95 T, T], proxy training).
- :mod:`.budget`: target check, sampling inside a latency window, repair of a result outside [0.9 T, T].
- :mod:`.training`: seeded batches, the resumable phase loop, evaluation, BN re-calibration.
- :mod:`.runfolder`: run-folder files, atomic ``.npz`` checkpoints, metrics JSONL.
- :mod:`.plots`: search curves and the final architecture.
- :mod:`.config`: :class:`SearchConfig` and TOML recipes.
- :mod:`.run`: :func:`run_search`, the whole pipeline behind ``mobilekit search``.
"""

from mobilekit.search.config import SearchConfig, load_recipe, make_config
from mobilekit.search.run import run_search

__all__ = ["SearchConfig", "load_recipe", "make_config", "run_search"]
