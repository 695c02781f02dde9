"""Former name of :mod:`mobilekit.latency.differentiable` (it holds latency models, not a loss, and "runtime"
means an inference engine elsewhere). Kept so older imports keep working; new code imports from
:mod:`mobilekit.latency.differentiable`."""

from mobilekit.latency.differentiable import *  # noqa: F401,F403
from mobilekit.latency.differentiable import (  # noqa: F401
    RELAX_MODES, Decisions, ExpectedLatency, SuperkernelGrid, SuperkernelLatency, TableLatency, indicator,
    nested_choice_weights, nested_latency, se_scaling_factors, superkernel_grid,
)

SuperkernelRuntime = SuperkernelLatency
nested_runtime = nested_latency
