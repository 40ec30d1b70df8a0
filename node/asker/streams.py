"""One query as this node's client, for every kind: its record, its calls, its receipt.

`asker_record` and `logged_query` give every query exactly one record in this node's
query log (role "asker"), whatever happens: a partner's refusal or failure with its
reason, anything else as aborted. Every call to a partner goes through `partner_call`,
which turns its failure into a PartnerError (the status read by node/transport/
status.py): `call` (one request, one answer), `download` (a table's stream) and
`converse`, which drives a session over an `Exchange`, one bidirectional stream whose
outgoing messages may come from more than one thread (a session's answers and a
pipeline producing batches). `accept_receipt` checks the answerer's signed receipt for
this node's ledger entry.
"""
from __future__ import annotations

import logging
import queue
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import grpc

from node.core.errors import PartnerError
from node.policy.querylog import QueryRecord
from node.transport.status import REFUSALS, rpc_error

if TYPE_CHECKING:
    from node.runtime.context import NodeContext

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
    from node.ledger.receipts import ReceiptError
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
