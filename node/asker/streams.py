"""One query as this node's client, for every kind: its record, its calls, its receipt, and
the copies of partners' tag tables it matches against.

`asker_record` and `logged_query` give every query exactly one record in this node's
query log (role "asker"), whatever happens: a partner's refusal or failure with its
reason, anything else as aborted. Every call to a partner goes through `partner_call`,
which turns its failure into a PartnerError (the status read by node/transport/
status.py): `call` (one request, one answer), `download` (a table's stream) and
`converse`, which drives a session over an `Exchange`, one bidirectional stream whose
outgoing messages may come from more than one thread (a session's answers and a
pipeline producing batches). `accept_receipt` checks the answerer's signed receipt for
this node's ledger entry.

Partners' tag tables are fetched, checked, cached and matched here. A table is fetched once per (partner, dataset, version, key epoch, predicate) and
checked before it is kept: its SHA-256 digest and size must be the announced ones, its
tags strictly sorted, and the partner's key for the epoch the one seen before (pinned).
A refreshed version arrives as a delta against the version held, and the result must
reproduce the announced digest exactly.
"""
from __future__ import annotations

import logging
import queue
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import numpy as np
from sqlalchemy import insert, select

from protocols import oprf
from protocols.group import is_valid_element

from node.core.errors import NotFound, PartnerError
from node.core.progress import Progress, no_progress
from node.datasets.tag_tables import CHUNK_TAGS, Arrays, apply_delta
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.runtime.context import NodeContext
from node.storage.schema import peer_tag_chunks, peer_tag_tables
from node.transport.status import REFUSALS, partner_refusal, rpc_error

log = logging.getLogger(__name__)


def asker_record(ctx, partner: str, kind: str, dataset: str, purpose: str, elements: int,
                 **fields) -> QueryRecord:
    """A new query's record, under a fresh query id, started at the context's time."""
    return QueryRecord(query_id=str(uuid.uuid4()), role="asker", asker=ctx.config.node.id,
                       answerer=partner, kind=kind, dataset=dataset, purpose=purpose,
                       elements=elements, started_at=ctx.clock.now(), **fields)


@contextmanager
def logged_query(ctx, record: QueryRecord) -> Iterator[QueryRecord]:
    """Run the body as one logged query; its record is written however it ends."""
    try:
        yield record
    except PartnerError as exc:
        record.outcome = "refused" if exc.code in REFUSALS else "failed"
        record.reason = str(exc)
        raise
    except BaseException as exc:
        record.outcome, record.reason = "aborted", type(exc).__name__
        raise
    finally:
        record.write(ctx)


def accept_receipt(ctx: NodeContext, partner: str, record: QueryRecord, summary) -> None:
    """Verify the answerer's signed receipt and keep it for this node's ledger entry.

    The partner's ledger key is pinned on first use. A missing or invalid receipt does
    not lose the answer, but is recorded in the entry's reason (and found by
    `shuqiao audit cross-check`), and the operator is warned.
    """
    from node.ledger import LedgerPublicKey, Receipt, pin_partner_key, verify_receipt
    from node.ledger.entries import ReceiptError
    from node.ledger.signing import SignatureError
    try:
        if summary is None or not summary.receipt:
            raise ReceiptError("the partner sent no receipt")
        key = pin_partner_key(ctx.engine, partner, LedgerPublicKey.from_text(summary.ledger_public_key),
                              now=ctx.clock.now())
        receipt = Receipt.from_bytes(summary.receipt)
        verify_receipt(key, receipt, record.entry(ctx.ledger, "completed").metadata())
        record.receipt = receipt
    except (ReceiptError, SignatureError, ValueError) as exc:
        record.receipt = None
        record.reason = f"receipt missing or invalid: {exc}"
        log.warning("query %s to %s: %s", record.query_id, partner, record.reason)


@contextmanager
def partner_call(partner: str, refused: tuple[type[Exception], ...] = (),
                 describe: Callable[[Exception], str] = str) -> Iterator[None]:
    """A call to `partner`: its failure, and what this node refuses of its answers (one
    of `refused`, in the words of `describe`), raise as PartnerErrors."""
    try:
        yield
    except grpc.RpcError as exc:
        raise rpc_error(partner, exc) from None
    except refused as exc:
        raise PartnerError(partner, describe(exc)) from None


def call(partner: str, method, request, deadline: float):
    """One request and its answer (a unary call)."""
    with partner_call(partner):
        return method(request, timeout=deadline)


def download(partner: str, method, request, deadline: float) -> Iterator:
    """The messages of a server stream (a table sent in chunks), as they arrive."""
    with partner_call(partner):
        yield from method(request, timeout=deadline)


def converse(exchange: Exchange, session, first: Iterable, parse: Callable, to_wire: Callable,
             on_message: Callable[[object, object], None] | None = None):
    """Drive a session (protocols/session.py) over `exchange` to the end of the stream.

    `first` (the header and the session's opening messages, on the wire already) goes
    out, then each answer is `parse`d for the session and its replies go out through
    `to_wire`; `on_message(message, response)` sees each answer after that. Sending ends
    once the session has nothing more to send (its `outgoing_done`, else `finished`).
    The stream is cancelled however this ends. Returns the response on which the session
    finished, or None if the stream ended before it did.
    """
    finishing, closed = None, False
    try:
        exchange.send(*first)
        for response in exchange.responses:
            message = parse(response)
            exchange.send(*map(to_wire, session.handle(message)))
            if on_message is not None:
                on_message(message, response)
            if not closed and getattr(session, "outgoing_done", session.finished):
                exchange.done_sending()
                closed = True
            if session.finished and finishing is None:
                finishing = response
    finally:
        exchange.cancel()  # a no-op once the stream has ended
    return finishing


class Exchange:
    """One bidirectional stream: messages go out through an outbox, answers come in.

    ``limit`` bounds the outbox (0: unbounded): a sender producing faster than the
    network takes then waits, so a large round is held a few messages at a time.
    """

    def __init__(self, method, deadline: float, limit: int = 0) -> None:
        self._outbox: queue.Queue = queue.Queue(limit)
        self._call = method(self._requests(), timeout=deadline)
        self.responses = iter(self._call)

    def _requests(self):
        while (message := self._outbox.get()) is not None:
            yield message

    def send(self, *messages) -> None:
        """Queue messages; raises the call's RpcError if it ended while the outbox was full."""
        for message in messages:
            self._put(message)

    def _put(self, message) -> None:
        while True:
            try:
                self._outbox.put(message, timeout=0.5)
                return
            except queue.Full:
                if self._call.done():  # nobody takes from the outbox any more
                    raise self._call from None  # the call is the RpcError with its status

    def done_sending(self) -> None:
        self._put(None)

    def cancel(self) -> None:
        """End the stream from this side (a no-op once it has ended)."""
        self._call.cancel()
        while True:  # wake the request iterator, even if the outbox is full
            try:
                self._outbox.put_nowait(None)
                return
            except queue.Full:
                try:
                    self._outbox.get_nowait()
                except queue.Empty:
                    pass


# -- partners' tag tables ---------------------------------------------------------------

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


def listing(ctx: NodeContext, stub, partner: str, dataset: str, predicate: str | None, deadline: float,
            max_age: float = 0.0) -> tuple[pb.DatasetInfo, bool]:
    """(the partner's description of `dataset`, whether it came from this node's memory).

    With `max_age` > 0 a description fetched less than that many seconds ago is used
    again (a real-time check would otherwise spend a round trip per applicant on it); a
    query refused because the version or epoch it names is no longer served is asked
    again with a fresh one (node/asker/membership.py)."""
    key = (partner, dataset, predicate or "")
    if max_age > 0:
        held = ctx.caches.peer_listings.get(key)
        if held is not None and time.monotonic() - held[0] < max_age:
            return held[1], True
    info = (prepare_table(stub, partner, dataset, predicate, deadline) if predicate
            else dataset_info(stub, partner, dataset, deadline))
    if max_age > 0:
        ctx.caches.peer_listings.put(key, (time.monotonic(), info))
    return info, False


def forget_listing(ctx: NodeContext, partner: str, dataset: str, predicate: str | None) -> None:
    ctx.caches.peer_listings.put((partner, dataset, predicate or ""), (float("-inf"), None))


def sync_tag_table(ctx: NodeContext, stub, partner: str, info: pb.DatasetInfo,
                   progress: Progress = no_progress) -> CachedTable:
    """Make sure the partner's table described by `info` is cached; returns it.

    A table checked once against a description is known in memory by that description
    (digest and key included), so the next query on it reads no database row."""
    if info.oprf_mode not in (oprf.MODE_OPRF, oprf.MODE_VOPRF) or (
            info.oprf_mode == oprf.MODE_VOPRF and not is_valid_element(info.public_key)):
        raise PartnerError(partner, "announced an unsupported OPRF mode or an invalid public key")
    key = (partner, info.name, info.version, info.epoch, info.predicate, info.tag_table_digest,
           info.public_key, info.oprf_mode, info.row_count)
    return ctx.caches.peer_synced.get(key) or ctx.caches.peer_synced.put(
        key, _sync(ctx, stub, partner, info, progress))


def _sync(ctx: NodeContext, stub, partner: str, info: pb.DatasetInfo, progress: Progress) -> CachedTable:
    t = peer_tag_tables.c
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
