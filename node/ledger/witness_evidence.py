"""Witness evidence as a document: what a node serves to auditors and writes into exports.

    {"v": 1, "node", "public_key",
     "cosignatures": [cosignature, ...],          # every cosignature of this node's heads
     "partner_keys": {partner: "ed25519:.."},     # the keys it pinned, to check evidence
     "witness_certifications": {witness: [certification, ...]},  # witness_pki.py
     "conflicts": [{"partner", "kind", "first", "second", "detail", "open",
                    "cosignatures": [of either head, by this node or the witness that
                                     reported the other]}, ...],
     "resolutions": [{"partner", "head", "resolved_through"}, ...]}

Everything in it is signed by someone (heads by their log's key, cosignatures by the
witness's), so it checks offline: `check_evidence` verifies every conflict's two heads
against the log's key and that they really contradict each other (a fork: same size,
other root; a rollback: a smaller head signed later), and reports the open ones as
alarms. `count_cosignatures` is the quorum rule of `audit verify --witness-quorum`: valid
cosignatures of exactly the head being verified, by distinct witnesses the auditor
trusts -- by a key given out of band, or by a key certified for the witness's node by
the federation CA (witness_pki.py) -- never the log's own node (C2SP tlog-cosignature in
spirit).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Mapping, Sequence

from node.ledger.signing import Cosignature, LedgerPublicKey, SignatureError, SignedTreeHead
from node.ledger.witness import Witness

__all__ = ["evidence", "check_evidence", "count_cosignatures", "EvidenceFinding", "read_evidence",
           "witness_findings"]


@dataclass(frozen=True)
class EvidenceFinding:
    kind: str  # witness_conflict | witness_evidence | witness_quorum
    where: str
    detail: str


def evidence(witness: Witness) -> dict[str, Any]:
    """This node's witness record (see the module doc)."""
    from sqlalchemy import select

    from node.ledger.tables import ledger_partner_keys
    from node.ledger.witness_pki import certifications_of
    ledger = witness.ledger
    with ledger.engine.connect() as conn:
        keys = {r.partner: r.public_key for r in conn.execute(select(ledger_partner_keys))}
    return {"v": 1, "node": ledger.node_id, "public_key": ledger.public_key.text,
            "cosignatures": [c.to_dict() for c in witness.cosignatures()],
            "partner_keys": keys,
            "witness_certifications": certifications_of(
                ledger.engine, {c.witness for c in witness.cosignatures()} - {ledger.node_id}),
            "conflicts": [{"partner": c.partner, "kind": c.kind, "first": c.first.to_dict(),
                           "second": c.second.to_dict(), "detail": c.detail, "open": c.open,
                           "cosignatures": [x.to_dict() for h in (c.first, c.second)
                                            for x in witness.cosignatures_of(h)]}
                          for c in witness.all_conflicts()],
            "resolutions": witness.resolutions()}


def read_evidence(source: Any) -> dict[str, Any] | None:
    """The witness record a LogSource offers (`witnessing()`), or None if it has none."""
    method = getattr(source, "witnessing", None)
    return None if method is None else method()


def _key(doc: Mapping[str, Any], node: str) -> LedgerPublicKey | None:
    text = doc["public_key"] if node == doc.get("node") else doc.get("partner_keys", {}).get(node)
    return None if text is None else LedgerPublicKey.from_text(text)


def check_evidence(doc: Mapping[str, Any]) -> list[EvidenceFinding]:
    """Every conflict checked offline; open ones are alarms, broken evidence is reported."""
    findings: list[EvidenceFinding] = []
    for n, c in enumerate(doc.get("conflicts", [])):
        where = f"witness record of {doc.get('node')}, conflict {n + 1}"
        try:
            first, second = SignedTreeHead.from_dict(c["first"]), SignedTreeHead.from_dict(c["second"])
            key = _key(doc, c["partner"])
            if key is None or first.node != c["partner"] or second.node != c["partner"]:
                raise SignatureError("no key for the log, or heads of another log")
            first.verify(key)
            second.verify(key)
        except (KeyError, TypeError, ValueError) as exc:
            findings.append(EvidenceFinding("witness_evidence", where, f"evidence does not check: {exc}"))
            continue
        findings += _check_cosignatures(doc, c.get("cosignatures", []), (first, second), where)
        proven = {"fork": first.size == second.size and first.root != second.root,
                  # a smaller head presented after a larger one; an old head replayed
                  # carries its old time, so the order is the witness's word
                  "rollback": second.size < first.size,
                  "inconsistent": first.size != second.size}.get(c["kind"], False)
        if not proven:
            findings.append(EvidenceFinding("witness_evidence", where,
                                            f"the two heads do not show a {c['kind']}"))
        if c.get("open", True):
            findings.append(EvidenceFinding(
                "witness_conflict", where,
                f"OPEN {c['kind']} of the ledger of {c['partner']}: heads of size {first.size} "
                f"(root {first.root.hex()[:16]}…) and {second.size} (root {second.root.hex()[:16]}…), "
                "both signed by its key"))
    return findings


def _check_cosignatures(doc: Mapping[str, Any], cosignatures: list, heads: tuple,
                        where: str) -> list[EvidenceFinding]:
    """Cosignatures kept with a conflict must be over one of its heads and verify where the
    witness's key is in the record (this node's own, or a partner's it pinned)."""
    findings = []
    for d in cosignatures:
        try:
            c = Cosignature.from_dict(d)
            key = _key(doc, c.witness)
            if c.head not in heads:
                raise SignatureError("a cosignature over neither head")
            if key is not None:
                c.verify(key)
        except (KeyError, TypeError, ValueError) as exc:
            findings.append(EvidenceFinding("witness_evidence", where, f"cosignature does not check: {exc}"))
    return findings


def count_cosignatures(doc: Mapping[str, Any] | None, head: SignedTreeHead,
                       trusted: Mapping[str, LedgerPublicKey], roots: Sequence[Any] = (),
                       witnesses: Collection[str] | None = None) -> tuple[int, list[str]]:
    """Distinct witnesses with a valid cosignature of exactly `head`; and why others failed.

    A witness is trusted by an out-of-band key (`trusted`), or, with `roots` (the
    federation CA), by a certification of its key in the record (witness_pki.py),
    restricted to `witnesses` when given. The log's own node never counts.
    """
    from node.ledger.anchor import CertificationError
    from node.ledger.witness_pki import certified_witness_key, witness_certifications_in
    valid: set[str] = set()
    problems: dict[str, str] = {}
    for d in (doc or {}).get("cosignatures", []):
        try:
            c = Cosignature.from_dict(d)
        except (KeyError, TypeError, ValueError):
            problems.setdefault("", "a malformed cosignature")
            continue
        if c.head != head or c.witness in valid:
            continue
        if c.witness == head.node:
            problems[c.witness] = f"the cosignature by {c.witness} is the log's own: a log is not its own witness"
            continue
        try:
            if c.witness in trusted:
                c.verify(trusted[c.witness])
            elif roots and (witnesses is None or c.witness in witnesses):
                certified_witness_key(c, witness_certifications_in(doc, c.witness), roots)
            else:
                continue  # not a witness the auditor trusts
            valid.add(c.witness)
            problems.pop(c.witness, None)
        except CertificationError as exc:
            problems[c.witness] = (f"the cosignature by {c.witness} does not count: its key is not "
                                   f"certified for {c.witness} by the given CA: {exc}")
        except SignatureError:
            problems[c.witness] = f"the cosignature by {c.witness} does not verify with the trusted key"
    return len(valid), list(problems.values())


def witness_findings(source: Any, head: SignedTreeHead | None,
                     trusted: Mapping[str, LedgerPublicKey] | None = None,
                     quorum: int = 0, roots: Sequence[Any] = (),
                     witnesses: Collection[str] | None = None) -> list[EvidenceFinding]:
    """What `audit verify` adds: the source's conflict evidence, and the cosignature quorum."""
    try:
        doc = read_evidence(source)
    except Exception as exc:  # a source without the record, or one that fails to serve it
        doc, failure = None, str(exc)
    else:
        failure = "the source offers no witness record"
    findings = check_evidence(doc) if doc is not None else []
    if doc is not None and head is not None and doc.get("node") != head.node:
        findings.append(EvidenceFinding("witness_evidence", "witness record",
                                        "the witness record is another node's"))
    if quorum > 0 and head is not None:
        if doc is None:
            findings.append(EvidenceFinding("witness_quorum", f"tree size {head.size}", failure))
            return findings
        count, problems = count_cosignatures(doc, head, trusted or {}, roots, witnesses)
        if count < quorum:
            findings.append(EvidenceFinding(
                "witness_quorum", f"tree size {head.size}",
                f"{count} valid cosignature(s) of this head from trusted witnesses, {quorum} required"
                + (f" ({'; '.join(problems)})" if problems else "")))
    return findings
