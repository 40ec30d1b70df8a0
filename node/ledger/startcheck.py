"""The ledger check `shuqiao serve` runs before it appends anything.

A node must not keep writing on top of a ledger someone edited: new entries would hang
off a tree that no longer commits to what happened. The full recomputation
(integrity.verify_ledger) reads every entry; at every start this cheaper check runs
instead, in time proportional to `tail` entries plus the tree's height:

* the stored size agrees with the entries actually held (no row deleted at the end);
* the latest signed head verifies under the node's key, and the root recomputed from
  the stored tree nodes at its size equals the signed root (any rewrite of the stored
  tree, anywhere below that head, shows here);
* the last `tail` entries' bytes hash to their stored leaf hashes, and the perfect
  subtrees lying within that tail hash to the stored nodes above them.

An edit of an older entry's bytes alone (its stored leaf hash untouched) is found only
by the full check (`serve --check-ledger full`, or `shuqiao audit check`).
"""
from __future__ import annotations

import hashlib

from sqlalchemy import Engine, func, select

from node.ledger import canonical
from node.ledger.integrity import IntegrityReport, verify_ledger
from node.ledger.log import LedgerCorrupt, _load_compact
from node.ledger.signing import LedgerPublicKey, SignatureError, SignedTreeHead
from node.ledger.tables import ledger_entries, ledger_heads, ledger_nodes, ledger_state

__all__ = ["TAIL_ENTRIES", "check_at_start", "check_tail"]

TAIL_ENTRIES = 4096
_ALIGN = 1024  # the tail starts on a multiple of this, so its subtrees are whole


def check_at_start(engine: Engine, public_key: LedgerPublicKey, mode: str = "tail") -> IntegrityReport:
    """`mode` "tail" (every start) or "full" (every entry, as `audit check` does)."""
    if mode == "full":
        return verify_ledger(engine, public_key)
    return check_tail(engine, public_key)


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def check_tail(engine: Engine, public_key: LedgerPublicKey, tail: int = TAIL_ENTRIES,
               align: int = _ALIGN) -> IntegrityReport:
    """The start check; `align` (a power of two) rounds the tail's start down."""
    report = IntegrityReport()
    with engine.connect() as conn:
        size = conn.execute(select(ledger_state.c.size)).scalar() or 0
        last = conn.execute(select(func.max(ledger_entries.c.idx))).scalar()
        held = 0 if last is None else last + 1
        report.size = size
        if held != size:
            report.add("state", "ledger_state", f"says {size} entries, the last stored entry is "
                       f"{held - 1}" if held else f"says {size} entries, none is stored")
            return report
        head = conn.execute(select(ledger_heads).order_by(ledger_heads.c.id.desc()).limit(1)).first()
        report.heads = 0 if head is None else 1
        if head is not None:
            _check_head(conn, report, head, size, public_key)
        start = max(0, size - tail) // align * align
        _check_tail_tree(conn, report, start, size)
    return report


def _check_head(conn, report: IntegrityReport, head, size: int, public_key: LedgerPublicKey) -> None:
    where = f"head {head.id} (size {head.size})"
    try:
        SignedTreeHead(head.node, head.size, head.root, head.time, head.signature).verify(public_key)
    except (SignatureError, canonical.CanonicalError):
        report.add("head_signature", where, "does not verify under this node's ledger key")
        return
    if head.size > size:
        report.add("head", where, f"covers more entries than the ledger holds ({size})")
        return
    try:
        root = _load_compact(conn, head.size).root()
    except LedgerCorrupt as exc:
        report.add("missing", where, str(exc))
        return
    if root != head.root:
        report.add("head", where, "the stored tree no longer hashes to the signed root: "
                   "entries or nodes below this size were rewritten")


def _check_tail_tree(conn, report: IntegrityReport, start: int, size: int) -> None:
    c = ledger_entries.c
    level_hashes: list[bytes] = []
    rows = conn.execution_options(stream_results=True, yield_per=5000).execute(
        select(c.idx, c.entry, c.leaf_hash).where(c.idx >= start).order_by(c.idx))
    expected = start
    for idx, data, stored in rows:
        if idx != expected:
            report.add("missing", f"entry {expected}", f"entries {expected}..{idx - 1} are missing")
            return
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = str(data).encode("utf-8", "surrogateescape")  # a hand edit left text behind
        leaf = _h(b"\x00" + bytes(data))
        if leaf != stored:
            report.add("entry", f"entry {idx}", "its bytes no longer hash to the stored leaf hash "
                       "(the entry was altered)")
        level_hashes.append(leaf)
        expected += 1
    level, first = 0, start
    altered = [(int(p.where.split()[1]),) * 2 for p in report.problems if p.kind == "entry"]
    while len(level_hashes) >= 2:
        level += 1
        first //= 2
        level_hashes = [_h(b"\x01" + level_hashes[i] + level_hashes[i + 1])
                        for i in range(0, len(level_hashes) - 1, 2)]
        stored = dict(conn.execute(
            select(ledger_nodes.c.node_index, ledger_nodes.c.hash)
            .where(ledger_nodes.c.level == level, ledger_nodes.c.node_index >= first,
                   ledger_nodes.c.node_index < first + len(level_hashes))).all())
        for offset, want in enumerate(level_hashes):
            ix = first + offset
            got = stored.get(ix)
            lo, hi = ix << level, ((ix + 1) << level) - 1
            if any(a <= hi and lo <= b for a, b in altered):
                continue  # explained by an altered entry already named
            if got is None:
                report.add("missing", f"node (level {level}, index {ix})", "not stored")
            elif got != want:
                report.add("entry", f"entries {lo}..{min(hi, size - 1)}",
                           "the stored tree does not commit to these entries' bytes "
                           "(an entry and its leaf hash were altered together)")
                altered.append((lo, hi))
        if first % 2:
            break  # the subtrees above start before the tail
