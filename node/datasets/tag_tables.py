"""Tag tables: building, storing and diffing what partners sync.

For a dataset version, partner and key epoch the node keeps each row's tag F_k(y)[:t]
(and, where the grant allows labels, its sealed label) in row order, chunk-aligned with
the stored rows. Served tables are derived from those: all rows, or the rows that
satisfy a predicate, sorted by tag so their order says nothing about the source. No
OPRF evaluation is repeated to filter rows or to refresh a version.

Labels are bound to owner, partner, dataset and epoch (not the version), so a row that
is unchanged in a refreshed version keeps its exact label and a refresh syncs as a delta.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

import numpy as np
from sqlalchemy import Connection, insert, select

from protocols import labels

from node.storage.schema import row_tags, tag_chunks, tag_tables

CHUNK_TAGS = 65536  # tags per stored chunk of a served table


def label_context(owner: str, partner: str, dataset: str, epoch: int) -> bytes:
    # version 0: labels outlive versions (see the module docstring)
    return labels.label_context(owner=owner, partner=partner, dataset=dataset, version=0, epoch=epoch)


def label_length(grant) -> int:
    return labels.sealed_size(grant.label_pad_to) if grant.label_attributes else 0


@dataclass
class Arrays:
    """A table in memory: tags (fixed-width bytes) and labels aligned with them."""
    tags: np.ndarray
    labels: np.ndarray | None

    @classmethod
    def from_bytes(cls, tags: bytes, tag_length: int, lab: bytes | None, label_length: int) -> "Arrays":
        t = np.frombuffer(tags, dtype=f"S{tag_length}")
        lv = np.frombuffer(lab, dtype=f"V{label_length}") if label_length and lab is not None else None
        return cls(t, lv)

    def sorted(self) -> "Arrays":
        order = np.argsort(self.tags, kind="stable")
        return Arrays(self.tags[order], None if self.labels is None else self.labels[order])

    def select(self, mask: np.ndarray) -> "Arrays":
        return Arrays(self.tags[mask], None if self.labels is None else self.labels[mask])

    def tag_bytes(self) -> bytes:
        return self.tags.tobytes()

    def label_bytes(self) -> bytes:
        return b"" if self.labels is None else self.labels.tobytes()

    def digest(self) -> bytes:
        return table_digest(self.tag_bytes(), self.label_bytes())


def table_digest(tags: bytes, label_bytes: bytes) -> bytes:
    h = hashlib.sha256(tags)
    h.update(label_bytes)
    return h.digest()


def store_row_tags(conn: Connection, dataset_id: int, partner: str, epoch: int, seq: int,
                   tags: bytes, label_bytes: bytes | None) -> None:
    conn.execute(insert(row_tags).values(dataset_id=dataset_id, partner=partner, epoch=epoch,
                                         seq=seq, tags=tags, labels=label_bytes or None))


def iter_row_tags(conn: Connection, dataset_id: int, partner: str, epoch: int
                  ) -> Iterator[tuple[bytes, bytes | None]]:
    c = row_tags.c
    seqs = conn.execute(select(c.seq).where(c.dataset_id == dataset_id, c.partner == partner,
                                            c.epoch == epoch).order_by(c.seq)).scalars().all()
    for seq in seqs:
        row = conn.execute(select(c.tags, c.labels).where(
            c.dataset_id == dataset_id, c.partner == partner, c.epoch == epoch, c.seq == seq)).one()
        yield row.tags, row.labels


def store_table(conn: Connection, dataset_id: int, partner: str, epoch: int, predicate: str,
                tag_length: int, label_len: int, table: Arrays, *, now: datetime) -> int:
    """Store a sorted table, created `now` (the time of the caller's context clock);
    returns its id."""
    tags, lab = table.tag_bytes(), table.label_bytes()
    table_id = conn.execute(insert(tag_tables).values(
        dataset_id=dataset_id, partner=partner, epoch=epoch, predicate=predicate,
        tag_length=tag_length, label_length=label_len, row_count=len(table.tags),
        digest=table_digest(tags, lab), created_at=now)).inserted_primary_key[0]
    rows = [{"table_id": table_id, "seq": i,
             "tags": tags[off * tag_length:(off + CHUNK_TAGS) * tag_length],
             "labels": lab[off * label_len:(off + CHUNK_TAGS) * label_len] if label_len else None}
            for i, off in enumerate(range(0, len(table.tags), CHUNK_TAGS))]
    conn.execute(insert(tag_chunks), rows or [{"table_id": table_id, "seq": 0, "tags": b"", "labels": None}])
    return table_id


def iter_table_chunks(conn: Connection, table_id: int) -> Iterator[tuple[bytes, bytes | None]]:
    seqs = conn.execute(select(tag_chunks.c.seq).where(tag_chunks.c.table_id == table_id)
                        .order_by(tag_chunks.c.seq)).scalars().all()
    for seq in seqs:
        row = conn.execute(select(tag_chunks.c.tags, tag_chunks.c.labels).where(
            tag_chunks.c.table_id == table_id, tag_chunks.c.seq == seq)).one()
        yield row.tags, row.labels


def load_table(conn: Connection, table) -> Arrays:
    parts = list(iter_table_chunks(conn, table.id))
    return Arrays.from_bytes(b"".join(p[0] for p in parts), table.tag_length,
                             b"".join(p[1] or b"" for p in parts), table.label_length)


def delta(base: Arrays, new: Arrays) -> tuple[Arrays, np.ndarray]:
    """(rows added, tags removed) from `base` to `new`; a changed label counts as both.

    Both tables are sorted by tag, so once the tags only one side has are set aside the
    remaining rows line up one to one and labels compare element-wise.
    """
    only_new = ~_in_sorted(new.tags, base.tags)
    only_base = ~_in_sorted(base.tags, new.tags)
    if new.labels is not None and base.labels is not None:
        changed = new.labels[~only_new] != base.labels[~only_base]
        if changed.any():
            common_new = np.flatnonzero(~only_new)[changed]
            common_base = np.flatnonzero(~only_base)[changed]
            only_new[common_new] = True
            only_base[common_base] = True
    return new.select(only_new), base.tags[only_base]


def _in_sorted(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Membership of each value in a sorted table (searchsorted beats isin's re-sort)."""
    if len(table) == 0:
        return np.zeros(len(values), dtype=bool)
    return table[np.searchsorted(table, values).clip(max=len(table) - 1)] == values


def apply_delta(base: Arrays, added: Arrays, removed: np.ndarray) -> Arrays:
    """The table a delta leads to (the caller checks its digest)."""
    keep = base.select(~_in_sorted(base.tags, np.sort(removed)))
    tags = np.concatenate([keep.tags, added.tags])
    lab = None if base.labels is None else np.concatenate([keep.labels, added.labels])
    return Arrays(tags, lab).sorted()


class RowTagger:
    """Computes, chunk by chunk, every granted partner's row tags (and labels) in workers.

    Chunks go to the pool as they are read; results are stored in order as they come
    back, with a bounded number in flight, and `finish` stores each partner's sorted
    table of all rows.
    """

    def __init__(self, ctx, conn: Connection, owner: str, declared, dataset_id: int, id_type: str,
                 keys: dict[str, tuple[int, bytes]]) -> None:
        from collections import deque

        from adapters import IdType
        from node.keys.workers import key_purpose
        self.ctx, self.conn, self.declared, self.dataset_id = ctx, conn, declared, dataset_id
        self.kind = IdType(id_type)
        self.grants = {g.partner: g for g in declared.grants if g.partner in keys}
        self.keys = keys
        self.purposes = {p: key_purpose(declared.name, p, e) for p, (e, _) in keys.items()}
        self.contexts = {p: label_context(owner, p, declared.name, e) for p, (e, _) in keys.items()}
        self.parts: dict[str, list[tuple[bytes, bytes]]] = {p: [] for p in keys}
        self.in_flight: deque = deque()
        # Full F_k(y) per evaluated chunk for partners with a threshold grant: the threshold
        # table seals under them without evaluating again; kept only for this build.
        self.outputs: dict[str, dict[int, bytes]] = {
            p: {} for p, g in self.grants.items()
            if g.threshold_column and "threshold" in {k.value for k in g.kinds}}

    def add_chunk(self, seq: int, rows: list[list]) -> None:
        from adapters import encode
        inputs = [encode(self.kind, subject) for subject, _ in rows]
        for partner, (epoch, sealed) in self.keys.items():
            grant = self.grants[partner]
            label_rows = ([{a: attrs.get(a, "") for a in grant.label_attributes} for _, attrs in rows]
                          if grant.label_attributes else None)
            fut = self.ctx.pool.submit_rows(sealed, self.purposes[partner], inputs,
                                            self.declared.tag_length, self.declared.mode_number,
                                            label_rows, self.contexts[partner], grant.label_pad_to,
                                            partner in self.outputs)
            self.in_flight.append((partner, seq, fut))
        self._drain(2 * self.ctx.pool.workers * max(1, len(self.keys)))

    def keep(self, partner: str, seq: int, tags: bytes, lab: bytes | None, mask) -> None:
        """Carry rows of an earlier version over (a refresh): no evaluation, same labels."""
        grant = self.grants[partner]
        kept = Arrays.from_bytes(tags, self.declared.tag_length, lab, label_length(grant)).select(mask)
        t, lb = kept.tag_bytes(), kept.label_bytes()
        store_row_tags(self.conn, self.dataset_id, partner, self.keys[partner][0], seq, t, lb)
        self.parts[partner].append((t, lb))

    def _drain(self, limit: int) -> None:
        while len(self.in_flight) > limit:
            partner, seq, fut = self.in_flight.popleft()
            tags, lab, *outs = fut.result()
            if outs:
                self.outputs[partner][seq] = outs[0]
            store_row_tags(self.conn, self.dataset_id, partner, self.keys[partner][0], seq, tags, lab)
            self.parts[partner].append((tags, lab))

    def finish(self, progress=lambda *a: None) -> list[tuple[str, int]]:
        self._drain(0)
        done = []
        for i, (partner, (epoch, _)) in enumerate(self.keys.items()):
            grant = self.grants[partner]
            parts = self.parts.pop(partner)
            table = Arrays.from_bytes(b"".join(p[0] for p in parts), self.declared.tag_length,
                                      b"".join(p[1] for p in parts), label_length(grant)).sorted()
            store_table(self.conn, self.dataset_id, partner, epoch, "", self.declared.tag_length,
                        label_length(grant), table, now=self.ctx.clock.now())
            done.append((partner, epoch))
            progress("tags", i + 1, len(self.keys))
        return done
