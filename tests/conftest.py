"""Fixtures shared by the search tests: a synthetic latency table of the reference space at width 0.35 (small
networks, quick steps) saved once per module, and a target halfway through its latency range."""

import pytest

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
