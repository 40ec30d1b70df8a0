"""The asking side's copies of partners' tag tables: fetched, checked, cached, matched.

A table is fetched once per (partner, dataset, version, key epoch, predicate) and
checked before it is kept: its SHA-256 digest and size must be the announced ones, its
tags strictly sorted, and the partner's key for the epoch the one seen before (pinned).
A refreshed version arrives as a delta against the version held, and the result must
reproduce the announced digest exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import insert, select

from protocols import oprf
from protocols.group import is_valid_element

from node.asker.streams import call, download
from node.core.errors import NotFound, PartnerError
from node.core.progress import Progress, no_progress
from node.datasets.tag_tables import CHUNK_TAGS, Arrays, apply_delta
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.runtime.context import NodeContext
from node.storage.schema import peer_tag_chunks, peer_tag_tables
from node.transport.status import partner_refusal


@dataclass(frozen=True)
class CachedTable:
    id: int
    partner: str
    dataset: str
    version: int
    epoch: int
    predicate: str
    tag_length: int
    label_length: int
    row_count: int


def _cached(row, partner) -> CachedTable:
    return CachedTable(row.id, partner, row.dataset, row.version, row.epoch, row.predicate,
                       row.tag_length, row.label_length, row.row_count)


def dataset_info(stub, partner: str, dataset: str, deadline: float) -> pb.DatasetInfo:
    """The partner's listing of `dataset`. A listing changes nothing at the partner, so
    one that fails transiently (a partner restarting) is asked again (transport/channels.py)."""
    from node.transport.channels import retrying
    listing = retrying(lambda: call(partner, stub.ListDatasets, pb.ListDatasetsRequest(), deadline),
                       what=f"listing the datasets of {partner}")
    for info in listing.datasets:
        if info.name == dataset:
            return info
    offered = ", ".join(i.name for i in listing.datasets) or "none"
    raise partner_refusal(partner, f"offers no dataset {dataset!r} to this node (offered: {offered})",
                          NotFound)


def prepare_table(stub, partner: str, dataset: str, predicate: str, deadline: float) -> pb.DatasetInfo:
    return call(partner, stub.PrepareTable,
                pb.PrepareTableRequest(dataset=dataset, predicate=predicate), deadline)


def sync_tag_table(ctx: NodeContext, stub, partner: str, info: pb.DatasetInfo,
                   progress: Progress = no_progress) -> CachedTable:
    """Make sure the partner's table described by `info` is cached; returns it."""
    t = peer_tag_tables.c
    if info.oprf_mode not in (oprf.MODE_OPRF, oprf.MODE_VOPRF) or (
            info.oprf_mode == oprf.MODE_VOPRF and not is_valid_element(info.public_key)):
        raise PartnerError(partner, "announced an unsupported OPRF mode or an invalid public key")
    same = (t.partner == partner, t.dataset == info.name, t.epoch == info.epoch)
    with ctx.engine.connect() as conn:
        pinned = conn.execute(select(t.public_key, t.oprf_mode).where(*same)).first()
        row = conn.execute(select(peer_tag_tables).where(
            *same, t.version == info.version, t.predicate == info.predicate)).first()
        base = None if info.predicate else conn.execute(select(peer_tag_tables).where(
            *same, t.predicate == "", t.version < info.version).order_by(t.version.desc())).first()
    if pinned is not None and (pinned.public_key != info.public_key or pinned.oprf_mode != info.oprf_mode):
        raise PartnerError(partner, f"presents a different key for {info.name!r} epoch {info.epoch} "
                           "than it did before (inconsistent key); refusing to query it")
    if row is not None:
        if row.digest != info.tag_table_digest:
            raise PartnerError(partner, f"tag table of {info.name!r} version {info.version} changed "
                               "under the same version number; refusing it (report this to the partner)")
        return _cached(row, partner)
    request = pb.SyncTagTableRequest(dataset=info.name, version=info.version, epoch=info.epoch,
                                     predicate=info.predicate,
                                     base_version=base.version if base is not None else 0)
    table = _receive(ctx, stub, partner, info, request, base, progress)
    if table.digest() != info.tag_table_digest or len(table.tags) != info.row_count:
        raise PartnerError(partner, "tag table does not match its announced digest and size")
    if len(table.tags) > 1 and not bool(np.all(table.tags[1:] > table.tags[:-1])):
        raise PartnerError(partner, "tag table is not strictly sorted; refusing it")
    return _store(ctx, partner, info, table)


def _receive(ctx, stub, partner, info, request, base, progress) -> Arrays:
    tlen, llen = info.tag_length, info.label_length
    tags, labs, removed = [], [], []
    header = None
    for msg in download(partner, stub.SyncTagTable, request, ctx.config.grpc.deadline_seconds):
        body = msg.WhichOneof("body")
        if body == "header":
            header = msg
        elif header is None:
            raise PartnerError(partner, "sent table rows before the table header")
        elif body == "rows":
            n, rem = divmod(len(msg.rows.tags), tlen)
            if rem or len(msg.rows.labels) != n * llen:
                raise PartnerError(partner, "sent a malformed tag table")
            tags.append(msg.rows.tags)
            labs.append(msg.rows.labels)
            progress("sync", sum(map(len, tags)) // tlen, info.row_count)
        elif body == "removed_tags":
            if len(msg.removed_tags) % tlen:
                raise PartnerError(partner, "sent a malformed delta")
            removed.append(msg.removed_tags)
    if header is None or header.header.tag_table_digest != info.tag_table_digest:
        raise PartnerError(partner, "tag table header does not match the dataset listing")
    received = Arrays.from_bytes(b"".join(tags), tlen, b"".join(labs), llen)
    if header.base_version:
        if base is None or header.base_version != base.version:
            raise PartnerError(partner, "sent a delta against a version this node does not hold")
        held = load_arrays(ctx, _cached(base, partner))
        return apply_delta(held, received, np.frombuffer(b"".join(removed), dtype=f"S{tlen}"))
    return received


def _store(ctx: NodeContext, partner: str, info: pb.DatasetInfo, table: Arrays) -> CachedTable:
    tlen, llen = info.tag_length, info.label_length
    tags, labs = table.tag_bytes(), table.label_bytes()
    with ctx.engine.begin() as conn:
        table_id = conn.execute(insert(peer_tag_tables).values(
            partner=partner, dataset=info.name, version=info.version, epoch=info.epoch,
            predicate=info.predicate, tag_length=tlen, label_length=llen,
            row_count=len(table.tags), digest=info.tag_table_digest, public_key=info.public_key,
            oprf_mode=info.oprf_mode, fetched_at=ctx.clock.now())).inserted_primary_key[0]
        conn.execute(insert(peer_tag_chunks), [
            {"table_id": table_id, "seq": i, "tags": tags[off * tlen:(off + CHUNK_TAGS) * tlen],
             "labels": labs[off * llen:(off + CHUNK_TAGS) * llen] if llen else None}
            for i, off in enumerate(range(0, max(1, len(table.tags)), CHUNK_TAGS))])
    return CachedTable(table_id, partner, info.name, info.version, info.epoch, info.predicate,
                       tlen, llen, len(table.tags))


def load_arrays(ctx: NodeContext, table: CachedTable) -> Arrays:
    """A cached table in memory (kept in the context for its next query)."""
    return ctx.caches.peer_tables.get_or_build(table.id, lambda: _read_arrays(ctx, table))


def _read_arrays(ctx: NodeContext, table: CachedTable) -> Arrays:
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(peer_tag_chunks.c.tags, peer_tag_chunks.c.labels).where(
            peer_tag_chunks.c.table_id == table.id).order_by(peer_tag_chunks.c.seq)).all()
    return Arrays.from_bytes(b"".join(r.tags for r in rows), table.tag_length,
                             b"".join(r.labels or b"" for r in rows), table.label_length)


def match_tags(asked: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found, position) of each asked tag in the sorted table: O(m log n), no re-sort."""
    if len(table) == 0:
        return np.zeros(len(asked), dtype=bool), np.zeros(len(asked), dtype=np.int64)
    pos = np.searchsorted(table, asked).clip(max=len(table) - 1)
    return table[pos] == asked, pos
