"""Bulk PSI messages on the Bulk stream (proto/shuqiao/v1/membership.proto), and their chunk sizes.

The protocol's messages (protocols/bulk/messages.py) are bytes already: the stream
carries each one as the ``message`` body of a request or response, after the query
header (asker) or Accepted (answerer). The two big rounds are chunked by the sessions;
the sizes here keep every chunk, with its protobuf envelope, below the gRPC message
limit both nodes set (``grpc.max_message_bytes``).
"""
from __future__ import annotations

from protocols.bulk import InvalidMessage
from protocols.bulk.params import MAX_ELEMENTS, ROW_ALIGN, WIDTH_BYTES, output_bytes
from protocols.bulk.session import DEFAULT_CHUNK_ELEMENTS, DEFAULT_CHUNK_ROWS

from node.rpc.shuqiao.v1 import membership_pb2 as pb

_ENVELOPE = 1024  # protobuf framing and the chunk's own header, with room to spare
_MAX_VALUE_BYTES = output_bytes(MAX_ELEMENTS, MAX_ELEMENTS)  # the widest OPRF value sent


def chunk_rows(max_message_bytes: int) -> int:
    """Correction rows per chunk (fund centre -> agency): 64 bytes each, 128-row aligned."""
    fit = (max_message_bytes - _ENVELOPE) // WIDTH_BYTES // ROW_ALIGN * ROW_ALIGN
    return max(ROW_ALIGN, min(DEFAULT_CHUNK_ROWS, fit))


def chunk_elements(max_message_bytes: int) -> int:
    """Agency rows per Values chunk (agency -> fund centre): three OPRF values each."""
    fit = (max_message_bytes - _ENVELOPE) // (3 * _MAX_VALUE_BYTES)
    return max(1, min(DEFAULT_CHUNK_ELEMENTS, fit))


def request(message: bytes) -> pb.BulkRequest:
    return pb.BulkRequest(message=message)


def response(message: bytes) -> pb.BulkResponse:
    return pb.BulkResponse(message=message)


def message_of(received) -> bytes:
    """The protocol message a request or response carries.

    Raises:
        InvalidMessage: it carries something else (a second header, an empty body).
    """
    if received.WhichOneof("body") != "message":
        raise InvalidMessage()
    return received.message
