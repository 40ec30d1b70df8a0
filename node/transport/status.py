"""Errors and gRPC status codes, both ways, in one place.

Answering: a handler raises the node's errors (node/core/errors.py) and never picks a
status itself. `CODES` says which status each branch of the hierarchy means; a class
takes the status of its nearest listed ancestor. Servicer methods wear `@refusals`, and
interceptors call `abort_for`: a Refusal ends the call with its status and its reason
(written for the peer). Anything else is not answered here: it propagates to the
incident interceptor (node/core/incidents.py), which logs it and answers an opaque
INTERNAL, so a peer learns nothing of the node's internals.

Asking: `rpc_error` turns a partner's status into a PartnerError, and `REFUSALS` are the
statuses by which a partner refused a query (as opposed to failing to answer it);
`refused_as` asks whether a partner's status means one of the node's refusals, and
`partner_refusal` is a refusal this node reads in a partner's answer (a listing that
offers no such dataset) as the PartnerError that refusal's status would have been.
"""
from __future__ import annotations

import functools
import inspect
from typing import NoReturn

import grpc

from node.core import errors

__all__ = ["CODES", "REFUSALS", "abort_for", "code_for", "partner_refusal", "refusals",
           "refused_as", "rpc_error", "status_for"]

_S = grpc.StatusCode

CODES: dict[type[BaseException], grpc.StatusCode] = {
    errors.ShuqiaoError: _S.INTERNAL,          # not a refusal: an incident, answered opaquely
    errors.Refusal: _S.FAILED_PRECONDITION,    # well formed, but not answered in this state
    errors.NotServed: _S.FAILED_PRECONDITION,
    errors.InvalidRequest: _S.INVALID_ARGUMENT,
    errors.ProtocolViolation: _S.INVALID_ARGUMENT,
    errors.NotPermitted: _S.PERMISSION_DENIED,
    errors.Unauthenticated: _S.UNAUTHENTICATED,
    errors.NotFound: _S.NOT_FOUND,
    errors.AlreadyUsed: _S.ALREADY_EXISTS,
    errors.LimitReached: _S.RESOURCE_EXHAUSTED,
    errors.OutOfRange: _S.OUT_OF_RANGE,
    errors.StreamEnded: _S.CANCELLED,
}


def code_for(kind: type[BaseException]) -> grpc.StatusCode:
    """The status an error class means: that of its nearest ancestor in CODES."""
    for klass in kind.__mro__:
        if klass in CODES:
            return CODES[klass]
    return _S.INTERNAL


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status for one error: its class's (no raise site names a status itself)."""
    return code_for(type(exc))


def abort_for(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    """End the call for `exc`: a refusal with its status and reason; anything else is
    raised again, for the incident interceptor to record and answer opaquely."""
    if not isinstance(exc, errors.Refusal):
        raise exc
    context.abort(status_for(exc), exc.reason)
    raise AssertionError("context.abort returned")  # pragma: no cover - it always raises


def refusals(method):
    """Decorate a servicer method (unary or streaming): its refusals become statuses."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def streaming(self, request, context):
            try:
                yield from method(self, request, context)
            except errors.Refusal as exc:
                abort_for(context, exc)
        return streaming

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except errors.Refusal as exc:
            abort_for(context, exc)
    return unary


# -- the asking side: what a partner's status means ---------------------------------------

REFUSALS = frozenset({_S.PERMISSION_DENIED, _S.NOT_FOUND, _S.INVALID_ARGUMENT,
                      _S.FAILED_PRECONDITION, _S.ALREADY_EXISTS, _S.RESOURCE_EXHAUSTED})


def rpc_error(partner: str, exc: grpc.RpcError) -> errors.PartnerError:
    """A failed call to `partner` as a PartnerError whose message an operator can act on."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == _S.UNAVAILABLE:
        details = f"unavailable ({details}); is the node running and reachable?"
    elif code == _S.DEADLINE_EXCEEDED:
        details = "no answer before the deadline"
    return errors.PartnerError(partner, f"{code.name if code else 'error'}: {details}", code)


def refused_as(exc: grpc.RpcError, *kinds: type[errors.Refusal]) -> bool:
    """Whether a partner's failed call carries the status of one of `kinds`."""
    code = exc.code() if hasattr(exc, "code") else None
    return code is not None and code in {code_for(kind) for kind in kinds}


def partner_refusal(partner: str, message: str, kind: type[errors.Refusal]) -> errors.PartnerError:
    """What a partner answered amounts to a `kind` refusal of the query (its listing
    offers no such dataset, or no labels): a PartnerError with that refusal's status,
    so the query is recorded as refused."""
    return errors.PartnerError(partner, message, code_for(kind))
