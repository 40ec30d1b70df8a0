"""One error hierarchy, one table of gRPC statuses: every node error derives from
ShuqiaoError, means exactly one status, and only refusals reach a peer with their message."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import Counter

import grpc
import pytest

import node
from node.core import errors
from node.transport import status

def _node_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(node.__path__, "node."):
        if info.name.startswith("node.rpc") or info.name == "node.__main__":
            continue  # generated code; the CLI entry point runs on import
        names.append(info.name)
    return names


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for name in _node_modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == name:
                found.append(cls)
    return found


CLASSES = _exception_classes()


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_the_walk_finds_the_node_errors():
    """A walk that found nothing would make every check below pass."""
    names = {_qualname(c) for c in CLASSES}
    for expected in ("node.core.errors.ShuqiaoError", "node.ledger.log.LedgerCorrupt",
                     "node.policy.checks.QuotaExceeded", "node.transport.chunks.RoundError",
                     "node.keys.secrets.SealError", "node.ledger.canonical._Refused"):
        assert expected in names
    assert len(CLASSES) >= 40


def test_every_exception_class_under_node_derives_from_the_node_base():
    strays = [_qualname(c) for c in CLASSES if not issubclass(c, errors.ShuqiaoError)]
    assert strays == []


def test_no_error_is_defined_twice():
    """One name, one error; a class may only share its name with one it refines."""
    twice = [name for name, n in Counter(c.__name__ for c in CLASSES).items() if n > 1]
    for name in twice:
        same = [c for c in CLASSES if c.__name__ == name]
        assert any(all(issubclass(c, base) for c in same) for base in same), same


def test_former_value_errors_still_are():
    """Code that catches ValueError (the CLI, the ledger's parsers) still catches these."""
    from node.language.tokens import ParseError
    from node.ledger.anchor import CertificationError
    from node.ledger.canonical import IdentifierLeak
    from node.ledger.entries import ReceiptMismatch
    from node.ledger.signing import KeyChanged
    from node.rules.language import RuleError
    for cls in (ParseError, CertificationError, IdentifierLeak, ReceiptMismatch, KeyChanged, RuleError):
        assert issubclass(cls, ValueError) and issubclass(cls, errors.ShuqiaoError), cls


def _nearest_listed(cls: type) -> set[type]:
    """The classes in status.CODES that `cls` derives from, minus those another one refines."""
    listed = {k for k in status.CODES if issubclass(cls, k)}
    return {k for k in listed if not any(o is not k and issubclass(o, k) for o in listed)}


@pytest.mark.parametrize("cls", CLASSES, ids=_qualname)
def test_each_error_means_exactly_one_status(cls):
    """Two listed branches at the same distance (say NotPermitted and LimitReached)
    would make the status depend on the order of the bases: refused."""
    nearest = _nearest_listed(cls)
    assert len({status.CODES[k] for k in nearest}) == 1, nearest
    assert status.code_for(cls) == status.CODES[next(iter(nearest))]


@pytest.mark.parametrize("cls", CLASSES, ids=_qualname)
def test_only_refusals_reach_a_peer(cls):
    """Everything that is not a refusal is an incident: an opaque INTERNAL, no message."""
    internal = status.code_for(cls) == grpc.StatusCode.INTERNAL
    assert internal != issubclass(cls, errors.Refusal)


def test_a_branch_at_the_same_distance_is_caught():
    class Ambiguous(errors.NotPermitted, errors.LimitReached):
        pass
    assert len({status.CODES[k] for k in _nearest_listed(Ambiguous)}) == 2


def test_no_refusal_carries_its_own_status():
    """A raise site names the refusal, never a status: node/transport/status.py alone does."""
    carriers = {_qualname(c) for c in CLASSES if issubclass(c, errors.Refusal)
                and "code" in inspect.signature(c.__init__).parameters}
    assert carriers == set()


def test_policy_refusals_keep_the_statuses_the_answering_side_gives_them():
    from node.policy.checks import KindNotGranted, QuotaExceeded, SizeRefused
    assert {c.rule: status.code_for(c) for c in (KindNotGranted, SizeRefused, QuotaExceeded)} == {
        "kind": grpc.StatusCode.PERMISSION_DENIED, "size": grpc.StatusCode.INVALID_ARGUMENT,
        "quota": grpc.StatusCode.RESOURCE_EXHAUSTED}
    for cls in (KindNotGranted, SizeRefused, QuotaExceeded):
        refused = cls("over the limit")  # reaches the peer as itself
        assert status.status_for(refused) == status.code_for(cls) and refused.reason == "over the limit"


# -- ending a call ---------------------------------------------------------------------------

class _Aborted(Exception):
    pass


class _Context:
    """What a servicer sees of grpc.ServicerContext here: abort, which always raises."""

    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    def abort(self, code, details):
        self.status = (code, details)
        raise _Aborted(details)


class _Servicer:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    @status.refusals
    def Unary(self, request, context):
        raise self.exc

    @status.refusals
    def Streaming(self, request, context):
        yield "first"
        raise self.exc


@pytest.mark.parametrize("exc, code", [
    (errors.ProtocolViolation("expected a batch"), grpc.StatusCode.INVALID_ARGUMENT),
    (errors.LimitReached("too many calls"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Refusal("not served"), grpc.StatusCode.FAILED_PRECONDITION),
])
def test_a_refusal_ends_the_call_with_its_status_and_reason(exc, code):
    context = _Context()
    with pytest.raises(_Aborted):
        _Servicer(exc).Unary(None, context)
    assert context.status == (code, exc.reason)
    context = _Context()
    responses = _Servicer(exc).Streaming(None, context)
    assert next(responses) == "first"  # what was sent stays sent; then the status
    with pytest.raises(_Aborted):
        next(responses)
    assert context.status == (code, exc.reason)


@pytest.mark.parametrize("exc", [errors.StorageError("node.db: page 7 damaged"), KeyError("sfzh"),
                                 errors.PartnerError("fund", "refused")])
def test_anything_else_goes_to_the_incident_handler_untouched(exc):
    context = _Context()
    with pytest.raises(type(exc)) as raised:
        _Servicer(exc).Unary(None, context)
    assert raised.value is exc and context.status is None
    with pytest.raises(type(exc)):
        list(_Servicer(exc).Streaming(None, context))
    assert context.status is None


@pytest.mark.parametrize("refused, code", [
    ("StreamEnded", grpc.StatusCode.CANCELLED),
    ("BudgetRefused", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("Unanswerable", grpc.StatusCode.FAILED_PRECONDITION),
    ("InvalidRound", grpc.StatusCode.INVALID_ARGUMENT),
])
def test_what_a_session_refuses_keeps_its_status_and_words(refused, code):
    """protocols/ knows nothing of the node's errors: the answering side reads each of a
    session's refusals as one of the hierarchy's, which the table gives its status."""
    from protocols import session as rounds
    from node.agency.admission import as_refusal
    refusal = as_refusal(getattr(rounds, refused)("the aggregate round was cut short"))
    assert isinstance(refusal, errors.Refusal) and refusal.reason == "the aggregate round was cut short"
    assert status.status_for(refusal) == code


def test_a_message_out_of_turn_is_a_protocol_violation():
    from protocols.session import ProtocolStateError
    from node.agency.admission import as_refusal
    refusal = as_refusal(ProtocolStateError("expected a batch, got the header"))
    assert isinstance(refusal, errors.ProtocolViolation)
    assert status.status_for(refusal) == grpc.StatusCode.INVALID_ARGUMENT
    assert as_refusal(refusal) is refusal  # the node's own refusals pass as they are


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return "no such tree"


def test_the_asking_side_reads_a_partners_status_through_the_table():
    assert status.refused_as(_Failed(grpc.StatusCode.OUT_OF_RANGE), errors.OutOfRange, errors.InvalidRequest)
    assert not status.refused_as(_Failed(grpc.StatusCode.UNAVAILABLE), errors.OutOfRange)
    refused = status.partner_refusal("hrss", "offers no dataset 'roll'", errors.NotFound)
    assert refused.code == grpc.StatusCode.NOT_FOUND and refused.code in status.REFUSALS
