"""The bulk kind's node parts that need no network: chunk sizes under the gRPC limit,
the stream's message bodies, the bounded outbox, and the stage clock."""
from __future__ import annotations

import queue

import grpc
import numpy as np
import pytest

from node.asker.streams import Exchange
from node.core.progress import StageClock
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.transport import bulk_wire as wire
from protocols.bulk import InvalidMessage, messages
from protocols.bulk.params import MAX_ELEMENTS, ROW_ALIGN, output_bytes


@pytest.mark.parametrize("limit", [64 * 1024, 100_000, 1 << 20, 8 << 20, 64 << 20])
def test_the_largest_chunks_fit_the_grpc_message_limit(limit: int) -> None:
    rows, elements = wire.chunk_rows(limit), wire.chunk_elements(limit)
    assert rows % ROW_ALIGN == 0 and rows >= ROW_ALIGN and elements >= 1
    correction = messages.Correction(2**32 - 1, np.full((rows, 64), 0xFF, np.uint8)).to_bytes()
    width = output_bytes(MAX_ELEMENTS, MAX_ELEMENTS)
    values = messages.Values(2**32 - 1, np.full((elements, 3, width), 0xFF, np.uint8)).to_bytes()
    assert wire.request(correction).ByteSize() <= limit
    assert wire.response(values).ByteSize() <= limit


def test_chunks_stay_at_the_sessions_defaults_under_a_generous_limit() -> None:
    from protocols.bulk.session import DEFAULT_CHUNK_ELEMENTS, DEFAULT_CHUNK_ROWS
    assert wire.chunk_rows(64 << 20) == DEFAULT_CHUNK_ROWS
    assert wire.chunk_elements(64 << 20) == DEFAULT_CHUNK_ELEMENTS


def test_only_a_message_body_is_a_protocol_message() -> None:
    assert wire.message_of(pb.BulkRequest(message=b"\x01\x01x")) == b"\x01\x01x"
    for other in (pb.BulkRequest(header=pb.QueryHeader(query_id="q")), pb.BulkRequest(),
                  pb.BulkResponse(summary=pb.BulkSummary(query_id="q"))):
        with pytest.raises(InvalidMessage):
            wire.message_of(other)


class _EndedCall(grpc.RpcError):
    """A call whose stream is over: nothing takes from the outbox any more."""

    def __init__(self, requests, timeout) -> None:
        self.requests = requests

    def __iter__(self):
        return iter(())

    def done(self) -> bool:
        return True

    def cancel(self) -> None:
        pass


def test_a_bounded_outbox_raises_the_calls_error_instead_of_waiting_forever() -> None:
    exchange = Exchange(_EndedCall, 1.0, limit=2)
    exchange.send("a", "b")                          # fits
    with pytest.raises(_EndedCall):
        exchange.send("c")                           # full, and nobody will take it
    exchange.cancel()                                # full outbox: still wakes the iterator
    assert list(exchange._call.requests) == ["b"]     # "a" made room for the end marker


def test_an_unbounded_outbox_never_blocks() -> None:
    exchange = Exchange(_EndedCall, 1.0)
    exchange.send(*range(1000))
    assert exchange._outbox.qsize() == 1000 and not isinstance(exchange._outbox, queue.LifoQueue)


def test_the_stage_clock_counts_waiting_apart_from_work() -> None:
    now = [0.0]
    clock = StageClock(lambda: now[0])
    clock.mark("hashing")
    now[0] = 2.0

    def arrivals():
        now[0] += 3.0                                # the peer takes 3 s per message
        yield "m1"
        now[0] += 3.0
        yield "m2"
    for _ in clock.waiting(arrivals()):
        clock.mark("matching")
        now[0] += 1.0
    clock.mark(None)
    assert clock.rounded() == {"hashing": 2.0, "matching": 2.0, "protocol": 0.0, "wait": 6.0}


def test_bulk_is_suggested_only_where_the_benchmark_found_it_faster() -> None:
    from node.asker.bulk import bulk_is_faster
    assert not bulk_is_faster(10_000, 1_000_000)      # membership: ~2 s against bulk's ~5 s
    assert bulk_is_faster(50_000, 1_000_000)          # ~7.5 s against ~5 s
    assert bulk_is_faster(1_000_000, 1_000_000)
    assert not bulk_is_faster(100, 100) and not bulk_is_faster(2_000, 5_000)
    assert bulk_is_faster(4_000, 5_000)


@pytest.mark.parametrize("id_type", ["cn_resident_id", "cn_uscc", "phone_cn", "custom"])
def test_the_agencys_elements_are_encoded_as_membership_encodes_identifiers(id_type) -> None:
    from adapters import encode
    from node.datasets.bulk_rows import encoder
    for subject in ("11010519491231002X", "13800138000", "张三/001", "", "a\u00e9b"):
        assert encoder(id_type)(subject) == encode(id_type, subject)
