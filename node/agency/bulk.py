"""The answering side of bulk queries: a thin gRPC adapter around protocols/bulk's sender.

Rounds (the Bulk call, proto/shuqiao/v1/membership.proto): header -> Accepted; Hello ->
Setup; HashingKey and Correction chunks -> Values chunks; then a summary with the
signed receipt. protocols/bulk/session.py narrates the protocol (KKRT16, semi-honest)
and who learns what: this node learns the fund centre's set size; the fund centre
learns which of its elements are in the current version, and the version's size.

The policy around it is every kind's (node/agency/admission.py): the grant lists "bulk"
and the purpose; the header's element count n1 lies within the grant's minimum and
maximum; the query runs on the current version. Quotas reserve, and charge, the OPRF
evaluations the fund centre obtains: the cuckoo bins that follow from n1
(protocols/bulk/params.py), not rows. The session refuses a Hello whose size is not
the header's or whose bins do not follow from it. Every bin is charged from the moment
the Setup leaves (from then on the fund centre holds the OT extension for all of them),
however the query ends; a refusal before that charges nothing. The admitted entry is
in the ledger before Accepted leaves, the completed one (its receipt in the summary)
before the summary.
"""
from __future__ import annotations

import logging
import time

from protocols.bulk import BulkSender, InvalidMessage, ProtocolStateError
from protocols.bulk.params import bin_count

from node.agency.admission import StreamEnded, admit, answered, serve_session
from node.core.progress import StageClock
from node.datasets.bulk_rows import version_elements
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.runtime.context import NodeContext
from node.transport import bulk_wire as wire

log = logging.getLogger(__name__)
_KINDS = {pb.QUERY_KIND_BULK: "bulk"}
PROTOCOL_ERRORS = (InvalidMessage, ProtocolStateError)


class _Answering:
    """The sender as serve_session drives a session: it speaks only when spoken to."""

    def __init__(self, sender: BulkSender) -> None:
        self.sender = sender

    def start(self):
        return iter(())

    def handle(self, message: bytes):
        return self.sender.handle(message)

    @property
    def finished(self) -> bool:
        return self.sender.finished


class BulkRpc:
    ctx: NodeContext

    def Bulk(self, request_iterator, context):
        return self.query_stream(request_iterator, context, "bulk", self._bulk, PROTOCOL_ERRORS)

    def _bulk(self, requests, peer: str, record: QueryRecord):
        admitted = admit(self.ctx, next(requests, None), peer, record, kinds=_KINDS, current=True,
                         consent=True, charge=lambda h: bin_count(h.total_elements))
        record.admit(self.ctx)  # in the ledger before any answer leaves
        yield pb.BulkResponse(accepted=pb.Accepted(query_id=record.query_id))
        stages = StageClock(time.perf_counter)
        stages.mark("read_rows")
        sender = BulkSender(version_elements(self.ctx, admitted.version),
                            receiver_size=admitted.header.total_elements,
                            chunk_elements=wire.chunk_elements(self.ctx.config.grpc.max_message_bytes),
                            on_stage=stages.mark)

        def emit(message: bytes) -> pb.BulkResponse:
            # From the Setup on, the fund centre holds the OT extension for every bin.
            record.evaluated = sender.oprf_evaluations or 0
            stages.mark("send")  # until the session's next stage: gRPC taking the message
            return wire.response(message)

        try:
            yield from serve_session(_Answering(sender), stages.waiting(requests), wire.message_of,
                                     emit)
        except StreamEnded:
            record.outcome = "aborted"  # the asker stopped sending: not a refusal of ours
            raise
        finally:
            stages.mark(None)
            log.info("bulk query %s: %s rows, stages %s", record.query_id or "-",
                     admitted.version.row_count, stages.rounded())
        yield pb.BulkResponse(summary=pb.BulkSummary(
            query_id=record.query_id, oprf_evaluations=record.elements, **answered(self.ctx, record)))
