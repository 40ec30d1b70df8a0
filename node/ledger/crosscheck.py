"""Cross-check two nodes' ledgers query by query: neither side dropped or altered a query.

For an asking node A (e.g. the fund centre) and an answering node B (e.g. the HRSS
bureau), every query A recorded as asked of B must appear in B's ledger as answered
(or refused) for A, with the same metadata, and A's entry must hold B's receipt: signed
with B's ledger key, over that metadata, pointing at B's completed entry for the query,
with a (tree size, root) that B's current ledger still extends. And vice versa: every
query B recorded for A must be in A's ledger.

Both ledgers are read whole through `LogSource`s and checked against their signed heads
first, so the per-query verdicts are about what the nodes committed to.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from protocols import merkle

from .audit import _prefix_roots
from .canonical import CanonicalError
from .anchor import ROTATED, rotation_from
from .entries import AdminEntry, QueryEntry, decode
from .receipts import QueryMetadata, ReceiptError, verify_receipt
from .signing import KeyRing, SignatureError
from .sources import LogSource, SourceError

__all__ = ["QueryCheck", "CrossCheck", "cross_check", "SERIOUS"]

SERIOUS = frozenset({"missing_on_answerer", "missing_on_asker", "mismatch", "receipt_missing",
                     "receipt_invalid"})


@dataclass
class QueryCheck:
    query_id: str
    status: str  # ok | mismatch | receipt_missing | receipt_invalid | missing_on_answerer |
    #              missing_on_asker | not_reached | incomplete
    asker_index: int | None = None
    answerer_index: int | None = None
    problems: list[str] = field(default_factory=list)

    def flag(self, status: str, problem: str) -> None:
        if self.status == "ok" or status in SERIOUS and self.status not in SERIOUS:
            self.status = status
        self.problems.append(problem)


@dataclass
class CrossCheck:
    asker: str = ""
    answerer: str = ""
    queries: list[QueryCheck] = field(default_factory=list)
    ledger_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.ledger_problems and all(q.status not in SERIOUS for q in self.queries)

    def __str__(self) -> str:
        lines = [f"cross-check {self.asker} (asker) x {self.answerer} (answerer): "
                 f"{len(self.queries)} queries, {'OK' if self.ok else 'PROBLEMS'}"]
        lines += [f"  ledger: {p}" for p in self.ledger_problems]
        for q in self.queries:
            if q.status != "ok":
                lines.append(f"  {q.query_id}: {q.status}; " + "; ".join(q.problems))
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
    report = CrossCheck()
    a, b = _read(asker_source, report), _read(answerer_source, report)
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
        if mine is None and theirs is None:
            check.flag("incomplete", "the answering node admitted it but never completed it")
        elif mine is None:
            check.flag("missing_on_asker", f"the answering node recorded it ({theirs[1].outcome}), "
                       "the asking node did not")
        elif theirs is None:
            entry = mine[1]
            if entry.outcome in ("answered", "refused") or entry.receipt is not None:
                check.flag("missing_on_answerer", f"the asking node recorded it ({entry.outcome}), "
                           "the answering node did not")
            if entry.receipt is not None:
                try:  # a valid receipt here proves the answering node dropped the query
                    verify_receipt(b.key, entry.receipt, entry.metadata())
                    check.problems.append("the asking node holds the answering node's valid "
                                          f"receipt for ledger entry {entry.receipt.index}")
                except ReceiptError as exc:
                    check.flag("receipt_invalid", str(exc))
            else:
                check.flag("not_reached", f"{entry.outcome} on the asking node, never recorded "
                           "by the answering node")
        else:
            _compare(check, mine[1], theirs, b, b_roots)
    return report


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
