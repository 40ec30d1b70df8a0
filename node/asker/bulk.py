"""The asking side of bulk queries: a whole applicant list at once, by bulk PSI.

The fund centre is the receiver of protocols/bulk (KKRT16; the rounds and who learns
what are narrated in protocols/bulk/session.py): it learns which of its elements are in
the partner's current version, and the version's size; the partner learns how many
elements were asked. No tag table is synced: each query runs over the whole version, in
time linear in both sets, which beats a membership query's per-element OPRF once the
list is long (``bulk_is_faster``). The charge is the cuckoo bins (about 1.5 per
element), recorded on both sides as the query's elements, so the receipt matches.

This module moves the session's messages over the Bulk stream: header and Hello go out
at once and the cuckoo table is built while the partner runs its base OTs; corrections
go out through a bounded outbox as the session produces them, and values are matched
as they arrive, so memory stays bounded by a few chunks beyond the two sets.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np

from protocols.bulk import BulkReceiver, InvalidMessage, ProtocolStateError, as_elements
from protocols.bulk.messages import SETUP, Setup, message_type
from protocols.bulk.params import bin_count

from node.asker.membership import MembershipResult
from node.asker.streams import dataset_info
from node.asker.streams import Exchange, accept_receipt, asker_record, logged_query, partner_call
from node.core.errors import PartnerError
from node.core.progress import Progress, StageClock, no_progress
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.runtime.context import NodeContext
from node.transport import bulk_wire as wire
from node.transport.channels import partner_channel

log = logging.getLogger(__name__)

# Seconds, measured between two nodes on 2 shared cores (bench/bulk_node_bench.py, the
# README's table): a membership query per identifier asked, its partner's tag table
# already synced; a bulk query per agency row (read from storage, hashed, three values
# sent), per identifier asked, and once (base OTs, the stream). Against a million rows
# bulk wins from about 35,000 identifiers; the CLI suggests it from there.
MEMBERSHIP_SECONDS_PER_ASKED = 1.5e-4
BULK_SECONDS_PER_ROW = 4.5e-6
BULK_SECONDS_PER_ASKED = 1e-6
BULK_SECONDS_ONCE = 0.5
_OUTBOX = 4  # correction chunks queued for the stream at most (~2 MiB each)


def bulk_is_faster(asked: int, rows: int) -> bool:
    """Whether a bulk query of `asked` identifiers against `rows` answers sooner than a
    membership query (whose one-off table sync is left out: the estimate favours it)."""
    bulk_seconds = BULK_SECONDS_ONCE + BULK_SECONDS_PER_ROW * rows + BULK_SECONDS_PER_ASKED * asked
    return MEMBERSHIP_SECONDS_PER_ASKED * asked > bulk_seconds


def bulk(ctx: NodeContext, partner: str, dataset: str, purpose: str, inputs: Sequence[bytes],
         progress: Progress = no_progress, *, consent_digest: str | None = None,
         stages: StageClock | None = None) -> MembershipResult:
    """Which of `inputs` (distinct encoded identifiers) are in the partner's dataset.

    Raises:
        PartnerError: unreachable partner, refusal (with the partner's reason), a partner
            that dies mid-query, or a malformed answer. The query is logged either way.
        ValueError: no input, or an input repeated.
    """
    if not inputs:
        raise ValueError("nothing to ask: no valid identifier in the input")
    started = time.perf_counter()
    stages = stages or StageClock(time.perf_counter)
    cfg = ctx.config
    record = asker_record(ctx, partner, "bulk", dataset, purpose,
                          bin_count(len(inputs)),  # what both ledgers charge
                          authorisation_digest=consent_digest or "")
    with logged_query(ctx, record):
        stub = pb_grpc.MembershipStub(partner_channel(ctx, partner))
        info = dataset_info(stub, partner, dataset, cfg.grpc.deadline_seconds)
        record.version, record.epoch = info.version, info.epoch
        # The version's size is announced in the listing: a Setup claiming more is refused.
        session = BulkReceiver(as_elements(list(inputs)), on_stage=stages.mark,
                               chunk_rows=wire.chunk_rows(cfg.grpc.max_message_bytes),
                               max_sender_elements=max(1, info.row_count))
        found = _exchange(ctx, stub, partner, record, session, len(inputs), progress, stages)
        stages.mark(None)
        log.info("bulk query %s to %s: %d asked, %d rows, stages %s", record.query_id, partner,
                 len(inputs), session.sender_size, stages.rounded(),
                 extra={"stages": stages.rounded()})
        matched = np.zeros(len(inputs), dtype=bool)
        matched[found] = True
        record.outcome, record.matched = "answered", int(found.size)
        accept_receipt(ctx, partner, record, record.summary)
        return MembershipResult(record.query_id, partner, dataset, info.version, info.epoch,
                                matched, time.perf_counter() - started, receipt=record.receipt,
                                kinds=tuple(info.kinds), rows=int(session.sender_size))


def _header(record: QueryRecord, asked: int) -> pb.BulkRequest:
    return pb.BulkRequest(header=pb.QueryHeader(
        query_id=record.query_id, dataset=record.dataset, version=record.version,
        epoch=record.epoch, purpose=record.purpose, total_elements=asked,
        kind=pb.QUERY_KIND_BULK, consent_digest=record.authorisation_digest))


def _exchange(ctx, stub, partner: str, record: QueryRecord, session: BulkReceiver, asked: int,
              progress: Progress, stages: StageClock) -> np.ndarray:
    """The Bulk stream, driven from this thread; returns the indices of the inputs found."""
    grpc_cfg = ctx.config.grpc
    call = _BulkCall(Exchange(stub.Bulk, grpc_cfg.deadline_seconds, limit=_OUTBOX), session, record,
                     progress, wire.chunk_rows(grpc_cfg.max_message_bytes), stages)
    try:
        with partner_call(partner, (InvalidMessage, ProtocolStateError)):
            start = session.start()
            call.exchange.send(_header(record, asked), wire.request(next(start)))
            progress("preparing", 0, 1)
            for _ in start:  # the cuckoo table, built while the partner answers the Hello
                pass
            progress("preparing", 1, 1)
            for response in stages.waiting(call.exchange.responses):
                if call.receive(response):
                    break
    finally:
        call.exchange.cancel()
    if record.summary is None:
        raise PartnerError(partner, "the answer ended early")
    return session.result()


class _BulkCall:
    """One Bulk stream's responses, taken in order by the asking thread."""

    def __init__(self, exchange: Exchange, session: BulkReceiver, record: QueryRecord,
                 progress: Progress, rows_per_chunk: int, stages: StageClock) -> None:
        self.exchange, self.session, self.record, self.progress = exchange, session, record, progress
        self.stages = stages
        self.rows_per_chunk = rows_per_chunk
        self.values_per_chunk, self.values_seen = 1, 0

    def receive(self, response) -> bool:
        """Take one response; True once the summary (the last one) has arrived."""
        body = response.WhichOneof("body")
        if body == "accepted" and response.accepted.query_id == self.record.query_id:
            return False
        if body == "summary" and self.session.finished \
                and response.summary.query_id == self.record.query_id:
            self.record.summary = response.summary
            return True
        if body != "message":
            raise PartnerError(self.record.answerer, f"sent {body or 'nothing'} out of turn")
        message = response.message
        if message_type(message) == SETUP:
            self.values_per_chunk = Setup.from_bytes(message).chunk_elements
            self._send_corrections(self.session.handle(message))
        else:
            for _ in self.session.handle(message):  # matched as it arrives; nothing to send
                pass
            self.values_seen = min(self.values_seen + self.values_per_chunk,
                                   self.session.sender_size or 0)
            self.progress("matching", self.values_seen, self.session.sender_size)
        return False

    def _send_corrections(self, messages) -> None:
        """The hashing key and the correction chunks, each sent as the session makes it;
        the outbox's bound holds them back while the network is slower."""
        total = self.session.oprf_evaluations
        rows = sent = 0
        for message in messages:
            self.stages.mark("send")  # waits while the outbox is full
            self.exchange.send(wire.request(message))
            sent += 1
            if sent > 1:  # the first is the hashing key
                rows = min(total, rows + self.rows_per_chunk)
                self.progress("sending", rows, total)
        self.exchange.done_sending()
