"""The server's interceptors: an unexpected failure answered opaquely (an incident, node/core/
incidents.py), who is calling, and how much of the node one caller may hold.

Who: the peer's node id from its mTLS certificate, checked in one place.

The TLS handshake already refuses certificates from any CA but the federation's. This
interceptor then maps the certificate's SAN to a node id and refuses a node that is
not a configured partner (PERMISSION_DENIED), before any handler runs. Handlers read
the authenticated id with `peer_node_id(context)`.

How much: call slots, deadlines and idle streams. The sync gRPC server gives every call
a worker thread for its whole life, and a stream handler waiting for the caller's next
message blocks that thread. A partner that opens
streams and never sends (or sends only a header) would hold every worker, and health
checks, dataset listings and auditors' ledger reads would wait behind it. This
interceptor, placed after the partner check, keeps that from happening:

* query work (every call except health, ListDatasets and the ledger service) takes one
  of `server_threads - reserved_threads` work slots, and at most `partner_streams` at
  once per partner; a call over either cap is refused with RESOURCE_EXHAUSTED at once,
  so the reserved workers always remain for health, listing, ledger and refusals;
* streaming reserved calls (health Watch, ledger GetEntries) are capped per caller, and
  together take at most half of the reserved workers, so unary health checks and
  listings always find one; configured auditors' ledger streams have a slot of their
  own, so partners holding every stream slot cannot lock auditors out;
* a watchdog cancels any call older than `deadline_seconds` (whatever deadline the
  caller set, or none), and any stream whose handler has waited `idle_seconds` for the
  caller's next message. Time spent computing an answer does not count as idle;
* unary calls are read as one-message streams, so a caller that opens one and never
  sends its request is caught the same way (the sync server would otherwise wait for
  that message in a worker before any interceptor runs); reserved calls get
  `REQUEST_SECONDS` for it, and at most `PENDING_PER_PEER` may run at once per caller,
  from their first byte to their answer (witness Exchange and Cosign are reserved calls
  whose work a caller sizes).

Cancelling wakes the handler blocked in `next(request_iterator)` with an RpcError, which
the answerers already record as an aborted query; the caller sees CANCELLED.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

from node.core.errors import LimitReached, NotPermitted, ProtocolViolation, Unauthenticated
from node.core.incidents import opaque_message, record
from node.keys.pki import node_id_from_san
from node.transport.status import abort_for

log = logging.getLogger(__name__)

# -- incidents: every unexpected exception in a handler answered opaquely -------------

def _deliberate(exc: BaseException, context: grpc.ServicerContext) -> bool:
    """A status the handler chose (abort/set_code), or a peer that is gone."""
    try:
        if context.code() not in (None, grpc.StatusCode.OK):
            return True
        return isinstance(exc, grpc.RpcError) and not context.is_active()
    except Exception:  # an unusual context: do not hide the original failure
        return False


def _opaque_abort(exc: BaseException, context: grpc.ServicerContext, method: str):
    incident = record(method, exc)
    context.abort(grpc.StatusCode.INTERNAL, opaque_message(incident))


def _unary(behavior, method: str):
    def guarded(request_or_iterator, context):
        try:
            return behavior(request_or_iterator, context)
        except Exception as exc:
            if _deliberate(exc, context):
                raise
            _opaque_abort(exc, context, method)
    return guarded


def _streaming(behavior, method: str):
    # A streaming handler's failure surfaces while the server iterates its responses.
    def guarded(request_or_iterator, context):
        try:
            yield from behavior(request_or_iterator, context)
        except Exception as exc:
            if _deliberate(exc, context):
                raise
            _opaque_abort(exc, context, method)
    return guarded


class IncidentInterceptor(grpc.ServerInterceptor):
    """Every unexpected exception in any handler -> INTERNAL "internal error; incident <id>"."""

    _KINDS = (("unary_unary", grpc.unary_unary_rpc_method_handler, _unary),
              ("stream_unary", grpc.stream_unary_rpc_method_handler, _unary),
              ("unary_stream", grpc.unary_stream_rpc_method_handler, _streaming),
              ("stream_stream", grpc.stream_stream_rpc_method_handler, _streaming))

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        for attr, factory, wrap in self._KINDS:
            behavior = getattr(handler, attr)
            if behavior is not None:
                return factory(wrap(behavior, method),
                               request_deserializer=handler.request_deserializer,
                               response_serializer=handler.response_serializer)
        return handler


# -- who is calling -------------------------------------------------------------------

_OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


def peer_node_id(context: grpc.ServicerContext) -> str | None:
    auth = context.auth_context() or {}
    return node_id_from_san(auth.get("x509_subject_alternative_name", []))


_READ_ONLY = ("/shuqiao.v1.Ledger/Get",)  # ledger reads: open to configured auditors too


def _wrap(behavior, allowed: frozenset[str], method: str):
    def guarded(request_or_iterator, context):
        peer = peer_node_id(context)
        if peer is None:
            log.warning("refused call to %s: certificate names no Shuqiao node", method)
            abort_for(context, Unauthenticated("client certificate names no Shuqiao node"))
        if peer not in allowed:
            log.warning("refused call to %s from node %s: not a configured partner", method, peer)
            abort_for(context, NotPermitted(
                f"node {peer!r} is not a partner of this node (or may not call {method})"))
        return behavior(request_or_iterator, context)
    return guarded


class PartnerInterceptor(grpc.ServerInterceptor):
    """Admit only configured partners (health checks are open to any federation member)."""

    def __init__(self, partner_ids, auditor_ids=()) -> None:
        self.allow(partner_ids, auditor_ids)

    def allow(self, partner_ids, auditor_ids=()) -> None:
        """Replace who may call (a config reload); calls already admitted run on."""
        allowed = frozenset(partner_ids)
        # One assignment each, read once per call below: a call sees one list or the other.
        self._readers = allowed | frozenset(auditor_ids)
        self._allowed = allowed

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in _OPEN_METHODS:
            return handler
        kinds = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        for attr, factory in kinds.items():
            behavior = getattr(handler, attr)
            if behavior is not None:
                allowed = self._readers if method.startswith(_READ_ONLY) else self._allowed
                return factory(_wrap(behavior, allowed, method),
                               request_deserializer=handler.request_deserializer,
                               response_serializer=handler.response_serializer)
        return handler


# -- call and stream limits -------------------------------------------------------------

# Calls that never take a work slot: they are short and must answer while queries run.
_RESERVED = ("/grpc.health.v1.Health/", "/shuqiao.v1.Membership/ListDatasets", "/shuqiao.v1.Ledger/")
STREAMS_PER_PEER = 2  # reserved streams (health Watch, ledger GetEntries) at once, per caller
PENDING_PER_PEER = 4  # reserved unary calls running at once, per caller
REQUEST_SECONDS = 2.0  # how long a reserved unary call waits for its one request

# handler attribute -> (request streaming, response streaming)
_KINDS = {"unary_unary": (False, False), "unary_stream": (False, True),
          "stream_unary": (True, False), "stream_stream": (True, True)}


@dataclass
class _Call:
    context: grpc.ServicerContext
    method: str
    peer: str
    slot: str | None  # "work" | "stream" | "pending" | None: what it counts against
    deadline: float
    idle_limit: float
    key: int = 0
    waiting_since: float | None = None  # the handler is blocked on the caller's next message
    cancelled: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class _IdleGuarded:
    """The request iterator, noting when the handler starts and stops waiting on it."""

    def __init__(self, requests, call: _Call, clock) -> None:
        self._requests, self._call, self._clock = requests, call, clock

    def __iter__(self):
        return self

    def __next__(self):
        self._call.waiting_since = self._clock()
        try:
            return next(self._requests)
        finally:
            self._call.waiting_since = None


class StreamLimitInterceptor(grpc.ServerInterceptor):
    """Call slots per partner and for the node, server-side deadlines and idle timeouts."""

    def __init__(self, *, server_threads: int, reserved_threads: int, partner_streams: int,
                 idle_seconds: float, deadline_seconds: float, auditors=(),
                 clock=time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self.auditors = frozenset(auditors)
        self.deadline_seconds = deadline_seconds
        # slot -> (at most at once per caller, at most at once in total)
        self.limits = {"work": (partner_streams, server_threads - reserved_threads),
                       "stream": (STREAMS_PER_PEER, max(1, reserved_threads // 2)),
                       # configured auditors' ledger streams: partners holding every
                       # "stream" slot must not lock the auditors out of the ledger
                       "audit": (STREAMS_PER_PEER, 1),
                       # no total: an honest request arrives with its call, so a total
                       # cap would let a few callers' hanging calls refuse everyone else's
                       "pending": (PENDING_PER_PEER, 1 << 30)}
        self._clock = clock
        self._lock = threading.Lock()
        self._total: Counter[str] = Counter()
        self._by_peer: Counter[tuple[str, str]] = Counter()
        self._calls: dict[int, _Call] = {}
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    @classmethod
    def from_config(cls, grpc_section, auditors=()) -> "StreamLimitInterceptor":
        g = grpc_section
        return cls(server_threads=g.server_threads, reserved_threads=g.reserved_threads,
                   partner_streams=g.partner_streams, idle_seconds=g.idle_seconds,
                   deadline_seconds=g.deadline_seconds, auditors=auditors)

    def close(self) -> None:
        self._stop.set()

    # -- interception ------------------------------------------------------------------
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        for attr, (request_streaming, response_streaming) in _KINDS.items():
            behavior = getattr(handler, attr)
            if behavior is not None:
                guarded = self._guard(behavior, method, request_streaming, response_streaming)
                factory = (grpc.stream_stream_rpc_method_handler if response_streaming
                           else grpc.stream_unary_rpc_method_handler)  # requests read as a stream
                return factory(guarded, request_deserializer=handler.request_deserializer,
                               response_serializer=handler.response_serializer)
        return handler

    def _guard(self, behavior, method: str, request_streaming: bool, response_streaming: bool):
        work = not method.startswith(_RESERVED)
        slot = "work" if work else "stream" if (request_streaming or response_streaming) else "pending"
        idle = self.idle_seconds if slot != "pending" else min(self.idle_seconds, REQUEST_SECONDS)

        def admitted(requests, context):
            call = self._admit(context, method, slot, idle)
            context.add_callback(lambda: self._release(call))
            requests = _IdleGuarded(requests, call, self._clock)
            if request_streaming:
                return call, requests
            # A reserved unary call keeps its per-caller slot until it returns: Exchange
            # and Cosign verify whole documents, so one caller's many at once would
            # otherwise hold every worker.
            return call, _single(requests, context)

        if response_streaming:
            def stream_behavior(requests, context):
                call, request = admitted(requests, context)
                return self._released_after(behavior(request, context), call)
            return stream_behavior

        def unary_behavior(requests, context):
            call, request = admitted(requests, context)
            try:
                return behavior(request, context)
            finally:
                self._release(call)
        return unary_behavior

    def _released_after(self, responses, call: _Call):
        try:
            yield from responses
        finally:
            self._release(call)

    # -- slots ---------------------------------------------------------------------------
    def _admit(self, context, method: str, slot: str, idle: float) -> _Call:
        peer = peer_node_id(context) or ""
        if slot == "stream" and peer in self.auditors and method.startswith("/shuqiao.v1.Ledger/"):
            slot = "audit"
        per_peer, total = self.limits[slot]
        with self._lock:
            if self._by_peer[slot, peer] >= per_peer:
                refusal = (f"too many concurrent calls from node {peer!r}: at most {per_peer} at "
                           "once; wait for one to finish")
            elif self._total[slot] >= total:
                refusal = "this node is answering as many calls as it can; retry later"
            else:
                refusal = None
                self._total[slot] += 1
                self._by_peer[slot, peer] += 1
        if refusal:
            log.warning("refused call to %s from node %s: %s", method, peer or "-", refusal)
            abort_for(context, LimitReached(refusal))
        now = self._clock()
        call = _Call(context, method, peer, slot, now + self.deadline_seconds, idle)
        with self._lock:
            call.key = next(self._ids)
            self._calls[call.key] = call
        self._ensure_watchdog()
        return call

    def _release(self, call: _Call, keep_watching: bool = False) -> None:
        """Free the call's slot (once); stop watching it unless `keep_watching`."""
        with call.lock:
            slot, call.slot = call.slot, None
        with self._lock:
            if not keep_watching:
                self._calls.pop(call.key, None)
            if slot is None:
                return
            self._total[slot] -= 1
            self._by_peer[slot, call.peer] -= 1
            if not self._by_peer[slot, call.peer]:
                del self._by_peer[slot, call.peer]

    # -- watchdog -----------------------------------------------------------------------
    def _ensure_watchdog(self) -> None:
        with self._lock:
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="grpc-watchdog",
                                                  daemon=True)
                self._watchdog.start()

    def _watch(self) -> None:
        tick = max(0.05, min(0.5, self.idle_seconds / 4, self.deadline_seconds / 4))
        while not self._stop.wait(tick):
            now = self._clock()
            with self._lock:
                calls = list(self._calls.values())
            for call in calls:
                if call.cancelled:
                    continue
                waiting = call.waiting_since
                if now >= call.deadline:
                    self._cancel(call, f"ran past the node's {self.deadline_seconds:g} s deadline")
                elif waiting is not None and now - waiting >= call.idle_limit:
                    self._cancel(call, f"sent no message for {call.idle_limit:g} s")

    def _cancel(self, call: _Call, why: str) -> None:
        log.warning("cancelled call to %s from node %s: %s", call.method, call.peer or "-", why)
        call.cancelled = True  # the slot is freed when the handler returns, not before
        call.context.cancel()


def _single(requests, context):
    """The one request of a unary call (read as a stream, so its wait is watched)."""
    first = next(requests, None)
    if first is None or next(requests, None) is not None:
        abort_for(context, ProtocolViolation("a unary call carries exactly one request"))
    return first
