"""The asking side: sync a partner's tag table, then ask with blinded elements.

An online query costs O(number asked): the dataset-sized part (the tag table) is
fetched once per dataset version and key epoch, checked against its digest and cached.
The query itself is the session in protocols/membership.py (rounds, checks, who learns
what); this module moves its messages over the Evaluate stream, blinding batches on a
sending thread while the answers are unblinded (each side spreads its batches over
every core), and matches the outputs against the cached table.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Sequence

import grpc
import numpy as np

from protocols import labels, oprf
from protocols import membership as ms
from protocols.session import ProtocolStateError

from node.asker.streams import forget_listing, listing, load_arrays, match_tags, sync_tag_table
from node.asker.streams import Exchange, accept_receipt, asker_record, converse, logged_query, partner_call
from node.core.errors import NotServed, PartnerError
from node.core.progress import Progress, no_progress
from node.datasets.tag_tables import label_context
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.runtime.context import NodeContext
from node.transport import membership_wire as wire
from node.transport.channels import partner_channel
from node.transport.status import partner_refusal


@dataclass
class MembershipResult:
    query_id: str
    partner: str
    dataset: str
    version: int
    epoch: int
    matched: np.ndarray  # bool per input, in input order
    seconds: float
    predicate: str = ""
    labels: list[dict | None] | None = None  # labeled queries: attributes of matched inputs
    receipt: object = None  # the answerer's verified receipt (None if missing or invalid)
    kinds: tuple[str, ...] = ()  # the query kinds the partner grants this node on the dataset
    rows: int = 0  # the partner's rows asked against (the size of its tag table)


PROTOCOL_ERRORS = (ms.InvalidMessage, ProtocolStateError)  # what the session refuses of an answer
_KIND_PB = {"membership": pb.QUERY_KIND_MEMBERSHIP, "labeled": pb.QUERY_KIND_LABELED,
            "predicate": pb.QUERY_KIND_PREDICATE}


def membership(ctx: NodeContext, partner: str, dataset: str, purpose: str,
               inputs: Sequence[bytes], progress: Progress = no_progress, *, kind: str = "membership",
               predicate: str | None = None, consent_digest: str | None = None,
               listing_max_age: float = 0.0) -> MembershipResult:
    """Which of `inputs` (encoded identifiers) are in the partner's dataset.

    kind "predicate" asks membership in the rows satisfying `predicate`; kind "labeled"
    also opens the allow-listed attributes of matched rows (optionally on a predicate).
    `listing_max_age` > 0 lets the query use the partner's description of the dataset
    fetched that many seconds ago or less (peer_tables.listing); if the partner no longer
    serves the version or key epoch it names, the query is asked once more under a
    fresh description (the refused one stays in the query log).

    Raises:
        PartnerError: unreachable partner, refusal (with the partner's reason), a partner
            that dies mid-query, or a malformed answer. The query is logged either way.
    """
    remembered: list[bool] = []
    try:
        return _membership(ctx, partner, dataset, purpose, inputs, progress, kind, predicate,
                           consent_digest, listing_max_age, remembered)
    except PartnerError as exc:
        if not (remembered and remembered[0] and exc.code == grpc.StatusCode.FAILED_PRECONDITION):
            raise
        forget_listing(ctx, partner, dataset, predicate)
    return _membership(ctx, partner, dataset, purpose, inputs, progress, kind, predicate,
                       consent_digest, 0.0, [])


def _membership(ctx: NodeContext, partner: str, dataset: str, purpose: str, inputs: Sequence[bytes],
                progress: Progress, kind: str, predicate: str | None, consent_digest: str | None,
                listing_max_age: float, remembered: list[bool]) -> MembershipResult:
    if not inputs:
        raise ValueError("nothing to ask: no valid identifier in the input")
    if kind not in _KIND_PB or (kind == "predicate" and not predicate) or (
            kind == "membership" and predicate):
        raise ValueError("kind must be membership, labeled or predicate (with a predicate)")
    started = time.perf_counter()
    cfg = ctx.config
    record = asker_record(ctx, partner, kind, dataset, purpose, len(inputs),
                          authorisation_digest=consent_digest or "")  # node/policy/consent.py
    with logged_query(ctx, record):
        stub = pb_grpc.MembershipStub(partner_channel(ctx, partner))
        deadline = cfg.grpc.deadline_seconds
        info, cached = listing(ctx, stub, partner, dataset, predicate, deadline, listing_max_age)
        remembered.append(cached)
        record.version, record.epoch, record.predicate = info.version, info.epoch, info.predicate
        if kind == "labeled" and not info.label_length:
            raise partner_refusal(partner, f"offers no labels on {dataset!r} to this node", NotServed)
        table = sync_tag_table(ctx, stub, partner, info, progress)
        width = oprf.OUTPUT_LEN if kind == "labeled" else info.tag_length
        session = ms.MembershipAsker(
            inputs, width=width, max_batch=cfg.grpc.max_batch_elements, mode=info.oprf_mode,
            public_key=info.public_key, submit=ctx.pool.submit, in_flight=ctx.pool.workers + 1,
            proof_sample=None if cfg.query.verification == "full" else cfg.query.proof_sample,
            progress=lambda done, total: progress("query", done, total))
        outputs = _evaluate(ctx, stub, partner, record, session)
        matched, opened = _match(ctx, partner, info, load_arrays(ctx, table), outputs, width, kind)
        record.outcome, record.matched = "answered", int(matched.sum())
        accept_receipt(ctx, partner, record, record.summary)
        return MembershipResult(record.query_id, partner, dataset, info.version, info.epoch,
                                matched, time.perf_counter() - started, info.predicate, opened,
                                record.receipt, tuple(info.kinds), info.row_count)


def _match(ctx, partner, info, held, outputs: bytes, width: int, kind: str):
    """(matched per input, opened labels or None): the outputs against the cached table."""
    if kind != "labeled":
        return match_tags(np.frombuffer(outputs, dtype=f"S{width}"), held.tags)[0], None
    tags = np.frombuffer(b"".join(outputs[i:i + info.tag_length] for i in range(0, len(outputs), width)),
                         dtype=f"S{info.tag_length}")
    matched, pos = match_tags(tags, held.tags)
    return matched, _open_labels(ctx, partner, info, outputs, width, matched, pos, held)


def _open_labels(ctx, partner, info, outputs: bytes, width: int, matched, pos, held) -> list[dict | None]:
    context = label_context(partner, ctx.config.node.id, info.name, info.epoch)
    opened: list[dict | None] = []
    for i, hit in enumerate(matched):
        if not hit:
            opened.append(None)
            continue
        try:
            opened.append(labels.open_label(outputs[i * width:(i + 1) * width],
                                            held.labels[pos[i]].tobytes(), context))
        except labels.LabelError:
            raise PartnerError(partner, "sent a label that does not open for a matched row") from None
    return opened


def _evaluate(ctx, stub, partner: str, record: QueryRecord, session: ms.MembershipAsker) -> bytes:
    """The Evaluate stream: the session's messages out, the partner's answers in.

    Two threads send: once Accepted arrives, a producer drains the session's blinded
    batches (blinding overlaps the partner's evaluation), while `converse` sends what the
    session answers (proof requests, finish).
    """
    (header,) = session.start()
    exchange = Exchange(stub.Evaluate, ctx.config.grpc.deadline_seconds)
    first = wire.evaluate_request(
        header, query_id=record.query_id, dataset=record.dataset, version=record.version,
        epoch=record.epoch, purpose=record.purpose, kind=_KIND_PB[record.kind],
        predicate=record.predicate, consent_digest=record.authorisation_digest)
    stop, failed, producers = threading.Event(), [], []

    def on_message(message, response) -> None:
        if isinstance(message, ms.Summary):
            record.summary = response.summary  # its receipt, checked once answered
        elif isinstance(message, ms.Accepted):
            producers.append(threading.Thread(target=_produce, name="blind", daemon=True,
                                              args=(session.batches(), exchange, stop, failed)))
            producers[0].start()

    try:
        with partner_call(partner, PROTOCOL_ERRORS):
            converse(exchange, session, [first], wire.parse_evaluate_response,
                     wire.evaluate_request, on_message)
    except PartnerError:
        if failed:  # the producer's failure ended the stream: the query fails with it
            raise failed[0] from None
        raise
    finally:
        stop.set()
        for producer in producers:
            producer.join(timeout=5)
    with partner_call(partner, PROTOCOL_ERRORS, _early):
        return session.result()


def _early(exc: Exception) -> str:
    return "the answer ended early" if isinstance(exc, ProtocolStateError) else str(exc)


def _produce(batches, exchange: Exchange, stop: threading.Event, failed: list) -> None:
    """Send the session's batches as they are blinded; a failure ends the stream."""
    try:
        for batch in batches:
            if stop.is_set():
                return
            exchange.send(wire.evaluate_request(batch))
    except Exception as exc:  # the query fails with it, not with the stream's cancellation
        failed.append(exc)
        exchange.cancel()
