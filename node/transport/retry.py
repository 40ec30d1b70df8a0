"""Retrying a partner call that failed for a passing reason: bounded, jittered, idempotent calls only.

Only UNAVAILABLE (the partner restarts, the connection dropped, nobody listens yet) and
DEADLINE_EXCEEDED are retried: a refusal or an internal error would only come back.
Only calls that change nothing at the partner when repeated are retried: dataset
listings (node/asker/peer_tables.py) and witnessing rounds (node/server/witnessing.py:
the partner cosigns the same head again with the same answer, and notes already
exchanged are not stored twice). A query stream never is: once its header may have
been admitted, the partner has claimed the query id and reserved quota, and a second
attempt would be a second query -- the operator decides to ask again.

The delays grow as first, 2 x first, 4 x first ... up to `cap`, each drawn from its
upper half at random ("equal jitter"), so the nodes of a federation that lost the same
partner do not all come back at the same instant, and a partner that is restarting
still gets a few seconds. Randomness and sleeping are parameters, for the tests.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

__all__ = ["Backoff", "RETRYABLE", "retrying", "transient"]

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True)
class Backoff:
    attempts: int = 4    # calls in all, the first one included
    first: float = 1.0   # seconds: the first delay lies in [first / 2, first]
    cap: float = 8.0     # no delay longer than this

    def delay(self, retry: int, rng: random.Random) -> float:
        """The pause before retry number `retry` (0 for the first retry)."""
        bound = min(self.cap, self.first * 2 ** retry)
        return bound / 2 + rng.uniform(0.0, bound / 2)


def transient(exc: BaseException) -> bool:
    """Whether `exc` is a failure worth another attempt: a gRPC error, or a node error
    carrying the partner's status (PartnerError, a ledger SourceError), of RETRYABLE."""
    code = exc.code() if isinstance(exc, grpc.RpcError) else getattr(exc, "code", None)
    return code in RETRYABLE


def retrying(call: Callable[[], T], *, what: str, backoff: Backoff = Backoff(),
             rng: random.Random | None = None, sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, again after a pause while it fails transiently, at most `backoff.attempts`
    times; the last failure (or any other one) propagates unchanged."""
    rng = rng or random.Random()
    for retry in range(backoff.attempts - 1):
        try:
            return call()
        except Exception as exc:
            if not transient(exc):
                raise
            pause = backoff.delay(retry, rng)
            log.info("%s failed transiently (%s); attempt %d of %d in %.1f s", what,
                     type(exc).__name__, retry + 2, backoff.attempts, pause)
            sleep(pause)
    return call()
