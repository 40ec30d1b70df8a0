"""Full recomputation of a stored ledger: which entry, node or head was altered.

The triggers stop UPDATE and DELETE through SQL, but someone with file or superuser
access can still edit rows directly. `verify_ledger` trusts nothing stored except the
entry bytes and the node's public key, recomputes the tree from the bytes, and
compares every stored leaf hash, interior node and signed head with it:

* entry bytes vs stored leaf hash disagree: if the stored level-1 node agrees with the
  stored leaf hash, the tree still commits to other bytes, so the *entry* was altered;
  if it agrees with the recomputed hash, the *stored leaf hash* was altered;
* a stored node that differs from the recomputed one is reported, unless an altered
  entry under it already explains the difference;
* a head whose signature fails: its root was altered if the root differs from the
  recomputed one, otherwise its signature (or time) was; a validly signed head whose
  root no longer matches means entries below its size were rewritten.

Runs in two streaming passes (entries by index, then stored nodes level by level), in
memory of about 48 bytes per entry for the two lowest levels.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, func, select

from protocols import merkle

from node.ledger import canonical
from node.ledger.entries import decode, filter_columns
from node.ledger.signing import LedgerPublicKey, SignatureError, SignedTreeHead
from node.ledger.tables import ledger_entries, ledger_heads, ledger_nodes, ledger_state

__all__ = ["Problem", "IntegrityReport", "verify_ledger"]

_MAX_LISTED = 1000
_sha256 = hashlib.sha256


@dataclass(frozen=True)
class Problem:
    kind: str  # entry | leaf_hash | node | head | head_signature | missing | state | columns
    where: str  # "entry 17", "node (level 2, index 3)", "head 4 (size 100)"
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.detail}"


@dataclass
class IntegrityReport:
    size: int = 0
    heads: int = 0
    problems: list[Problem] = field(default_factory=list)
    unlisted: int = 0  # problems beyond the listing cap, and consequences of listed ones

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unlisted

    def add(self, kind: str, where: str, detail: str) -> None:
        if len(self.problems) < _MAX_LISTED:
            self.problems.append(Problem(kind, where, detail))
        else:
            self.unlisted += 1

    def __str__(self) -> str:
        if self.ok:
            return f"ledger intact: {self.size} entries, {self.heads} signed heads"
        lines = [f"ledger ALTERED ({len(self.problems) + self.unlisted} problems):"]
        lines += [f"  {p}" for p in self.problems]
        if self.unlisted:
            lines.append(f"  ... and {self.unlisted} more")
        return "\n".join(lines)


def _fold(border: list[bytes]) -> bytes:
    h = border[-1]
    for left in reversed(border[:-1]):
        h = _sha256(b"\x01" + left + h).digest()
    return h


def _hash_level(below: bytearray) -> bytearray:
    out = bytearray()
    prefix = b"\x01"
    for i in range(0, len(below) - 63, 64):
        out += _sha256(prefix + below[i:i + 64]).digest()
    return out


def verify_ledger(engine: Engine, public_key: LedgerPublicKey, *, check_columns: bool = False,
                  progress: Callable[[str, int, int], None] | None = None) -> IntegrityReport:
    """Recompute the stored ledger from its entry bytes and name anything altered.

    `check_columns` also decodes every entry and checks the filter columns copied from
    it (slower: a JSON parse per entry).
    """
    report = IntegrityReport()
    with engine.connect() as conn:
        state_size = conn.execute(select(ledger_state.c.size)).scalar() or 0
        heads = conn.execute(select(ledger_heads).order_by(ledger_heads.c.id)).all()
        total = conn.execute(select(func.count()).select_from(ledger_entries)).scalar_one()
        report.heads = len(heads)
        head_sizes = sorted({h.size for h in heads})
        truth, altered_leaves, roots = _pass_entries(conn, report, head_sizes, total,
                                                     check_columns, progress)
        n = len(truth) // 32
        report.size = n
        if state_size != n:
            report.add("state", "ledger_state", f"says {state_size} entries, the table holds {n}")
        altered_entries = _pass_nodes(conn, report, truth, altered_leaves, progress)
    _check_heads(report, heads, roots, n, altered_entries, public_key)
    return report


def _pass_entries(conn, report, head_sizes, total, check_columns, progress):
    truth = bytearray()
    altered: dict[int, bytes] = {}  # index -> stored leaf hash that differs from the bytes
    roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT} if 0 in head_sizes else {}
    wanted = [s for s in head_sizes if s > 0]
    next_head = 0
    border: list[bytes] = []
    expected = 0
    cols = [ledger_entries.c.idx, ledger_entries.c.entry, ledger_entries.c.leaf_hash]
    if check_columns:
        cols += [ledger_entries.c[name] for name in _COLUMN_NAMES]
    result = conn.execution_options(stream_results=True, yield_per=20000).execute(
        select(*cols).order_by(ledger_entries.c.idx))
    for row in result:
        idx, data, stored = row[0], row[1], row[2]
        if idx != expected:
            report.add("missing", f"entry {expected}",
                       f"entries {expected}..{idx - 1} are missing (deleted rows)")
            break  # positions after a gap mean nothing; the tree cannot be rebuilt
        if not isinstance(data, (bytes, bytearray, memoryview)):
            # an edit by hand can leave another type behind (e.g. SQLite text): tampering
            data = str(data).encode("utf-8", "surrogateescape")
        leaf = _sha256(b"\x00" + bytes(data)).digest()
        if leaf != stored:
            altered[idx] = stored
        if check_columns:
            _check_columns(report, idx, data, row[3:])
        truth += leaf
        expected += 1
        h, k = leaf, idx
        while k & 1:
            h = _sha256(b"\x01" + border.pop() + h).digest()
            k >>= 1
        border.append(h)
        while next_head < len(wanted) and wanted[next_head] == expected:
            roots[expected] = _fold(border)
            next_head += 1
        if progress and expected % 100_000 == 0:
            progress("entries", expected, total)
    return truth, altered, roots


def _pass_nodes(conn, report, truth, altered_leaves, progress) -> set[int]:
    """Compare stored nodes level by level; classify altered leaves; return altered entries."""
    altered_entries: set[int] = set()
    classified: set[int] = set()
    below, level = truth, 0
    n = len(truth) // 32
    while len(below) >= 64:
        level += 1
        above = _hash_level(below)
        count = len(above) // 32
        seen = 0
        rows = conn.execution_options(stream_results=True, yield_per=20000).execute(
            select(ledger_nodes.c.node_index, ledger_nodes.c.hash)
            .where(ledger_nodes.c.level == level).order_by(ledger_nodes.c.node_index))
        for ix, stored in rows:
            if ix >= count:
                report.add("node", f"node (level {level}, index {ix})",
                           "stored but no such subtree is complete")
                continue
            while seen < ix:
                report.add("missing", f"node (level {level}, index {seen})", "not stored")
                seen += 1
            seen = ix + 1
            want = bytes(above[ix * 32:ix * 32 + 32])
            if level == 1:
                _classify_leaves(report, ix, stored, want, truth, altered_leaves, altered_entries,
                                 classified)
            elif stored != want:
                first, last = ix << level, ((ix + 1) << level) - 1
                if any(first <= e <= last for e in altered_entries):
                    report.unlisted += 1  # explained by an altered entry below it
                else:
                    report.add("node", f"node (level {level}, index {ix})",
                               "stored hash differs from the hash recomputed from the entries")
        for missing in range(seen, count):
            report.add("missing", f"node (level {level}, index {missing})", "not stored")
        if progress:
            progress("nodes", level, n.bit_length())
        below = above
    for lv, ix in conn.execute(select(ledger_nodes.c.level, ledger_nodes.c.node_index)
                               .where(ledger_nodes.c.level > level).limit(10)):
        report.add("node", f"node (level {lv}, index {ix})", "stored but no such subtree is complete")
    for idx, _ in sorted(altered_leaves.items()):
        if idx not in classified:  # a last, unpaired leaf, or its level-1 node is gone
            report.add("entry", f"entry {idx}", "bytes and stored leaf hash disagree "
                       "(the entry or its stored leaf hash was altered)")
    return altered_entries


def _classify_leaves(report, ix, stored, want, truth, altered_leaves, altered_entries,
                                 classified) -> None:
    pair = [2 * ix, 2 * ix + 1]
    bad = [i for i in pair if i in altered_leaves]
    if not bad:
        if stored != want:
            report.add("node", f"node (level 1, index {ix})",
                       "stored hash differs from the hash recomputed from the entries")
        return
    stored_leaves = [altered_leaves.get(i, bytes(truth[i * 32:i * 32 + 32])) for i in pair]
    from_stored = merkle.hash_children(*stored_leaves)
    classified.update(bad)
    for i in bad:
        if stored == from_stored:
            altered_entries.add(i)
            report.add("entry", f"entry {i}", "entry bytes were altered: they no longer hash to "
                       "the leaf hash the tree and its signed heads commit to")
        elif stored == want:
            report.add("leaf_hash", f"entry {i}", "stored leaf hash was altered (the entry "
                       "bytes and the tree above still agree)")
        else:
            report.add("entry", f"entry {i}", "entry bytes, stored leaf hash and level-1 node "
                       "all disagree")


def _check_heads(report, heads, roots, n, altered_entries, public_key) -> None:
    previous = 0
    for row in heads:
        where = f"head {row.id} (size {row.size})"
        if row.size < previous:
            report.add("head", where, f"smaller than the head before it (size {previous})")
        previous = max(previous, row.size)
        if row.size > n:
            report.add("head", where, f"covers more entries than the ledger holds ({n})")
            continue
        try:
            SignedTreeHead(row.node, row.size, row.root, row.time, row.signature).verify(public_key)
            signed = True
        except (SignatureError, canonical.CanonicalError):
            signed = False
        matches = roots.get(row.size) == row.root
        explained = any(e < row.size for e in altered_entries)
        if signed and not matches and not explained:
            report.add("head", where, "validly signed, but the stored entries below this size "
                       "hash to another root: history was rewritten")
        elif signed and not matches:
            report.unlisted += 1
        elif not signed and matches:
            report.add("head_signature", where, "signature (or its node or time) was altered")
        elif not signed:
            report.add("head", where, "root was altered: it matches neither the entries nor "
                       "the signature")


_COLUMN_NAMES = ("type", "query_id", "partner", "dataset", "purpose", "outcome", "time")


def _check_columns(report, idx, data, stored) -> None:
    try:
        cols = filter_columns(decode(data))
    except canonical.CanonicalError as exc:
        report.add("entry", f"entry {idx}", f"does not decode: {exc}")
        return
    for name, value in zip(_COLUMN_NAMES, stored):
        if cols[name] != value:
            report.add("columns", f"entry {idx}", f"filter column {name!r} differs from the entry")
