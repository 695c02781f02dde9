"""Fixtures shared by the search tests: a synthetic latency table of the reference space at width 0.35 (small
networks, quick steps) saved once per module, a target halfway through its latency range, and one torch thread
for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""

import pytest
import torch

from _synthetic_tables import SEARCH_WIDTH, synthetic_table
from mobilekit.latency.differentiable import SuperkernelLatency


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    """The synthetic table at ``SEARCH_WIDTH``, as a JSON file."""
    return synthetic_table(width=SEARCH_WIDTH).save(tmp_path_factory.mktemp("tables") / "synthetic.json")


@pytest.fixture(scope="module")
def target(table_path):
    """A latency target (ms) halfway between the table's fastest and slowest network."""
    fastest, slowest = SuperkernelLatency(synthetic_table(width=SEARCH_WIDTH)).bounds_ms()
    return round(fastest + 0.5 * (slowest - fastest), 1)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module: on a small shared CPU, more threads spin against other work (see
    ``mobilekit.search.run.default_threads``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
