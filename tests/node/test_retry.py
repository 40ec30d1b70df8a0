"""Retrying partner calls: only transient statuses, a bounded number of times, jittered pauses."""
from __future__ import annotations

import random

import grpc
import pytest

from node.core.errors import PartnerError
from node.ledger.sources import SourceError
from node.transport.channels import Backoff, retrying, transient

S = grpc.StatusCode


class Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def flaky(*failures: BaseException, result="listing"):
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return result
    return call, calls


def test_a_transient_failure_is_tried_again_after_a_growing_jittered_pause():
    call, calls = flaky(Failed(S.UNAVAILABLE), Failed(S.DEADLINE_EXCEEDED), Failed(S.UNAVAILABLE))
    pauses = []
    assert retrying(call, what="listing", rng=random.Random(1), sleep=pauses.append) == "listing"
    assert len(calls) == 4 and len(pauses) == 3
    for retry, pause in enumerate(pauses):  # equal jitter: the upper half of 1, 2, 4 s
        bound = min(8.0, 2 ** retry)
        assert bound / 2 <= pause <= bound


def test_the_pauses_differ_between_nodes():
    def pauses(seed):
        out = []
        call, _ = flaky(*[Failed(S.UNAVAILABLE)] * 3)
        retrying(call, what="x", rng=random.Random(seed), sleep=out.append)
        return out
    assert pauses(1) != pauses(2)


def test_attempts_are_bounded_and_the_last_failure_propagates():
    call, calls = flaky(*[Failed(S.UNAVAILABLE)] * 10)
    pauses = []
    with pytest.raises(Failed) as failed:
        retrying(call, what="x", backoff=Backoff(attempts=3, first=0.5, cap=0.75),
                 rng=random.Random(0), sleep=pauses.append)
    assert failed.value.code() is S.UNAVAILABLE
    assert len(calls) == 3 and len(pauses) == 2 and max(pauses) <= 0.75


@pytest.mark.parametrize("code", [S.PERMISSION_DENIED, S.RESOURCE_EXHAUSTED, S.INVALID_ARGUMENT,
                                  S.NOT_FOUND, S.INTERNAL, S.FAILED_PRECONDITION, S.CANCELLED])
def test_a_refusal_or_an_incident_is_never_repeated(code):
    call, calls = flaky(Failed(code))
    with pytest.raises(Failed):
        retrying(call, what="x", sleep=pytest.fail)
    assert len(calls) == 1


def test_node_errors_carrying_a_transient_status_are_retried_and_others_not():
    source = SourceError("hrss: UNAVAILABLE: connection refused")
    source.code = S.UNAVAILABLE
    assert transient(PartnerError("hrss", "unreachable", S.UNAVAILABLE)) and transient(source)
    assert not transient(PartnerError("hrss", "refused", S.PERMISSION_DENIED))
    assert not transient(SourceError("hrss: malformed proof"))  # no status: not a network failure
    assert not transient(ValueError("anything else"))
    call, calls = flaky(PartnerError("hrss", "unreachable", S.UNAVAILABLE))
    assert retrying(call, what="x", sleep=lambda _: None) == "listing" and len(calls) == 2
