"""Fixtures shared by the search tests: a synthetic latency table of the reference space at width 0.35 (small
networks, quick steps) saved once per module, a target halfway through its latency range; and one torch thread for
the whole test session."""

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


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread in the test process: the tests' networks are tiny, and on a small shared CPU torch's
    default (all cores) spins against whatever else runs, the other test worker or a subprocess a test started
    (measured: a sampler test 3.3 s at one thread, 72.6 s at two with one core busy elsewhere; see also
    ``mobilekit.search.run.default_threads``). Subprocesses the tests start set ``OMP_NUM_THREADS=1`` themselves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
