"""The agency's threshold tables: Paillier keys sealed at rest, tables built ahead of queries.

Per dataset x partner x key epoch x income column the node draws one 3072-bit Paillier
key (``phe``), sealed under the node KEK (node/keys/paillier_keys.py); its factors reach
only the serving process and the node's own workers that encrypt incomes or read signs.

Per dataset version under that key the node stores the table the partner syncs: for
every row with a usable income, its tag F_k(y)[:t] under the partner's epoch OPRF key
and Enc(income) sealed under the row's full OPRF output, sorted by tag (the order says
nothing about the source). This is the per-epoch preparation, and it runs where the
other per-epoch work runs: when a version is registered or refreshed, and when a key
epoch starts, inside the same transaction, so a partner never sees a version or epoch
without its table. A refresh keeps every kept row's entry (rows are immutable within a
refresh and the sealing is bound to the key, not the version) and encrypts only the
added rows; a partner holding the previous version's table then syncs only the
difference (``table_delta``). A table missing for another reason (a grant that gained ``threshold``
after registration) is prepared in the background on the first request, or with
``shuqiao dataset prepare``; requests meanwhile are refused with that reason.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from adapters import IdType, encode
from protocols.oprf import OUTPUT_LEN
from protocols.threshold_table import income_label_context, income_label_length, table_digest

from node.runtime import admin_log
from node.datasets.stored_rows import iter_chunks
from node.keys.workers import key_purpose as oprf_key_purpose
from node.keys.workers import sealed_key as oprf_sealed_key
from node.datasets.statistics_rows import usable_income
from node.storage.schema import threshold_chunks, threshold_tables
from node.datasets.tag_tables import Arrays, delta, iter_row_tags
from node.keys.paillier_keys import KeyRow, PaillierSecret, ensure_key, find_key, unseal_key
from node.keys.paillier_keys import key_purpose  # noqa: F401  (callers find it here)
from node.core.progress import Progress, no_progress

log = logging.getLogger(__name__)

ROWS_PER_TASK = 4096      # rows per worker task (OPRF, Paillier encryption, sealing)
CHUNK_ROWS = 4096         # rows per stored chunk (~4 MiB of sealed ciphertexts)


def private_key(ctx, key: KeyRow) -> PaillierSecret:
    """The private half of a threshold key, unsealed once per node context and kept."""
    return ctx.caches.paillier_secrets.get_or_build((key.id, key.key_id),
                                                    lambda: unseal_key(ctx.kek, key))


# -- tables -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRow:
    """A stored table's header (the key's public part, sizes, digest)."""
    id: int
    key: KeyRow
    dataset_id: int
    tag_length: int
    label_length: int
    rows: int
    unusable: int
    digest: bytes


def find_table(conn: Connection, dataset_id: int, key: KeyRow) -> TableRow | None:
    c = threshold_tables.c
    row = conn.execute(select(threshold_tables).where(
        c.dataset_id == dataset_id, c.key_ref == key.id)).first()
    if row is None:
        return None
    return TableRow(row.id, key, row.dataset_id, row.tag_length, row.label_length,
                    row.row_count, row.unusable_count, bytes(row.digest))


def served_table(conn: Connection, dataset: str, dataset_id: int, partner: str, epoch: int,
                 column: str) -> TableRow | None:
    key = find_key(conn, dataset, partner, epoch, column)
    return find_table(conn, dataset_id, key) if key is not None else None


def iter_table_chunks(conn: Connection, table_id: int) -> Iterator[tuple[bytes, bytes]]:
    """(tags, sealed labels) of a stored table, chunk by chunk in tag order."""
    c = threshold_chunks.c
    seqs = conn.execute(select(c.seq).where(c.table_id == table_id).order_by(c.seq)).scalars().all()
    for seq in seqs:
        row = conn.execute(select(c.tags, c.labels).where(
            c.table_id == table_id, c.seq == seq)).one()
        yield bytes(row.tags), bytes(row.labels)


def load_arrays(conn: Connection, table: TableRow) -> Arrays:
    """A stored table in memory (tags and sealed labels, tag order)."""
    parts = list(iter_table_chunks(conn, table.id))
    return Arrays.from_bytes(b"".join(p[0] for p in parts), table.tag_length,
                             b"".join(p[1] for p in parts), table.label_length)


def table_delta(conn: Connection, table: TableRow, held_digest: bytes
                ) -> tuple[Arrays, np.ndarray] | None:
    """(rows added, tags removed) from the table under the same key whose digest the
    partner holds to ``table``; None when there is none or the whole table is as cheap."""
    c = threshold_tables.c
    row = conn.execute(select(c.dataset_id).where(
        c.key_ref == table.key.id, c.digest == held_digest, c.id != table.id)).first()
    if row is None:
        return None
    base = find_table(conn, row.dataset_id, table.key)
    added, removed = delta(load_arrays(conn, base), load_arrays(conn, table))
    if 2 * (len(added.tags) + len(removed)) >= table.rows:
        return None
    return added, removed


@dataclass(frozen=True)
class Target:
    """What to prepare: a stored version, one partner's epoch, the grant's column."""
    dataset: str
    dataset_id: int
    version: int
    id_type: str
    partner: str
    epoch: int
    column: str
    tag_length: int
    mode_number: int
    base_dataset_id: int | None = None  # the version this one was refreshed from


def _version_incomes(conn: Connection, t: Target, kek):
    """(encoded ids, incomes, row tags, (chunk, offset) per row) of the usable rows, and
    how many rows were not usable."""
    kind = IdType(t.id_type)
    ids, incomes, keep, where, total = [], [], [], [], 0
    for seq, rows in iter_chunks(conn, t.dataset_id, kek):
        for offset, (subject, attrs) in enumerate(rows):
            value = usable_income(attrs.get(t.column, ""))
            keep.append(value is not None)
            if value is not None:
                ids.append(encode(kind, subject))
                incomes.append(value)
                where.append((seq, offset))
            total += 1
    tags = b"".join(tags for tags, _ in iter_row_tags(conn, t.dataset_id, t.partner, t.epoch))
    row_tags = np.frombuffer(tags, dtype=f"S{t.tag_length}")
    if len(row_tags) != total:
        raise RuntimeError(f"row tags of {t.dataset!r} for {t.partner!r} epoch {t.epoch} "
                           "are missing; rotate the key to rebuild them")
    return ids, incomes, row_tags[np.array(keep, dtype=bool)], where, total - len(ids)


def build(ctx, conn: Connection, t: Target, key: KeyRow, progress: Progress = no_progress,
          outputs: dict[int, bytes] | None = None):
    """The sorted (tags, labels) of the table for ``t`` under ``key`` and its unusable count.

    Reads only; heavy work runs in the node's worker processes. Entries of the version
    ``t`` was refreshed from (same key) are reused by tag; the rest are encrypted. Rows
    whose full OPRF output the caller's tagger kept (``outputs``: chunk -> 64 bytes per
    row) are sealed under it; the others are evaluated again.
    """
    ids, incomes, tags, where, unusable = _version_incomes(conn, t, ctx.kek)
    labels, todo = _reused_labels(conn, t, key, tags)
    positions = np.flatnonzero(todo)
    flight = _InFlight(t, tags, labels, len(positions), progress)
    outputs = outputs or {}
    secret = private_key(ctx, key).expose()
    oprf_sealed = oprf_sealed_key(conn, t.dataset, t.partner, t.epoch)
    purpose = oprf_key_purpose(t.dataset, t.partner, t.epoch)
    context = income_label_context(owner=ctx.config.node.id, partner=t.partner, dataset=t.dataset,
                                   epoch=t.epoch, key_id=key.key_id)
    known = np.fromiter((where[i][0] in outputs for i in positions), bool, count=len(positions))
    w = OUTPUT_LEN
    for subset, evaluated in ((positions[known], True), (positions[~known], False)):
        for a in range(0, len(subset), ROWS_PER_TASK):
            part = subset[a:a + ROWS_PER_TASK]
            if evaluated:
                outs = b"".join(outputs[s][o * w:(o + 1) * w] for s, o in (where[i] for i in part))
                heads = np.array([outs[j * w:j * w + t.tag_length] for j in range(len(part))],
                                 dtype=f"S{t.tag_length}")
                if not np.array_equal(heads, tags[part]):
                    raise RuntimeError("row tags and kept evaluations disagree; rotate the key")
                future = ctx.pool.submit_threshold_blobs(
                    secret, [incomes[i] for i in part], outs, context)
            else:
                future = ctx.pool.submit_threshold_rows(
                    oprf_sealed, purpose, [ids[i] for i in part], t.tag_length, t.mode_number,
                    secret, [incomes[i] for i in part], context)
            flight.add(part, future, evaluated)
            flight.drain(2 * ctx.pool.workers)
    flight.drain(0)
    order = np.argsort(tags, kind="stable")
    return tags[order], labels[order], unusable, len(ids) - len(positions)


def _reused_labels(conn: Connection, t: Target, key: KeyRow, tags: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(labels, still to encrypt): entries of the base version's table under the same key
    are reused by tag; with no base, every row is still to encrypt."""
    labels = np.zeros(len(tags), dtype=f"V{income_label_length(key.n)}")
    todo = np.ones(len(tags), dtype=bool)
    base = find_table(conn, t.base_dataset_id, key) if t.base_dataset_id is not None else None
    if base is not None:
        old = load_arrays(conn, base)
        old_tags, old_labels = old.tags, old.labels
        pos = np.minimum(np.searchsorted(old_tags, tags), max(len(old_tags) - 1, 0))
        hit = old_tags[pos] == tags if len(old_tags) else np.zeros(len(tags), bool)
        labels[hit] = old_labels[pos[hit]]
        todo = ~hit
    return labels, todo


class _InFlight:
    """Worker batches under way, drained in order into ``labels`` with their progress."""

    def __init__(self, t: Target, tags: np.ndarray, labels: np.ndarray, total: int,
                 progress: Progress) -> None:
        self.t, self.tags, self.labels, self.total, self.progress = t, tags, labels, total, progress
        self.stage, self.done, self.queue = f"threshold table for {t.partner}", 0, deque()
        progress(self.stage, 0, total)

    def add(self, part: np.ndarray, future, evaluated: bool) -> None:
        self.queue.append((part, future, evaluated))

    def drain(self, limit: int) -> None:
        while len(self.queue) > limit:
            part, future, evaluated = self.queue.popleft()
            if evaluated:  # sealed under kept outputs (their tags were checked on submission)
                got_labels = future.result()
            else:
                got_tags, got_labels = future.result()
                if not np.array_equal(np.frombuffer(got_tags, dtype=f"S{self.t.tag_length}"),
                                      self.tags[part]):
                    raise RuntimeError("row tags and fresh evaluations disagree; rotate the key")
            self.labels[part] = np.frombuffer(got_labels, dtype=self.labels.dtype)
            self.done += len(part)
            self.progress(self.stage, self.done, self.total)


def store(ctx, conn: Connection, t: Target, key: KeyRow, tags: np.ndarray, labels: np.ndarray,
          unusable: int) -> TableRow:
    """Store a built table and ledger it (key id, sizes and digest; never a row)."""
    digest = table_digest(key.key_id, tags, labels)
    table_id = conn.execute(insert(threshold_tables).values(
        dataset_id=t.dataset_id, key_ref=key.id, tag_length=t.tag_length,
        label_length=income_label_length(key.n), row_count=len(tags), unusable_count=unusable,
        digest=digest, created_at=ctx.clock.now())).inserted_primary_key[0]
    for seq, a in enumerate(range(0, len(tags), CHUNK_ROWS)):
        conn.execute(insert(threshold_chunks).values(
            table_id=table_id, seq=seq, tags=tags[a:a + CHUNK_ROWS].tobytes(),
            labels=labels[a:a + CHUNK_ROWS].tobytes()))
    # The key as SHA-256 of its modulus in full (the key id is its first 16 bytes): 64 hex
    # digits are machine output to the ledger's identifier guard; 32 could look like one.
    modulus = key.n.to_bytes((key.n.bit_length() + 7) // 8, "big")
    admin_log.record(ctx, conn, "threshold_prepared", t.dataset, version=t.version,
                     partner=t.partner, epoch=t.epoch, column=t.column,
                     key_sha256=hashlib.sha256(modulus).hexdigest(), rows=len(tags),
                     unusable=unusable, sha256=digest.hex())
    return find_table(conn, t.dataset_id, key)


def prepare_in(ctx, conn: Connection, t: Target, progress: Progress = no_progress,
               outputs: dict[int, bytes] | None = None) -> TableRow:
    """Key and table for ``t`` inside the caller's transaction (registration, refresh,
    rotation). A version without a usable income gets an empty table (queries are then
    refused with that reason)."""
    key = ensure_key(conn, ctx.kek, t.dataset, t.partner, t.epoch, t.column, now=ctx.clock.now())
    found = find_table(conn, t.dataset_id, key)
    if found is not None:
        return found
    tags, labels, unusable, reused = build(ctx, conn, t, key, progress, outputs)
    table = store(ctx, conn, t, key, tags, labels, unusable)
    log.info("threshold table of %s v%d for %s epoch %d: %d rows (%d reused), %d unusable",
             t.dataset, t.version, t.partner, t.epoch, table.rows, reused, unusable)
    return table


def prepare(ctx, t: Target, progress: Progress = no_progress) -> TableRow:
    """Key and table for ``t`` in short transactions of their own (the background path):
    the heavy build reads from a plain connection, so query logging is never held up."""
    ctx.ledger  # loaded before the write transactions
    try:
        with ctx.engine.begin() as conn:
            ensure_key(conn, ctx.kek, t.dataset, t.partner, t.epoch, t.column, now=ctx.clock.now())
    except IntegrityError:  # another process drew it first
        pass
    with ctx.engine.connect() as conn:
        key = find_key(conn, t.dataset, t.partner, t.epoch, t.column)
        found = find_table(conn, t.dataset_id, key)
        if found is not None:
            return found
        tags, labels, unusable, _ = build(ctx, conn, t, key, progress)
    try:
        with ctx.engine.begin() as conn:
            return store(ctx, conn, t, key, tags, labels, unusable)
    except IntegrityError:  # prepared concurrently elsewhere: theirs stands
        with ctx.engine.connect() as conn:
            return find_table(conn, t.dataset_id, key)


def prepare_in_background(ctx, t: Target) -> bool:
    """Start preparing ``t`` in a thread unless that is already under way; True if started."""
    job = (t.dataset_id, t.partner, t.epoch, t.column)
    if not ctx.caches.preparing.claim(job):
        return False

    def run() -> None:
        try:
            prepare(ctx, t)
        except Exception as exc:  # an incident: type and code locations, never a message
            from node.core.incidents import record
            record(f"preparing the threshold table of {t.dataset} for {t.partner}", exc, log)
        finally:
            ctx.caches.preparing.release(job)

    threading.Thread(target=run, name=f"threshold-{t.dataset}-{t.partner}", daemon=True).start()
    return True


def targets(declared, dataset_id: int, version: int, id_type: str, attributes, epochs: dict[str, int],
            base_dataset_id: int | None = None) -> list[Target]:
    """What a version needs prepared: each threshold grant whose column is registered,
    for the partners in ``epochs`` (partner -> epoch)."""
    out = []
    for g in declared.grants:
        kinds = {k.value for k in g.kinds}
        if ("threshold" in kinds and g.threshold_column and g.threshold_column in attributes
                and g.partner in epochs):
            out.append(Target(declared.name, dataset_id, version, id_type, g.partner,
                              epochs[g.partner], g.threshold_column, declared.tag_length,
                              declared.mode_number, base_dataset_id))
    return out
