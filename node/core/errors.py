"""Errors a node reports about its partners."""
from __future__ import annotations

import grpc


class PartnerError(Exception):
    """A partner refused, failed or could not be reached; `code` is the gRPC status."""

    def __init__(self, partner: str, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(f"partner {partner!r}: {message}")
        self.partner = partner
        self.code = code


REFUSALS = frozenset({grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND,
                      grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                      grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.RESOURCE_EXHAUSTED})


def rpc_error(partner: str, exc: grpc.RpcError) -> PartnerError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"unavailable ({details}); is the node running and reachable?"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        details = "no answer before the deadline"
    return PartnerError(partner, f"{code.name if code else 'error'}: {details}", code)
