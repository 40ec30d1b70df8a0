"""How much of the node one caller may hold: call slots, deadlines and idle streams.

The sync gRPC server gives every call a worker thread for its whole life, and a stream
handler waiting for the caller's next message blocks that thread. A partner that opens
streams and never sends (or sends only a header) would hold every worker, and health
checks, dataset listings and auditors' ledger reads would wait behind it. This
interceptor, placed after the partner check, keeps that from happening:

* query work (every call except health, ListDatasets and the ledger service) takes one
  of `server_threads - reserved_threads` work slots, and at most `partner_streams` at
  once per partner; a call over either cap is refused with RESOURCE_EXHAUSTED at once,
  so the reserved workers always remain for health, listing, ledger and refusals;
* streaming reserved calls (health Watch, ledger GetEntries) are capped per caller, and
  together take at most half of the reserved workers, so unary health checks and
  listings always find one;
* a watchdog cancels any call older than `deadline_seconds` (whatever deadline the
  caller set, or none), and any stream whose handler has waited `idle_seconds` for the
  caller's next message. Time spent computing an answer does not count as idle.

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

from .auth import peer_node_id

log = logging.getLogger(__name__)

# Calls that never take a work slot: they are short and must answer while queries run.
_RESERVED = ("/grpc.health.v1.Health/", "/shuqiao.v1.Membership/ListDatasets", "/shuqiao.v1.Ledger/")
RESERVED_STREAMS_PER_PEER = 2  # health Watch and ledger GetEntries at once, per caller

_KINDS = {
    "unary_unary": (grpc.unary_unary_rpc_method_handler, False, False),
    "unary_stream": (grpc.unary_stream_rpc_method_handler, False, True),
    "stream_unary": (grpc.stream_unary_rpc_method_handler, True, False),
    "stream_stream": (grpc.stream_stream_rpc_method_handler, True, True),
}


@dataclass
class _Call:
    context: grpc.ServicerContext
    method: str
    peer: str
    work: bool
    counted: bool
    started: float
    deadline: float
    key: int = 0
    waiting_since: float | None = None  # the handler is blocked on the caller's next message
    cancelled: bool = False
    done: bool = False
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
                 idle_seconds: float, deadline_seconds: float, clock=time.monotonic) -> None:
        self.work_slots = server_threads - reserved_threads
        self.reserved_stream_slots = max(1, reserved_threads // 2)
        self.partner_streams = partner_streams
        self.idle_seconds = idle_seconds
        self.deadline_seconds = deadline_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._work_total = 0
        self._work_by_peer: Counter[str] = Counter()
        self._reserved_by_peer: Counter[str] = Counter()
        self._reserved_total = 0
        self._calls: dict[int, _Call] = {}
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    @classmethod
    def from_config(cls, grpc_section) -> "StreamLimitInterceptor":
        g = grpc_section
        return cls(server_threads=g.server_threads, reserved_threads=g.reserved_threads,
                   partner_streams=g.partner_streams, idle_seconds=g.idle_seconds,
                   deadline_seconds=g.deadline_seconds)

    def close(self) -> None:
        self._stop.set()

    def in_use(self) -> tuple[int, dict[str, int]]:
        """Work slots held now, in total and per partner."""
        with self._lock:
            return self._work_total, dict(self._work_by_peer)

    # -- interception ------------------------------------------------------------------
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        for attr, (factory, request_streaming, response_streaming) in _KINDS.items():
            behavior = getattr(handler, attr)
            if behavior is not None:
                guarded = self._guard(behavior, method, request_streaming, response_streaming)
                return factory(guarded, request_deserializer=handler.request_deserializer,
                               response_serializer=handler.response_serializer)
        return handler

    def _guard(self, behavior, method: str, request_streaming: bool, response_streaming: bool):
        work = not method.startswith(_RESERVED)
        counted = work or (response_streaming or request_streaming)

        def admitted(request, context) -> tuple[_Call, object]:
            call = self._admit(context, method, work, counted)
            context.add_callback(lambda: self._release(call))
            if request_streaming:
                request = _IdleGuarded(request, call, self._clock)
            return call, request

        if response_streaming:
            def stream_behavior(request, context):
                call, request = admitted(request, context)
                return self._released_after(behavior(request, context), call)
            return stream_behavior

        def unary_behavior(request, context):
            call, request = admitted(request, context)
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
    def _admit(self, context, method: str, work: bool, counted: bool) -> _Call:
        peer = peer_node_id(context) or ""
        refusal = None
        with self._lock:
            if work and self._work_by_peer[peer] >= self.partner_streams:
                refusal = (f"too many concurrent calls from node {peer!r}: at most "
                           f"{self.partner_streams} at once; wait for one to finish")
            elif work and self._work_total >= self.work_slots:
                refusal = "this node is answering as many queries as it can; retry later"
            elif counted and not work and self._reserved_by_peer[peer] >= RESERVED_STREAMS_PER_PEER:
                refusal = (f"too many concurrent streams to {method.rsplit('/', 1)[-1]} from this "
                           f"node: at most {RESERVED_STREAMS_PER_PEER} at once")
            elif counted and not work and self._reserved_total >= self.reserved_stream_slots:
                refusal = "this node is serving as many streams as it can; retry later"
            elif counted:
                if work:
                    self._work_total += 1
                    self._work_by_peer[peer] += 1
                else:
                    self._reserved_total += 1
                    self._reserved_by_peer[peer] += 1
        if refusal:
            log.warning("refused call to %s from node %s: %s", method, peer or "-", refusal)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        now = self._clock()
        call = _Call(context, method, peer, work, counted, now, now + self.deadline_seconds)
        with self._lock:
            call.key = next(self._ids)
            self._calls[call.key] = call
        self._ensure_watchdog()
        return call

    def _release(self, call: _Call) -> None:
        with call.lock:
            if call.done:
                return
            call.done = True
        with self._lock:
            self._calls.pop(call.key, None)
            if not call.counted:
                return
            if call.work:
                self._work_total -= 1
                self._work_by_peer[call.peer] -= 1
                if not self._work_by_peer[call.peer]:
                    del self._work_by_peer[call.peer]
            else:
                self._reserved_total -= 1
                self._reserved_by_peer[call.peer] -= 1
                if not self._reserved_by_peer[call.peer]:
                    del self._reserved_by_peer[call.peer]

    # -- watchdog -----------------------------------------------------------------------
    def _ensure_watchdog(self) -> None:
        with self._lock:
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="grpc-watchdog",
                                                  daemon=True)
                self._watchdog.start()

    def _watch(self) -> None:
        tick = max(0.05, min(1.0, self.idle_seconds / 4, self.deadline_seconds / 4))
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
                elif waiting is not None and now - waiting >= self.idle_seconds:
                    self._cancel(call, f"sent no message for {self.idle_seconds:g} s")

    def _cancel(self, call: _Call, why: str) -> None:
        log.warning("cancelled call to %s from node %s: %s", call.method, call.peer or "-", why)
        call.cancelled = True  # the slot is freed when the handler returns, not before
        call.context.cancel()
