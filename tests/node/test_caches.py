"""What a node keeps in memory belongs to its context: two nodes in one process share nothing.

A dataset version id is a row id in one node's database, so two nodes (the tests run
several in one process) both hold a version 1 with different people in it. A cache keyed
by that id alone, kept per process, would answer the second node's query from the first
node's rows.
"""
from __future__ import annotations

import random

import pytest

from adapters import IdType, encode, open_csv, synthetic_resident_id
from node.agency.cardinality import hashed_rows as cardinality_hashes
from node.core.config import load_config
from node.datasets.registration import register
from node.datasets.statistics_rows import hashed_rows, version_columns
from node.datasets.versions import current_version
from node.devtools.localnet import Federation
from node.devtools.synthetic import write_csv
from node.runtime.context import BoundedCache, Claims
from node.runtime.context import NodeContext
from protocols import cardinality as card
from protocols import psi_shuffle as ps


def _node(fed: Federation, node_id: str, seed: int, tmp_path) -> tuple[NodeContext, list[str]]:
    fed.add_node(node_id, partners=[{"id": "fund"}],
                 datasets=[{"name": "roll", "grants": [{"partner": "fund", "purposes": ["p1"]}]}])
    ctx = NodeContext(load_config(fed.nodes[node_id].config_path))
    rng = random.Random(seed)
    people = [synthetic_resident_id(rng) for _ in range(5)]
    path = tmp_path / f"{node_id}.csv"
    write_csv(path, ["sfzh", "district"], [(p, f"{node_id}-{i}") for i, p in enumerate(people)])
    with open_csv(path) as src:
        register(ctx, "roll", src, id_column="sfzh", id_type=IdType.CN_RESIDENT_ID,
                 attributes=["district"], source_kind="csv", source_label=str(path))
    return ctx, people


@pytest.fixture
def two_nodes(tmp_path):
    fed = Federation(tmp_path / "fed")
    (a, a_people), (b, b_people) = _node(fed, "hrss", 1, tmp_path), _node(fed, "edu", 2, tmp_path)
    yield (a, a_people), (b, b_people)
    a.close()
    b.close()


def _version(ctx: NodeContext):
    with ctx.engine.connect() as conn:
        return current_version(conn, "roll")


def test_two_nodes_with_the_same_version_id_each_read_their_own_rows(two_nodes):
    (a, a_people), (b, b_people) = two_nodes
    va, vb = _version(a), _version(b)
    assert va.id == vb.id  # the collision a process-wide cache would hit
    a_ids, b_ids = ([encode(IdType.CN_RESIDENT_ID, p) for p in people] for people in (a_people, b_people))
    cols_a, cols_b = version_columns(a, va), version_columns(b, vb)
    assert sorted(cols_a.ids) == sorted(a_ids) and sorted(cols_b.ids) == sorted(b_ids)
    assert all(v.startswith("edu-") for v in cols_b.attrs["district"])
    assert hashed_rows(b, vb, cols_b) == ps.hash_identifiers(cols_b.ids)
    assert hashed_rows(a, va, cols_a) == ps.hash_identifiers(cols_a.ids)


def test_cardinality_row_hashes_are_per_node(two_nodes):
    (a, a_people), (b, b_people) = two_nodes
    va, vb = _version(a), _version(b)
    a_ids, b_ids = ([encode(IdType.CN_RESIDENT_ID, p) for p in people] for people in (a_people, b_people))
    first = cardinality_hashes(a, va)
    assert cardinality_hashes(b, vb) == card.hash_batch(b_ids)
    assert cardinality_hashes(a, va) == first == card.hash_batch(a_ids)


def test_bulk_elements_are_per_node_and_read_once(two_nodes):
    from node.datasets.bulk_rows import version_elements
    (a, a_people), (b, b_people) = two_nodes
    va, vb = _version(a), _version(b)
    first = version_elements(a, va)
    assert sorted(version_elements(b, vb).tolist()) == sorted(
        encode(IdType.CN_RESIDENT_ID, p) for p in b_people)
    assert sorted(first.tolist()) == sorted(encode(IdType.CN_RESIDENT_ID, p) for p in a_people)
    assert version_elements(a, va) is first  # the next query on the version reads nothing


def test_closing_a_context_drops_what_it_kept(two_nodes):
    (a, _), _ = two_nodes
    version_columns(a, _version(a))
    assert len(a.caches.version_columns) == 1
    a.close()
    assert len(a.caches.version_columns) == 0


def test_a_bounded_cache_keeps_the_most_recently_used():
    cache = BoundedCache("test", keep=2)
    cache.put(1, "one")
    cache.put(2, "two")
    assert cache.get(1) == "one"  # 1 is now the most recently used
    cache.put(3, "three")
    assert (cache.get(1), cache.get(2), cache.get(3)) == ("one", None, "three")
    built = []
    assert cache.get_or_build(4, lambda: built.append(4) or "four") == "four"
    assert cache.get_or_build(4, lambda: built.append(4) or "again") == "four"
    assert built == [4] and "four" not in repr(cache)


def test_a_claimed_job_is_not_claimed_again_until_released():
    claims = Claims()
    assert claims.claim(("roll", 1)) and not claims.claim(("roll", 1))
    claims.release(("roll", 1))
    assert claims.claim(("roll", 1))
