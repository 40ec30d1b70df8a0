"""VOPRF between nodes: the asker detects a wrong key and an inconsistent key.

Both nodes run in this process over real gRPC and mTLS. The agency's key row is
tampered with in its database to play an agency that evaluates with another key than
the one it published, or that shows a different key for the same epoch.
"""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from adapters import IdType, encode
from node.asker import membership as asker
from node.core.config import load_config
from node.runtime.context import NodeContext
from node.datasets.registration import register
from node.keys.workers import key_purpose
from node.devtools.localnet import Federation
from node.server.serve import NodeServer
from protocols import oprf

from .test_membership_property import ListSource

PURPOSE = "eligibility-check"
ROWS = [f"p{i:04d}" for i in range(200)]


def start(tmp_path, verification="sampled", mode="voprf"):
    fed = Federation(tmp_path / "fed")
    fed.add_node("agency", partners=[{"id": "asker"}], datasets=[{
        "name": "roll", "oprf_mode": mode,
        "grants": [{"partner": "asker", "purposes": [PURPOSE]}]}])
    fed.add_node("asker", partners=[{"id": "agency"}])
    agency = NodeContext(load_config(fed.nodes["agency"].config_path))
    register(agency, "roll", ListSource(ROWS), id_column="id", id_type=IdType.CUSTOM,
             source_kind="test", source_label="test")
    server = NodeServer(agency)
    port = server.start()
    fed.set_partner_address("asker", "agency", f"127.0.0.1:{port}")
    import tomllib, tomli_w
    path = fed.nodes["asker"].config_path
    cfg = tomllib.loads(path.read_text())
    cfg["query"] = {"verification": verification, "proof_sample": 8}
    path.write_bytes(tomli_w.dumps(cfg).encode())
    client = NodeContext(load_config(path))
    return server, agency, client


def ask(client, names):
    return asker.membership(client, "agency", "roll", PURPOSE, [encode(IdType.CUSTOM, x) for x in names])


@pytest.mark.parametrize("verification, mode", [("sampled", "voprf"), ("full", "voprf"), ("sampled", "oprf")])
def test_honest_agency_answers_correctly(tmp_path, verification, mode):
    server, agency, client = start(tmp_path, verification, mode)
    try:
        names = ROWS[:30] + [f"q{i}" for i in range(30)]
        assert list(ask(client, names).matched) == [True] * 30 + [False] * 30
    finally:
        client.close()
        server.stop()


def test_evaluating_with_another_key_than_published_is_detected(tmp_path):
    server, agency, client = start(tmp_path)
    try:
        ask(client, ROWS[:5])
        rogue = oprf.OprfSecretKey.generate()
        sealed = agency.kek.seal(rogue.export_secret_bytes(), purpose=key_purpose("roll", "asker", 1))
        with agency.engine.begin() as conn:
            conn.execute(sa.text("UPDATE oprf_keys SET sealed_key = :k"), {"k": sealed})
        with pytest.raises(asker.PartnerError, match="does not verify against its published key"):
            ask(client, ROWS[:5])
    finally:
        client.close()
        server.stop()


def test_a_different_key_for_the_same_epoch_is_refused(tmp_path):
    server, agency, client = start(tmp_path)
    try:
        ask(client, ROWS[:5])
        with agency.engine.begin() as conn:
            conn.execute(sa.text("UPDATE oprf_keys SET public_key = :k"),
                         {"k": oprf.OprfSecretKey.generate().public_key()})
        with pytest.raises(asker.PartnerError, match="inconsistent key"):
            ask(client, ROWS[:5])
    finally:
        client.close()
        server.stop()
