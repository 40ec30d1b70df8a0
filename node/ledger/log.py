"""The node's ledger on its SQL database: append inside the caller's transaction, prove, sign.

Durability is the point: `append(conn, entry)` writes the entry, its leaf hash and the
Merkle nodes it completes on the caller's open transaction, so a query's own writes
and its ledger entry commit (or vanish) together; after a crash no answered query is
missing and none is ledgered twice.

Concurrency. The server and CLI commands are separate processes appending to one
database, so nothing about the tree is trusted from memory: each append first locks
the one-row `ledger_state` (an UPDATE ... RETURNING, which takes the row lock on
PostgreSQL and the database write lock on SQLite, then waits for other appenders via
the lock / busy timeout), reads the size there, and rebuilds the right border of the
tree from stored nodes (CompactRange.from_store, O(log n) hashes in two queries) --
unless the state row's random `tip` token shows that the last change to the tree was
this process's own, in which case the border it kept in memory is current.
Indices are therefore contiguous whatever the number of appenders; the primary key on
idx refuses a duplicate if the state row was ever tampered with.

Tree heads are signed when asked (`sign_head`), or by a `HeadPolicy` during appends:
every N entries and/or when the last head is older than T seconds. Signing on every
append costs one Ed25519 signature and one row per entry; batching keeps appends at the
speed of the commit.
"""
from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, and_, bindparam, or_, select, update

from protocols import merkle

from node.core.clock import SYSTEM_CLOCK
from node.core.errors import OutOfRange, ShuqiaoError, StorageError
from node.ledger import canonical
from node.ledger.tables import AppendStatements
from node.ledger.entries import Entry, QueryEntry, WitnessEntry, encode, filter_columns
from node.ledger.entries import Receipt, make_receipt
from node.ledger.signing import LedgerPublicKey, LedgerSigningKey, SignedTreeHead
from node.ledger.tables import ledger_entries, ledger_heads, ledger_nodes, ledger_state

__all__ = ["BeyondTree", "HeadPolicy", "Ledger", "LedgerError", "LedgerCorrupt", "EntryFilter"]

# The time source: a node passes its Clock's `now` (node/core/clock.py); tests a fixed one.
TimeSource = Callable[[], datetime]


class LedgerError(ShuqiaoError):
    """A request the ledger cannot serve (a size beyond the tree, an entry not its own)."""


class BeyondTree(LedgerError, OutOfRange):
    """A size the ledger has not reached (a peer asking for it is refused OUT_OF_RANGE)."""


class LedgerCorrupt(LedgerError, StorageError):
    """Stored state contradicts itself; run verify_all to see what was altered."""


@dataclass(frozen=True)
class HeadPolicy:
    """When appends also sign a tree head. Neither set: only when `sign_head` is called."""

    every_entries: int | None = None
    every_seconds: int | None = None

    def due(self, size: int, signed_size: int, now: int, signed_at: int) -> bool:
        if size == signed_size:
            return False
        if self.every_entries is not None and size - signed_size >= self.every_entries:
            return True
        return self.every_seconds is not None and now - signed_at >= self.every_seconds


@dataclass(frozen=True)
class EntryFilter:
    """Auditor filters; every field optional. Times are RFC 3339 strings (inclusive)."""

    type: str | None = None
    partner: str | None = None
    dataset: str | None = None
    purpose: str | None = None
    outcome: str | None = None
    since: str | None = None
    until: str | None = None

    def clauses(self) -> list[Any]:
        c = ledger_entries.c
        out = [getattr(c, name) == getattr(self, name)
               for name in ("type", "partner", "dataset", "purpose", "outcome")
               if getattr(self, name) is not None]
        if self.since is not None:
            out.append(c.time >= canonical.check_time(self.since, "since"))
        if self.until is not None:
            out.append(c.time <= canonical.check_time(self.until, "until"))
        return out


# Built once: constructing Core statements per append costs more than the commit.
_READ_LEAVES = select(ledger_entries.c.idx, ledger_entries.c.leaf_hash).where(
    ledger_entries.c.idx.in_(bindparam("ids", expanding=True)))


# Per process, not per node context: the cache holds SQL statements keyed by a count,
# never a row, so nodes sharing a process cannot see each other's data through it.
@functools.lru_cache(maxsize=128)
def _read_nodes(count: int) -> Any:
    # OR of (level, index) pairs: both SQLite and PostgreSQL answer it from the primary
    # key; a row-value IN makes SQLite scan the whole table.
    c = ledger_nodes.c
    return select(c.level, c.node_index, c.hash).where(or_(*(
        and_(c.level == bindparam(f"l{i}"), c.node_index == bindparam(f"i{i}"))
        for i in range(count))))

_LOCK = (update(ledger_state).where(ledger_state.c.id == 1)
         .values(size=ledger_state.c.size + bindparam("grow"), prev_tip=ledger_state.c.tip,
                 tip=bindparam("tip"))
         .returning(ledger_state.c.size, ledger_state.c.signed_size, ledger_state.c.signed_at,
                    ledger_state.c.prev_tip))
_SIGNED = (update(ledger_state).where(ledger_state.c.id == 1)
           .values(signed_size=bindparam("signed_size"), signed_at=bindparam("signed_at")))


def read_nodes(conn: Connection, ids: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """Stored hashes of perfect subtrees (level 0: leaf hashes), in at most two queries."""
    found: dict[tuple[int, int], bytes] = {}
    leaves = [ix for lv, ix in ids if lv == 0]
    inner = [(lv, ix) for lv, ix in ids if lv > 0]
    if leaves:
        rows = conn.execute(_READ_LEAVES, {"ids": leaves})
        found.update(((0, idx), leaf) for idx, leaf in rows)
    if inner:
        params = {}
        for i, (lv, ix) in enumerate(inner):
            params[f"l{i}"], params[f"i{i}"] = lv, ix
        rows = conn.execute(_read_nodes(len(inner)), params)
        found.update(((lv, ix), h) for lv, ix, h in rows)
    missing = [i for i in ids if i not in found]
    if missing:
        raise LedgerCorrupt(f"stored tree lacks node (level {missing[0][0]}, index {missing[0][1]})")
    return found


def _load_compact(conn: Connection, size: int) -> merkle.CompactRange:
    hashes = read_nodes(conn, merkle.border_nodes(size))
    return merkle.CompactRange.from_store(size, lambda lv, ix: hashes[(lv, ix)])


class _Locked(NamedTuple):
    size: int  # before this append
    signed_size: int
    signed_at: int
    prev_tip: int  # the token of the state we locked
    tip: int  # the token this transaction leaves behind


def _head_from_row(row: Any) -> SignedTreeHead:
    return SignedTreeHead(row.node, row.size, row.root, row.time, row.signature)


class Ledger:
    """One node's ledger in `engine`, signing heads with `signer`."""

    def __init__(self, engine: Engine, signer: LedgerSigningKey, *,
                 policy: HeadPolicy = HeadPolicy(), clock: TimeSource | None = None) -> None:
        self.engine = engine
        self.signer = signer
        self.policy = policy
        self._clock = clock or SYSTEM_CLOCK.now
        # (tip, border) as this process last left the tree; see _compact.
        self._border: tuple[int, merkle.CompactRange] | None = None
        self._sql = AppendStatements(engine.dialect, _LOCK, _SIGNED, ledger_entries,
                                     ledger_nodes, ledger_heads)

    @property
    def node_id(self) -> str:
        return self.signer.node_id

    @property
    def public_key(self) -> LedgerPublicKey:
        return self.signer.public_key

    def now(self) -> str:
        """The time to put in an entry: RFC 3339 UTC, seconds."""
        return canonical.rfc3339(self._clock())

    @property
    def clock(self) -> TimeSource:
        """This ledger's time source, for what is stored alongside it (witness records)."""
        return self._clock

    # -- appending ------------------------------------------------------------------

    def _lock(self, conn: Connection, grow: int) -> _Locked:
        # The UPDATE takes the lock before anything is read, so two appenders never
        # see the same size. RETURNING gives the new size in the same statement.
        tip = secrets.randbits(62) + 1
        row = self._sql.lock(conn, grow=grow, tip=tip)
        if row is None:
            raise LedgerError("ledger_state has no row; run install_ledger_triggers")
        size, signed_size, signed_at, prev_tip = row
        return _Locked(size - grow, signed_size, signed_at, prev_tip, tip)

    def _compact(self, conn: Connection, size: int, tip: int) -> merkle.CompactRange:
        """The tree's right border at `size`: this process's own if `tip` shows it is current.

        The cached range is taken out (not copied): if the append using it fails, the
        next one reloads from the database.
        """
        cached, self._border = self._border, None
        if cached is not None and cached[0] == tip and cached[1].size == size:
            return cached[1]
        return _load_compact(conn, size)

    def _remember(self, compact: merkle.CompactRange, tip: int) -> None:
        self._border = (tip, compact)

    def _check_own(self, entry: Entry) -> None:
        if isinstance(entry, QueryEntry):
            own = entry.asker if entry.role == "asker" else entry.answerer
            if own != self.node_id:
                raise LedgerError(f"a {entry.role} entry of this ledger must name this node "
                                  f"as the {entry.role}")
        elif isinstance(entry, WitnessEntry) and entry.partner == self.node_id:
            raise LedgerError("a node does not witness its own ledger")

    def append(self, conn: Connection, entry: Entry) -> int:
        """Append `entry` on the caller's open transaction; return its index.

        The entry is durable when the caller commits, and gone if it rolls back.
        """
        return self.append_batch(conn, [entry])[0]

    def append_batch(self, conn: Connection, entries: Sequence[Entry]) -> list[int]:
        """Append several entries at consecutive indices on the caller's transaction."""
        for entry in entries:
            self._check_own(entry)
        encoded = [encode(e) for e in entries]  # refuse a bad entry before taking the lock
        if not encoded:
            return []
        locked = self._lock(conn, len(encoded))
        size = locked.size
        compact = self._compact(conn, size, locked.prev_tip)
        created = self._clock()
        rows, nodes = [], []
        for entry, data in zip(entries, encoded):
            leaf = merkle.hash_leaf(data)
            completed = compact.append(leaf)
            rows.append({"idx": completed[0].index, "entry": data, "leaf_hash": leaf,
                         "created_at": created, **filter_columns(entry)})
            nodes.extend({"level": n.level, "node_index": n.index, "hash": n.hash}
                         for n in completed[1:])
        self._sql.insert(conn, rows, nodes)
        now = int(self._clock().timestamp())
        if self.policy.due(compact.size, locked.signed_size, now, locked.signed_at):
            self._insert_head(conn, compact.size, compact.root())
        self._remember(compact, locked.tip)
        return list(range(size, size + len(encoded)))

    def append_completed(self, conn: Connection, entry: QueryEntry) -> Receipt:
        """The answering node's last step of a query: append its completed entry and sign
        the receipt for the asker, on the caller's transaction.

        Send the receipt only after the transaction committed: until then the position
        it names does not exist.
        """
        if entry.role != "answerer" or entry.phase != "completed":
            raise LedgerError("receipts are issued for the answerer's completed entry")
        index = self.append(conn, entry)
        size, root = self.checkpoint(conn)
        return make_receipt(self.signer, entry.metadata(), index, size, root)

    def checkpoint(self, conn: Connection) -> tuple[int, bytes]:
        """(size, root) as the caller's transaction sees it, e.g. right after `append`."""
        size, tip = conn.execute(select(ledger_state.c.size, ledger_state.c.tip)).one()
        compact = self._compact(conn, size, tip)
        self._remember(compact, tip)
        return size, compact.root()

    # -- tree heads ---------------------------------------------------------------------

    def _insert_head(self, conn: Connection, size: int, root: bytes) -> SignedTreeHead:
        moment = self._clock()
        head = self.signer.sign_head(size, root, canonical.rfc3339(moment))
        self._sql.record_head(conn, {"node": head.node, "size": head.size, "root": head.root,
                                     "time": head.time, "signature": head.signature,
                                     "created_at": moment}, int(moment.timestamp()))
        return head

    def sign_head(self, conn: Connection | None = None, *, force: bool = False) -> SignedTreeHead:
        """Sign a head over everything appended so far (in `conn`, or committed).

        Without `force`, returns the latest head when nothing was appended since.
        """
        if conn is None:
            with self.engine.begin() as own:
                return self.sign_head(own, force=force)
        locked = self._lock(conn, 0)
        compact = self._compact(conn, locked.size, locked.prev_tip)
        self._remember(compact, locked.tip)
        if locked.size == locked.signed_size and not force:
            latest = self.latest_head(conn)
            if latest is not None:
                return latest
        return self._insert_head(conn, locked.size, compact.root())

    def latest_head(self, conn: Connection | None = None) -> SignedTreeHead | None:
        with self._reader(conn) as c:
            row = c.execute(select(ledger_heads).order_by(ledger_heads.c.id.desc()).limit(1)).first()
        return None if row is None else _head_from_row(row)

    def heads(self, conn: Connection | None = None) -> list[SignedTreeHead]:
        with self._reader(conn) as c:
            rows = c.execute(select(ledger_heads).order_by(ledger_heads.c.id))
            return [_head_from_row(r) for r in rows]

    # -- reading and proving --------------------------------------------------------------

    def _reader(self, conn: Connection | None):
        return nullcontext(conn) if conn is not None else self.engine.connect()

    def size(self, conn: Connection | None = None) -> int:
        with self._reader(conn) as c:
            return c.execute(select(ledger_state.c.size)).scalar_one()

    def _proof(self, conn: Connection | None, limit: int, build: Callable) -> list[bytes]:
        with self._reader(conn) as c:
            if limit > self.size(c):
                raise BeyondTree(f"tree size {limit} is beyond the ledger's size")
            wanted: list[tuple[int, int]] = []
            build(lambda lv, ix: wanted.append((lv, ix)) or b"\0" * 32)  # which nodes?
            nodes = read_nodes(c, sorted(set(wanted)))
        return build(lambda lv, ix: nodes[(lv, ix)])

    def inclusion_proof(self, index: int, size: int, conn: Connection | None = None) -> list[bytes]:
        """Audit path of entry `index` in the tree of `size` (<= the current size)."""
        return self._proof(conn, size, lambda get: merkle.inclusion_proof(index, size, get))

    def consistency_proof(self, size1: int, size2: int,
                          conn: Connection | None = None) -> list[bytes]:
        """Proof that the tree of `size2` extends the tree of `size1`."""
        return self._proof(conn, size2, lambda get: merkle.consistency_proof(size1, size2, get))

    def root(self, size: int, conn: Connection | None = None) -> bytes:
        """MTH of the first `size` entries, from stored nodes."""
        with self._reader(conn) as c:
            if size > self.size(c):
                raise BeyondTree(f"tree size {size} is beyond the ledger's size")
            return _load_compact(c, size).root()

    def entries(self, start: int = 0, end: int | None = None, *,
                where: EntryFilter | None = None, limit: int | None = None,
                conn: Connection | None = None) -> Iterator[tuple[int, bytes]]:
        """(index, canonical bytes) for indices in [start, end), in order, streamed."""
        query = select(ledger_entries.c.idx, ledger_entries.c.entry).where(
            ledger_entries.c.idx >= start).order_by(ledger_entries.c.idx)
        if end is not None:
            query = query.where(ledger_entries.c.idx < end)
        if where is not None:
            query = query.where(*where.clauses())
        if limit is not None:
            query = query.limit(limit)
        with self._reader(conn) as c:
            result = c.execution_options(stream_results=True, yield_per=5000).execute(query)
            for row in result:
                yield row.idx, row.entry

    def entries_with_hashes(self, start: int, end: int) -> Iterator[tuple[int, bytes, bytes]]:
        """(index, bytes, stored leaf hash) for indices in [start, end), streamed (exports)."""
        c = ledger_entries.c
        query = (select(c.idx, c.entry, c.leaf_hash).where(c.idx >= start, c.idx < end)
                 .order_by(c.idx))
        with self.engine.connect() as conn:
            yield from conn.execution_options(stream_results=True, yield_per=5000).execute(query)

    def find_query(self, query_id: str, conn: Connection | None = None) -> list[tuple[int, bytes]]:
        """Every entry of one query (its phases), in ledger order."""
        with self._reader(conn) as c:
            rows = c.execute(select(ledger_entries.c.idx, ledger_entries.c.entry)
                             .where(ledger_entries.c.query_id == query_id)
                             .order_by(ledger_entries.c.idx))
            return [(r.idx, r.entry) for r in rows]

    def verify_all(self, *, check_columns: bool = False,
                   progress: Callable[[str, int, int], None] | None = None):
        """Recompute everything from the stored entry bytes; see integrity.verify_ledger.

        Returns an integrity.IntegrityReport naming each altered entry, node or head.
        """
        from node.ledger.integrity import verify_ledger
        return verify_ledger(self.engine, self.signer.keyring, check_columns=check_columns,
                             progress=progress)
