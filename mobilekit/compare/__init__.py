"""Stage 6: comparing searchers at one latency target under the same budget (above :mod:`mobilekit.search`).

- :mod:`.settings`: :class:`CompareSettings`, what one comparison runs.
- :mod:`.variants`: :class:`Variant`, a method with option overrides compared as a row of its own (ablations).
- :mod:`.budget`: what "the same budget" means (training images seen, search + final), each method's settings
  under it, and the forward-only images reported beside it.
- :mod:`.retrain`: the fixed recipe every found architecture is retrained with (architecture quality alone).
- :mod:`.run`: :func:`run_comparison`, resumable cell by cell, calling searches through the public search API.
- :mod:`.report`: mean ± std per method, results.json / .csv / .md and the accuracy-latency plot.
"""

from mobilekit.compare.run import run_comparison
from mobilekit.compare.settings import CompareSettings
from mobilekit.compare.variants import Variant

__all__ = ["CompareSettings", "Variant", "run_comparison"]
