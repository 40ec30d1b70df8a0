"""One query as this node's client, for every kind: its record, its stream, its receipt.

`logged_query` gives every query exactly one record in this node's query log (role
"asker"), whatever happens: a partner's refusal or failure with its reason, anything
else as aborted. `Exchange` is one bidirectional stream whose outgoing messages may come
from more than one thread (a session's answers and a pipeline producing batches).
`accept_receipt` checks the answerer's signed receipt for this node's ledger entry.
"""
from __future__ import annotations

import logging
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from node.core.errors import PartnerError
from node.policy.querylog import QueryRecord
from node.transport.status import REFUSALS

if TYPE_CHECKING:
    from node.runtime.context import NodeContext

log = logging.getLogger(__name__)


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
    from node.ledger.receipts import ReceiptError
    from node.ledger.signing import SignatureError
    try:
        if summary is None or not summary.receipt:
            raise ReceiptError("the partner sent no receipt")
        key = pin_partner_key(ctx.engine, partner, LedgerPublicKey.from_text(summary.ledger_public_key))
        receipt = Receipt.from_bytes(summary.receipt)
        verify_receipt(key, receipt, record.entry(ctx.ledger, "completed").metadata())
        record.receipt = receipt
    except (ReceiptError, SignatureError, ValueError) as exc:
        record.receipt = None
        record.reason = f"receipt missing or invalid: {exc}"
        log.warning("query %s to %s: %s", record.query_id, partner, record.reason)



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
