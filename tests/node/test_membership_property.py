"""Property: a membership answer equals the plain set intersection, on random data.

Both nodes run in this process (real gRPC over mTLS on loopback, real SQLite), so
hypothesis can try many datasets and question lists quickly.
"""
from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import IdType, encode
from node.asker import membership as asker
from node.core.config import load_config
from node.runtime.context import NodeContext
from node.datasets.registration import register
from node.devtools.localnet import Federation
from node.server.serve import NodeServer

PURPOSE = "eligibility-check"


class ListSource:
    """A minimal in-memory source with the adapter interface."""

    def __init__(self, ids: list[str]) -> None:
        self.columns = ["id"]
        self.progress_total = len(ids)
        self._ids = ids

    def __iter__(self):
        from adapters import Row
        for i, v in enumerate(self._ids):
            yield Row(line=i + 2, values={"id": v})

    def progress_position(self) -> int:
        return len(self._ids)

    def fingerprint(self) -> str:
        return "0" * 64


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    fed = Federation(tmp_path_factory.mktemp("prop"))
    fed.add_node("agency", partners=[{"id": "asker"}],
                 datasets=[{"name": "roll", "grants": [{"partner": "asker", "purposes": [PURPOSE]}]}])
    fed.add_node("asker", partners=[{"id": "agency"}])
    agency = NodeContext(load_config(fed.nodes["agency"].config_path))
    server = NodeServer(agency)
    port = server.start()
    fed.set_partner_address("asker", "agency", f"127.0.0.1:{port}")
    client = NodeContext(load_config(fed.nodes["asker"].config_path))
    yield agency, client
    client.close()
    server.stop()


ids = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset=st.sets(ids, min_size=1, max_size=60), asked=st.lists(ids, min_size=1, max_size=60),
       overlap=st.data())
def test_membership_equals_set_intersection(nodes, dataset, asked, overlap):
    agency, client = nodes
    asked = asked + overlap.draw(st.lists(st.sampled_from(sorted(dataset)), max_size=20))
    register(agency, "roll", ListSource(sorted(dataset)), id_column="id", id_type=IdType.CUSTOM,
             source_kind="test", source_label="hypothesis")
    inputs = [encode(IdType.CUSTOM, x) for x in asked]
    result = asker.membership(client, "agency", "roll", PURPOSE, inputs)
    assert list(map(bool, result.matched)) == [x in dataset for x in asked]
