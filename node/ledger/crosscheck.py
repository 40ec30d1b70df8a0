"""Cross-check two nodes' ledgers query by query: neither side dropped or altered a query.

For an asking node A (e.g. the fund centre) and an answering node B (e.g. the HRSS
bureau), every query A recorded as asked of B must appear in B's ledger as answered
(or refused) for A, with the same metadata, and A's entry must hold B's receipt: signed
with B's ledger key, over that metadata, pointing at B's completed entry for the query,
with a (tree size, root) that B's current ledger still extends. And vice versa: every
query B recorded for A must be in A's ledger.

Both ledgers are read whole through `LogSource`s and checked against their signed heads
first, so the per-query verdicts are about what the nodes committed to.

Each query id falls in one class, and only the last is a finding:
  agree            both sides recorded the answer alike, with a receipt that holds;
  refused          the answering node refused it (or it was refused before it reached
                   the answering node) and the asking node did not record an answer;
  interrupted      admitted but never completed (a node stopped mid-query), or never
                   reached the answering node; nobody recorded an answer;
  broken_by_asker  the answering node answered part of it, then the asker broke the
                   protocol; charged for what was evaluated; the asker recorded failure;
  mismatch         anything else: an answer recorded by one side only, differing
                   metadata, a missing or invalid receipt.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from protocols import merkle

from node.ledger.audit import _prefix_roots
from node.ledger.canonical import CanonicalError
from node.ledger.anchor import ROTATED, rotation_from
from node.ledger.entries import AdminEntry, QueryEntry, decode
from node.ledger.entries import QueryMetadata, ReceiptError, verify_receipt
from node.ledger.signing import KeyRing, SignatureError
from node.ledger.sources import LogSource, SourceError

__all__ = ["QueryCheck", "CrossCheck", "cross_check", "SERIOUS", "CLASSES"]

SERIOUS = frozenset({"missing_on_answerer", "missing_on_asker", "mismatch", "receipt_missing",
                     "receipt_invalid"})
CLASSES = ("agree", "refused", "interrupted", "broken_by_asker", "mismatch")
_CLASS_LABEL = {"agree": "agree", "refused": "refused", "interrupted": "interrupted",
                "broken_by_asker": "broken by the asker", "mismatch": "MISMATCH"}
_UNFINISHED = ("failed", "aborted")
# Fields both sides know even when a query was refused or broke off early; the rest
# (elements, version, epoch, predicate) may legitimately differ then.
_IDENTITY = ("asker", "answerer", "dataset", "purpose")


@dataclass
class QueryCheck:
    query_id: str
    status: str  # ok | refused | interrupted | broken_by_asker, or one of SERIOUS
    asker_index: int | None = None
    answerer_index: int | None = None
    problems: list[str] = field(default_factory=list)

    def flag(self, status: str, problem: str) -> None:
        if self.status == "ok" or status in SERIOUS and self.status not in SERIOUS:
            self.status = status
        self.problems.append(problem)

    def note(self, status: str, remark: str) -> None:
        """A non-finding class (refused, interrupted, broken_by_asker) with its explanation."""
        if self.status == "ok":
            self.status = status
        self.problems.append(remark)

    @property
    def klass(self) -> str:
        if self.status in SERIOUS:
            return "mismatch"
        return "agree" if self.status == "ok" else self.status


@dataclass
class CrossCheck:
    asker: str = ""
    answerer: str = ""
    queries: list[QueryCheck] = field(default_factory=list)
    ledger_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.ledger_problems and all(q.status not in SERIOUS for q in self.queries)

    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(CLASSES, 0)
        for q in self.queries:
            counts[q.klass] += 1
        return counts

    def __str__(self) -> str:
        counts = self.summary()
        lines = [f"cross-check {self.asker} (asker) x {self.answerer} (answerer): "
                 f"{len(self.queries)} queries, {'OK' if self.ok else 'PROBLEMS'}",
                 "  " + ", ".join(f"{counts[c]} {_CLASS_LABEL[c]}" for c in CLASSES)]
        lines += [f"  ledger: {p}" for p in self.ledger_problems]
        for q in sorted(self.queries, key=lambda q: q.klass != "mismatch"):
            if q.klass != "agree":
                detail = f" ({q.status})" if q.status not in (q.klass, "mismatch") else ""
                lines.append(f"  {q.query_id}: {_CLASS_LABEL[q.klass]}{detail}; "
                             + "; ".join(q.problems))
        return "\n".join(lines)


@dataclass
class _Side:
    node: str
    key: object
    size: int
    leaves: list[bytes]
    queries: dict[tuple[str, str], tuple[int, QueryEntry]]  # (query_id, phase) -> entry


def _read(source: LogSource, report: CrossCheck) -> _Side | None:
    try:
        key, head = source.public_key(), source.tree_head()
        head.verify(key)
        leaves, queries, earlier = [], {}, []
        for idx, data in source.entries(0, head.size):
            leaves.append(merkle.hash_leaf(data))
            entry = decode(data)
            if isinstance(entry, QueryEntry):
                queries[(entry.query_id, entry.phase)] = (idx, entry)
            elif isinstance(entry, AdminEntry) and entry.action == ROTATED:
                earlier.extend(_handed_over(entry, head.node))  # receipts signed before
        merkle.verify_log(iter(leaves), head.size, head.root)
    except SignatureError:
        report.ledger_problems.append(f"{source.name}: tree head signature does not verify")
        return None
    except merkle.ProofError:
        report.ledger_problems.append(f"{source.name}: entries do not match the signed tree "
                                      "head; run `audit verify` on it")
        return None
    except (SourceError, CanonicalError) as exc:
        report.ledger_problems.append(f"{source.name}: could not be read ({exc})")
        return None
    return _Side(head.node, KeyRing((key, *earlier)), head.size, leaves, queries)


def _handed_over(entry: AdminEntry, node: str) -> list:
    """The old key of a ledgered rotation, if the old key handed over (anchor.py)."""
    try:
        return [rotation_from(entry.details, node)[0]]
    except SignatureError:
        return []


def cross_check(asker_source: LogSource, answerer_source: LogSource) -> CrossCheck:
    """Per-query report of what the asking and the answering node recorded."""
    from node.ledger.witness_evidence import witness_findings
    report = CrossCheck()
    a, b = _read(asker_source, report), _read(answerer_source, report)
    for source in (asker_source, answerer_source):  # conflict evidence either node holds
        report.ledger_problems += [f"{source.name}: {f.where}: {f.detail}"
                                   for f in witness_findings(source, None)]
    if a is None or b is None:
        return report
    report.asker, report.answerer = a.node, b.node
    asked = {qid: v for (qid, phase), v in a.queries.items() if phase == "completed"
             and v[1].role == "asker" and v[1].asker == a.node and v[1].answerer == b.node}
    answered = {qid: v for (qid, phase), v in b.queries.items() if phase == "completed"
                and v[1].role == "answerer" and v[1].asker == a.node and v[1].answerer == b.node}
    admitted = {qid for (qid, phase), v in b.queries.items() if phase == "admitted"
                and v[1].asker == a.node and v[1].answerer == b.node}
    receipt_sizes = [e.receipt.tree_size for _, e in asked.values()
                     if e.receipt is not None and e.receipt.tree_size <= b.size]
    b_roots = _prefix_roots(b.leaves, receipt_sizes)
    order = sorted(asked, key=lambda q: asked[q][0])
    order += sorted((q for q in answered.keys() | admitted if q not in asked),
                    key=lambda q: answered.get(q, (0,))[0])
    for qid in order:
        check = QueryCheck(qid, "ok")
        report.queries.append(check)
        mine, theirs = asked.get(qid), answered.get(qid)
        if mine is not None:
            check.asker_index = mine[0]
        if theirs is not None:
            check.answerer_index = theirs[0]
        _classify(check, mine, theirs, qid in admitted, b, b_roots)
    return report


def _classify(check: QueryCheck, mine, theirs, was_admitted: bool, b: _Side,
              b_roots: dict[int, bytes]) -> None:
    """Put one query id in its class (see the module docstring)."""
    if mine is None and theirs is None:
        check.note("interrupted", "admitted by the answering node but never completed (it "
                   "stopped mid-query); the asking node recorded nothing")
    elif mine is None:
        outcome = theirs[1].outcome
        if outcome in _UNFINISHED:
            check.note("interrupted", f"{outcome} on the answering node; the asking node "
                       "recorded nothing (it stopped mid-query)")
        elif outcome == "refused":
            check.note("refused", "refused by the answering node; the asking node recorded nothing")
        else:
            check.flag("missing_on_asker", f"the answering node recorded it ({outcome}), "
                       "the asking node did not")
    elif theirs is None:
        entry = mine[1]
        if entry.receipt is not None:
            check.flag("missing_on_answerer", f"the asking node recorded it ({entry.outcome}) "
                       "with a receipt, the answering node has no completed entry")
            try:  # a valid receipt here proves the answering node dropped the query
                verify_receipt(b.key, entry.receipt, entry.metadata())
                check.problems.append("the asking node holds the answering node's valid "
                                      f"receipt for ledger entry {entry.receipt.index}")
            except ReceiptError as exc:
                check.flag("receipt_invalid", str(exc))
        elif entry.outcome == "answered":
            check.flag("missing_on_answerer", "the asking node recorded an answer, the answering "
                       "node never recorded the query")
        elif was_admitted:
            check.note("interrupted", f"admitted by the answering node but never completed (it "
                       f"stopped mid-query); {entry.outcome} on the asking node")
        elif entry.outcome == "refused":
            check.note("refused", "refused before it reached the answering node's ledger "
                       "(e.g. when the table was prepared)")
        else:
            check.note("interrupted", f"{entry.outcome} on the asking node; it never reached "
                       "the answering node")
    else:
        _both_completed(check, mine[1], theirs, b, b_roots)


def _both_completed(check: QueryCheck, mine: QueryEntry, theirs: tuple[int, QueryEntry],
                    b: _Side, b_roots: dict[int, bytes]) -> None:
    ours, other = mine.outcome, theirs[1].outcome
    if ours == "answered" and other == "answered":
        _compare(check, mine, theirs, b, b_roots)
        return
    if "answered" in (ours, other):
        check.flag("mismatch", f"outcome: asker recorded {ours!r}, answerer recorded {other!r}")
        return
    if mine.receipt is not None:  # a receipt binds all the metadata: it must hold in full
        _compare(check, mine, theirs, b, b_roots)
    else:
        _compare_identity(check, mine, theirs[1])
    if other == "broken_by_asker":
        check.note("broken_by_asker", f"the asker broke the protocol after being answered "
                   f"({theirs[1].elements} elements evaluated and charged); asker recorded {ours!r}")
    elif other == "refused":
        check.note("refused", f"refused by the answering node ({theirs[1].reason or 'no reason'}); "
                   f"asker recorded {ours!r}")
    elif ours == "refused" and other not in _UNFINISHED:
        check.flag("mismatch", f"outcome: asker recorded {ours!r}, answerer recorded {other!r}")
    else:
        check.note("interrupted", f"broke off: asker recorded {ours!r}, answerer recorded {other!r}")


def _compare_identity(check: QueryCheck, mine: QueryEntry, theirs: QueryEntry) -> None:
    for name in _IDENTITY:
        a, b = getattr(mine, name), getattr(theirs, name)
        if a and b and a != b:
            check.flag("mismatch", f"{name}: asker recorded {a!r}, answerer recorded {b!r}")


def _compare(check: QueryCheck, mine: QueryEntry, theirs: tuple[int, QueryEntry], b: _Side,
             b_roots: dict[int, bytes]) -> None:
    ours, other = mine.metadata(), theirs[1].metadata()
    for name in QueryMetadata.__dataclass_fields__:
        if getattr(ours, name) != getattr(other, name):
            check.flag("mismatch", f"{name}: asker recorded {getattr(ours, name)!r}, "
                       f"answerer recorded {getattr(other, name)!r}")
    receipt = mine.receipt
    if receipt is None:
        if mine.outcome == "answered":
            check.flag("receipt_missing", "answered without the answering node's receipt")
        return
    try:
        verify_receipt(b.key, receipt, ours)
    except ReceiptError as exc:
        check.flag("receipt_invalid", str(exc))
        return
    if receipt.index != theirs[0]:
        check.flag("receipt_invalid", f"receipt points at entry {receipt.index}, the query's "
                   f"completed entry is {theirs[0]}")
    if receipt.tree_size > b.size:
        check.flag("receipt_invalid", f"receipt names tree size {receipt.tree_size}, beyond the "
                   f"answering node's signed head ({b.size})")
    elif b_roots.get(receipt.tree_size) != receipt.root:
        check.flag("receipt_invalid", f"the answering node's ledger at size {receipt.tree_size} "
                   "is not the one the receipt committed to: history was rewritten")
