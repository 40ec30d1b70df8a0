"""Cosignatures counted under witnesses' certified keys (witness_pki.py), refusal by refusal.

hrss's log is cosigned by fund and edu, in process: hrss keeps each cosignature with the
witness's key certification, as the push path (GetPublicKey) and the exchange (the
document's "certification") bring them, and the auditor counts the quorum on hrss's
witness record, passed through canonical bytes, against the federation CA alone.
"""
from __future__ import annotations

import copy

import pytest

from node.ledger import canonical
from node.ledger.anchor import current_certification, load_roots
from node.ledger.witness import Witness
from node.ledger.witness_evidence import count_cosignatures, evidence
from node.ledger.witness_gossip import exchange_document, take
from node.ledger.witness_pki import keep_certification

from .helpers import certified, fill, make_ledger, open_engine


@pytest.fixture
def nodes(tmp_path):
    nodes = {n: make_ledger(open_engine(f"sqlite:///{tmp_path / f'{n}.db'}"), n)
             for n in ("fund", "edu", "hrss")}
    fill(nodes["hrss"], 4, partner="fund")
    return nodes


@pytest.fixture
def roots(tmp_path):
    certified(make_ledger(open_engine("sqlite://"), "auditor"), tmp_path / "pki")  # creates the CA
    return tuple(load_roots(tmp_path / "pki" / "ca.pem"))


def wire(doc: dict) -> dict:
    return canonical.parse(canonical.dump(doc))


def pushed(log, witness_ledger) -> None:
    """`witness_ledger` cosigns `log`'s head; `log` keeps it with the witness's certification."""
    head = log.sign_head()
    seen = Witness(witness_ledger).observe(log.node_id, log.public_key, head)
    assert seen.verdict == "cosigned"
    Witness(log).store_cosignature(seen.cosignature, witness_ledger.public_key)
    keep_certification(log.engine, witness_ledger.node_id, witness_ledger.public_key,
                       current_certification(witness_ledger.engine, witness_ledger.public_key))


def quorum(log, roots, **kw):
    return count_cosignatures(wire(evidence(Witness(log))), log.sign_head(), kw.pop("trusted", {}),
                              roots, **kw)


def test_certified_witnesses_count_with_the_ca_alone(nodes, roots, tmp_path):
    fund, edu, hrss = nodes["fund"], nodes["edu"], nodes["hrss"]
    certified(fund, tmp_path / "pki")
    certified(edu, tmp_path / "pki")
    Witness(hrss).observe("edu", edu.public_key, edu.sign_head())  # hrss pins edu's key
    pushed(hrss, fund)
    # edu cosigns hrss's head as a pulling witness, and hands it over in the exchange
    Witness(edu).observe("hrss", hrss.public_key, hrss.sign_head())
    take(Witness(hrss), "edu", wire(exchange_document(Witness(edu), "hrss")))
    assert quorum(hrss, roots) == (2, [])
    assert quorum(hrss, roots, witnesses={"edu"}) == (1, [])
    assert quorum(hrss, ()) == (0, [])  # no CA, no key: nobody is trusted


def test_a_cosignature_without_a_certification_does_not_count(nodes, roots):
    hrss, edu = nodes["hrss"], nodes["edu"]
    pushed(hrss, edu)  # edu never certified its key
    count, problems = quorum(hrss, roots)
    assert count == 0 and "no certification of its ledger key" in problems[0], problems


def test_a_certification_for_another_node_does_not_count(nodes, roots, tmp_path):
    hrss, edu = nodes["hrss"], nodes["edu"]
    certified(edu, tmp_path / "pki", node="fund")  # edu's key, certified as fund's
    pushed(hrss, edu)
    count, problems = quorum(hrss, roots)
    assert count == 0 and "certified for node 'fund', not 'edu'" in problems[0], problems


def test_an_expired_certification_does_not_count(nodes, roots, tmp_path):
    hrss, edu = nodes["hrss"], nodes["edu"]
    certified(edu, tmp_path / "pki", not_after="2025-02-01T00:00:00Z")  # cosigned 2025-03-01
    pushed(hrss, edu)
    count, problems = quorum(hrss, roots)
    assert count == 0 and "expired at 2025-02-01T00:00:00Z" in problems[0], problems


def test_a_certification_from_another_ca_does_not_count(nodes, roots, tmp_path):
    hrss, edu = nodes["hrss"], nodes["edu"]
    certified(edu, tmp_path / "other-pki")
    pushed(hrss, edu)
    count, problems = quorum(hrss, roots)
    assert count == 0 and "does not chain to the given CA" in problems[0], problems


def test_a_certification_of_another_key_swapped_into_the_record_does_not_count(nodes, roots, tmp_path):
    hrss, edu = nodes["hrss"], nodes["edu"]
    certified(edu, tmp_path / "pki")
    pushed(hrss, edu)
    other = make_ledger(open_engine("sqlite://"), "edu")  # a key certified for edu, not the one that cosigned
    record = wire(evidence(Witness(hrss)))
    bad = copy.deepcopy(record)
    bad["witness_certifications"]["edu"] = [certified(other, tmp_path / "pki").to_dict()]
    assert count_cosignatures(record, hrss.sign_head(), {}, roots) == (1, [])
    count, problems = count_cosignatures(bad, hrss.sign_head(), {}, roots)
    assert count == 0 and "does not verify with the key certified for edu" in problems[0], problems
    assert not keep_certification(hrss.engine, "edu", edu.public_key,
                                  current_certification(other.engine, other.public_key))


def test_the_logs_own_cosignature_does_not_count(nodes, roots, tmp_path):
    hrss = nodes["hrss"]
    certified(hrss, tmp_path / "pki")
    head = hrss.sign_head()
    Witness(hrss).keep_cosignature(hrss.signer.cosign(head, head.time))
    keep_certification(hrss.engine, "hrss", hrss.public_key,
                       current_certification(hrss.engine, hrss.public_key))
    count, problems = quorum(hrss, roots)
    assert count == 0 and "a log is not its own witness" in problems[0], problems
    assert quorum(hrss, (), trusted={"hrss": hrss.public_key})[0] == 0  # not even by its key


def test_a_witness_counts_once_however_often_it_cosigned(nodes, roots, tmp_path):
    hrss, edu = nodes["hrss"], nodes["edu"]
    certified(edu, tmp_path / "pki")
    pushed(hrss, edu)
    head = hrss.sign_head()
    # a second cosignature of the same head, at another time, is not even kept
    assert not Witness(hrss).keep_cosignature(edu.signer.cosign(head, "2025-03-01T09:00:00Z"))
    assert len([c for c in wire(evidence(Witness(hrss)))["cosignatures"] if c["witness"] == "edu"]) == 1
    assert quorum(hrss, roots) == (1, [])


def test_an_out_of_band_key_still_counts_without_a_certification(nodes):
    hrss, edu = nodes["hrss"], nodes["edu"]
    pushed(hrss, edu)
    assert quorum(hrss, (), trusted={"edu": edu.public_key}) == (1, [])


def test_the_witness_attaches_its_certification_and_the_log_serves_it_with_its_head(nodes, roots, tmp_path):
    """Over gRPC: edu's Cosign answer carries edu's certification; hrss keeps it and its
    GetTreeHead and witness record serve it with the cosignature."""
    from concurrent import futures

    import grpc

    from node.ledger.anchor import KeyCertification
    from node.ledger.grpc_service import GrpcLogSource, LedgerService, ask_certified_cosignature
    from node.rpc.shuqiao.v1 import ledger_pb2 as pb
    from node.rpc.shuqiao.v1 import ledger_pb2_grpc as pb_grpc
    hrss, edu = nodes["hrss"], nodes["edu"]
    mine = certified(edu, tmp_path / "pki")
    certified(hrss, tmp_path / "pki")
    servers = []
    try:
        channels = {}
        for ledger, caller in ((edu, "hrss"), (hrss, "auditor")):
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
            pb_grpc.add_LedgerServicer_to_server(LedgerService(ledger, lambda ctx, c=caller: c), server)
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            servers.append(server)
            channels[ledger.node_id] = grpc.insecure_channel(f"127.0.0.1:{port}")
        cosignature, attached = ask_certified_cosignature(hrss, channels["edu"])
        assert attached == mine
        Witness(hrss).store_cosignature(cosignature, edu.public_key)
        assert keep_certification(hrss.engine, "edu", edu.public_key, attached)
        served = pb_grpc.LedgerStub(channels["hrss"]).GetTreeHead(pb.GetTreeHeadRequest())
        (c,) = served.cosignatures
        assert c.witness == "edu" and KeyCertification.from_json(c.certification) == mine
        record = GrpcLogSource(channels["hrss"], "hrss").witnessing()
        assert count_cosignatures(record, hrss.sign_head(), {}, roots) == (1, [])
    finally:
        for server in servers:
            server.stop(None)
