"""A query stream's life on the answering side, the same for every kind.

`answer_stream` runs one stream: a refusal (node/core/errors.py; its status is the one
node/transport/status.py gives its class) ends it with a reason, never an element, and
the query log gets exactly one record, whatever happens. `admit` checks the
stream's first message, its header, against the grant and the policy, and claims the
query id and reserves its elements (and epsilon) in one step (node/policy/querylog.py);
the caller then commits the admitted ledger entry before any answer leaves.
`serve_session` moves messages between the asker's stream and a protocol session
(protocols/session.py), and `answered` commits the record whose receipt the summary
carries.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta

import grpc

from protocols import session as rounds

from node.core.config import DATASET_NAME, PURPOSE
from node.core import errors
from node.core.errors import (AlreadyUsed, InvalidRequest, LimitReached, NotFound, NotPermitted,
                              NotServed, ProtocolViolation, StreamEnded)
from node.datasets.registration import current_version
from node.keys.workers import answerable_epochs
from node.policy import checks as policy
from node.policy.querylog import QueryRecord, seen
from node.transport.identity import peer_node_id
from node.transport.status import abort_for

log = logging.getLogger(__name__)
_DATASET = re.compile(DATASET_NAME)
_PURPOSE = re.compile(PURPOSE)
_QUERY_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# A session's refusals that are not the asker breaking the protocol (protocols/ knows
# nothing of the node's errors): the node's refusal each one is.
_SESSION_REFUSALS = ((rounds.StreamEnded, StreamEnded), (rounds.BudgetRefused, LimitReached),
                     (rounds.Unanswerable, NotServed))


def as_refusal(exc: Exception) -> errors.Refusal:
    """What a session refused (a message out of turn, malformed, or failing the protocol's
    checks; a stream that stopped between rounds; a release over its budget), as the
    node's refusal, with the session's words as its reason."""
    if isinstance(exc, errors.Refusal):
        return exc
    for session_kind, refusal in _SESSION_REFUSALS:
        if isinstance(exc, session_kind):
            return refusal(str(exc))
    return ProtocolViolation(str(exc))


def _used_before(record) -> AlreadyUsed:
    record.query_id = ""  # the earlier claim or entry stands; do not log a duplicate id
    return AlreadyUsed("query_id was already used")


class Servicer:
    """What every servicer holds: the node's context, and through it the config in force
    (`cfg`, read at each use: a reload replaces ctx.config, node/runtime/live_config.py)."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    @property
    def cfg(self):
        return self.ctx.config

    def query_stream(self, requests, context, kind: str, body,
                     protocol_errors: tuple[type[Exception], ...] = ()) -> Iterator:
        """One query stream (`answer_stream`) whose body is ``body(requests, peer, record)``."""
        return answer_stream(self.ctx, context, kind,
                             lambda peer, record: body(requests, peer, record), protocol_errors)


def check_names(h, record) -> None:
    """A query header's id, dataset and purpose are well-formed codes; the record takes
    them (only well-formed names are echoed or logged: free text could hold anything)."""
    if not _QUERY_ID.match(h.query_id):
        raise InvalidRequest("query_id must be a lowercase UUID")
    record.query_id = h.query_id
    if not (_DATASET.match(h.dataset) and _PURPOSE.match(h.purpose)):
        raise InvalidRequest("dataset and purpose must be codes ([a-z0-9._-], at most 63 characters)")
    record.dataset, record.version, record.epoch = h.dataset, h.version, h.epoch
    record.purpose, record.elements = h.purpose, 0


def check_purpose(h, grant) -> None:
    if h.purpose not in grant.purpose_codes:
        raise NotPermitted(f"purpose {h.purpose!r} is not granted for dataset {h.dataset!r}; "
                           f"granted: {', '.join(grant.purpose_codes)}")


def claim(ctx, grant, h, record, epsilon_micro: int = 0, elements: int | None = None) -> None:
    """Claim the header's query id and reserve its elements (and epsilon) atomically
    (node/policy/querylog.py); the record then carries the elements reserved: the
    header's, unless the kind charges another unit (``elements``)."""
    from node.policy import querylog as admission
    elements = h.total_elements if elements is None else elements
    try:  # a quota or the budget refuses as itself (node/policy/checks.py)
        admission.reserve(ctx.engine, grant, query_id=h.query_id, dataset=h.dataset, epoch=h.epoch,
                          elements=elements, epsilon_micro=epsilon_micro, now=ctx.clock.now())
    except admission.QueryIdTaken:
        raise _used_before(record) from None
    record.claimed, record.elements = True, elements
    record.epsilon_micro = 0  # charged only once a noised answer is released


def grant_for(cfg, dataset: str, peer: str):
    """(declared dataset, the peer's grant on it), refused alike when either is missing."""
    if not _DATASET.match(dataset):
        raise InvalidRequest("dataset must be a dataset code")
    declared = cfg.dataset(dataset)
    grant = declared and next((g for g in declared.grants if g.partner == peer), None)
    if grant is None:  # the same answer whether the dataset is absent or merely not granted
        raise NotFound(f"no dataset {dataset!r} is available to node {peer!r}")
    return declared, grant


def check_epoch(ctx, conn, dataset: str, peer: str, epoch: int, declared=None) -> None:
    declared = declared or ctx.config.dataset(dataset)
    if declared is None:  # dropped from the config by a reload since the grant was read
        raise NotFound(f"no dataset {dataset!r} is available to node {peer!r}")
    grace = timedelta(days=declared.grace_days)
    if epoch not in answerable_epochs(conn, dataset, peer, grace, now=ctx.clock.now()):
        raise NotServed(f"key epoch {epoch} of dataset {dataset!r} is not answered (rotated and "
                        "past its grace period, or unknown); list datasets and sync again")


@dataclass(frozen=True)
class Admitted:
    header: object
    kind: str
    declared: object
    grant: object
    version: object | None  # the current version, for the kinds that run on it
    checked: object = None  # what the caller's check returned


def admit(ctx, first, peer: str, record: QueryRecord, *, kinds: Mapping[int, str],
          current: bool = False, reserve_epsilon: bool = False, consent: bool = False,
          check: Callable[[object, Admitted], object] | None = None,
          charge: Callable[[object], int] | None = None) -> Admitted:
    """Admit a query by its first message, which must be its header.

    Args:
        kinds: the header kinds this call answers (protobuf number -> policy kind).
        current: the query runs on the dataset's current version (the header names it).
        reserve_epsilon: reserve the grant's per-query epsilon (noised kinds).
        consent: the header may carry a consent digest, kept in the record and receipt.
        check: kind-specific checks, run in the admission's connection before the claim;
            what it returns is kept in ``checked``.
        charge: what the quotas reserve for the header, when the kind charges another unit
            than the elements asked (bulk: the OPRF evaluations its size implies).

    Raises:
        Refusal: the typed refusal of the rule that was broken.
    """
    if first is None or first.WhichOneof("body") != "header":
        raise ProtocolViolation("the first message of a query must be its header")
    h = first.header
    check_names(h, record)
    if consent:
        from node.policy.consent import DIGEST_PATTERN
        if h.consent_digest and not DIGEST_PATTERN.fullmatch(h.consent_digest):
            raise InvalidRequest("consent_digest is 64 lowercase hex digits")
        record.authorisation_digest = h.consent_digest  # in our entry and our receipt
    if h.kind not in kinds:
        raise InvalidRequest(f"unsupported query kind (this call answers {', '.join(kinds.values())})")
    record.kind = kind = kinds[h.kind]
    cfg = ctx.config  # one config for the whole admission, whatever a reload does meanwhile
    declared, grant = grant_for(cfg, h.dataset, peer)
    check_purpose(h, grant)
    limit = cfg.grpc.max_query_elements
    if not 1 <= h.total_elements <= limit:
        raise InvalidRequest(f"a query must ask between 1 and {limit} elements")
    policy.check_request(grant, dataset=h.dataset, kind=kind, elements=h.total_elements)
    with ctx.engine.connect() as conn:
        if seen(conn, h.query_id, "answerer"):
            raise _used_before(record)
        version = current_version(conn, h.dataset) if current else None
        if current and (version is None or version.version != h.version):
            raise NotServed(f"{kind} queries run on the current version of {h.dataset!r}; "
                            "list datasets again")
        check_epoch(ctx, conn, h.dataset, peer, h.epoch, declared)
        admitted = Admitted(h, kind, declared, grant, version)
        if check is not None:
            admitted = Admitted(h, kind, declared, grant, version, check(conn, admitted))
    noised = reserve_epsilon and grant.dp_epsilon is not None
    claim(ctx, grant, h, record, epsilon_micro=round(grant.dp_epsilon * 1e6) if noised else 0,
          elements=charge(h) if charge is not None else None)
    return admitted


def answer_stream(ctx, context, kind: str, body: Callable[[str, QueryRecord], Iterable],
                  protocol_errors: tuple[type[Exception], ...] = ()) -> Iterator:
    """Run ``body(peer, record)``, a generator of responses, as one query stream.

    A Refusal, or one of `protocol_errors` (what the kind's session refuses, read by
    `as_refusal`), ends the call with the status node/transport/status.py gives it and
    its reason; a stream that broke or was cancelled is recorded as aborted. Exactly one
    record is written, whatever happens.
    """
    peer = peer_node_id(context)
    record = QueryRecord(query_id="", role="answerer", asker=peer, answerer=ctx.config.node.id,
                         kind=kind, dataset="", started_at=ctx.clock.now())
    try:
        yield from body(peer, record)
    except (errors.Refusal, *protocol_errors) as exc:
        refusal = as_refusal(exc)
        if record.outcome != "aborted":  # an aborted query stays aborted
            record.outcome = "refused"
        record.reason = refusal.reason
        log.info("%s query %s from %s refused: %s", kind, record.query_id or "-", peer, refusal.reason)
        abort_for(context, refusal)
    except grpc.RpcError:
        record.outcome, record.reason = "aborted", "the asker's stream ended abnormally"
        raise
    except GeneratorExit:
        record.outcome, record.reason = "aborted", "the asker cancelled or went away"
        raise
    finally:
        if record.query_id and not record.written:
            record.write(ctx)


def serve_session(session, requests: Iterable, parse: Callable, emit: Callable) -> Iterator:
    """The session's messages out (each through ``emit``, which converts it and may first
    commit what must precede it), the asker's in (through ``parse``), until the session
    is finished. Raises StreamEnded if the asker's stream ends first."""
    for message in session.start():
        yield emit(message)
    for request in requests:
        for message in session.handle(parse(request)):
            yield emit(message)
        if session.finished:
            return
    raise StreamEnded("the stream ended without finish")


def answered(ctx, record: QueryRecord) -> dict:
    """Commit the answered record (log row and ledger entry) before the summary leaves;
    returns the summary's receipt fields."""
    record.outcome = "answered"
    receipt = record.write(ctx)
    return {"receipt": receipt.to_bytes(), "ledger_public_key": ctx.ledger.public_key.text}
