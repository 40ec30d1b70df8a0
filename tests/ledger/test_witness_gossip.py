"""Witnesses comparing notes in one process (every document through canonical bytes), and
the offline check of the evidence they keep, with tampered evidence."""
from __future__ import annotations

import copy

import pytest

from node.ledger import canonical
from node.ledger.witness import Witness, WitnessError
from node.ledger.witness_evidence import check_evidence, count_cosignatures, evidence
from node.ledger.witness_gossip import exchange_document, take

from .helpers import fill, make_ledger, open_engine


@pytest.fixture
def nodes(tmp_path):
    return {n: make_ledger(open_engine(f"sqlite:///{tmp_path / f'{n}.db'}"), n) for n in ("fund", "edu", "hrss")}


def wire(doc: dict) -> dict:
    return canonical.parse(canonical.dump(doc))


def test_disjoint_witnesses_find_a_fork_by_comparing_notes(nodes):
    fund, edu, hrss = nodes["fund"], nodes["edu"], nodes["hrss"]
    fill(hrss, 4, partner="fund")
    copy_of_hrss = make_ledger(open_engine("sqlite://"), "hrss")
    copy_of_hrss.signer = hrss.signer  # the same key, another history
    fill(copy_of_hrss, 4, partner="edu")
    assert Witness(fund).observe("hrss", hrss.public_key, hrss.sign_head()).verdict == "cosigned"
    assert Witness(edu).observe("hrss", hrss.public_key, copy_of_hrss.sign_head()).verdict == "cosigned"
    Witness(edu).observe("fund", fund.public_key, fund.sign_head())  # edu pins fund's key
    Witness(fund).observe("edu", edu.public_key, edu.sign_head())
    assert take(Witness(edu), "fund", wire(exchange_document(Witness(fund), "edu"))) == ["fork"]
    assert take(Witness(fund), "edu", wire(exchange_document(Witness(edu), "fund"))) == ["fork"]
    record = wire(evidence(Witness(fund)))
    kinds = [f.kind for f in check_evidence(record)]
    assert kinds == ["witness_conflict"]
    # the same notes again record nothing new
    assert take(Witness(edu), "fund", wire(exchange_document(Witness(fund), "edu"))) == []


@pytest.mark.parametrize("tamper", ["flipped_root", "swapped_signature", "same_root", "wrong_key"])
def test_tampered_evidence_is_named(nodes, tamper):
    fund, hrss = nodes["fund"], nodes["hrss"]
    fill(hrss, 3, partner="fund")
    witness = Witness(fund)
    first = hrss.sign_head()
    witness.observe("hrss", hrss.public_key, first)
    witness.observe("hrss", hrss.public_key, hrss.signer.sign_head(3, b"\x05" * 32, first.time))
    record = wire(evidence(witness))
    assert [f.kind for f in check_evidence(record)] == ["witness_conflict"]
    bad = copy.deepcopy(record)
    c = bad["conflicts"][0]
    if tamper == "flipped_root":
        c["second"]["root"] = ("1" if c["second"]["root"][0] != "1" else "2") + c["second"]["root"][1:]
    elif tamper == "swapped_signature":
        c["first"]["signature"], c["second"]["signature"] = c["second"]["signature"], c["first"]["signature"]
    elif tamper == "same_root":
        c["second"] = c["first"]
    else:
        bad["partner_keys"]["hrss"] = make_ledger(open_engine("sqlite://"), "hrss").public_key.text
    assert "witness_evidence" in [f.kind for f in check_evidence(bad)]


def test_resolution_closes_conflicts_and_witnessing_resumes(nodes):
    fund, hrss = nodes["fund"], nodes["hrss"]
    fill(hrss, 3, partner="fund")
    witness = Witness(fund)
    forged = hrss.signer.sign_head(3, b"\x05" * 32, "2025-03-01T08:00:00Z")
    witness.observe("hrss", hrss.public_key, forged)  # shown the fork first
    true = hrss.sign_head()
    assert witness.observe("hrss", hrss.public_key, true).verdict == "fork"
    with pytest.raises(WitnessError):
        witness.resolve("hrss", b"\x09" * 32, "operator")  # a root it never saw
    witness.resolve("hrss", true.root, "operator")
    assert witness.open_conflicts() == [] and len(witness.all_conflicts()) == 1
    fill(hrss, 2, partner="fund")
    grown = hrss.sign_head()
    assert witness.observe("hrss", hrss.public_key, grown, 3, hrss.consistency_proof(3, 5)).verdict == "cosigned"
    assert count_cosignatures(evidence(Witness(hrss)), grown, {"fund": fund.public_key})[0] == 0
    Witness(hrss).store_cosignature(witness.cosignatures_of(grown)[0], fund.public_key)
    assert count_cosignatures(evidence(Witness(hrss)), grown, {"fund": fund.public_key})[0] == 1
    assert count_cosignatures(evidence(Witness(hrss)), grown, {"fund": hrss.public_key})[0] == 0
