"""Stage 6: tuning the search itself (Single-Path NAS, Sec. VII): each trial is one whole search, scored by
eq. 19, run by Optuna on one machine or many.

Modules, one concept each:

- :mod:`.params`: ``NAME:log|lin|int|cat:...`` parameter specs and ``--set KEY=VALUE`` options.
- :mod:`.objective`: eq. 19, per finished search and per search epoch.
- :mod:`.samplers`: Optuna samplers by name (gp, tpe, random; nsga2, motpe for several objectives).
- :mod:`.pruners`: the epochs fidelity and the successive-halving / Hyperband pruners.
- :mod:`.grid`: the λ x epochs grid and its heat-map (Fig. 9 right).
- :mod:`.multi_objective`: accuracy vs latency studies and their Pareto front.
- :mod:`.outputs`: trials.csv, best.json, the best-objective-over-trials plot (Fig. 9 left).
- :mod:`.storage`: SQLite / shared database / journal file storages, dead-worker detection and retries.
- :mod:`.config`: :class:`TuneConfig`.
- :mod:`.trial`: one trial = one :func:`mobilekit.search.run_search`.
- :mod:`.study`: the study and one worker's share of it.
- :mod:`.workers`: local worker processes and Ray tasks.
- :mod:`.run`: :func:`run_tune`, behind ``mobilekit tune``.
"""

from mobilekit.tune.config import TuneConfig
from mobilekit.tune.objective import reward
from mobilekit.tune.params import ParamSpec, parse_param, parse_set
from mobilekit.tune.pruners import Fidelity, parse_fidelity
from mobilekit.tune.run import run_tune

__all__ = ["Fidelity", "ParamSpec", "TuneConfig", "parse_fidelity", "parse_param", "parse_set", "reward", "run_tune"]
