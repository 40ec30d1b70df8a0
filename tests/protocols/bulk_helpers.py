"""Shared helpers for the bulk PSI tests: seeded randomness and an in-process wire."""
from __future__ import annotations

import hashlib
from collections.abc import Callable

from protocols.bulk import BulkReceiver, BulkSender


class SeededBytes:
    """A deterministic ``random_bytes``: SHAKE-256 of (seed, call number, length)."""

    def __init__(self, seed: bytes) -> None:
        self.seed, self.calls = seed, 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return hashlib.shake_256(self.seed + self.calls.to_bytes(8, "little")
                                 + n.to_bytes(8, "little")).digest(n)


def wire(message: bytes) -> bytes:
    """Every message crosses as a fresh bytes copy, as over a socket."""
    return bytes(bytearray(message))


def run(receiver: BulkReceiver, sender: BulkSender,
        tap: Callable[[str, bytes], bytes] | None = None) -> list[tuple[str, bytes]]:
    """Drive both sessions to the end; returns the transcript ``(direction, message)``.

    ``tap(direction, message)`` may rewrite each message in flight (tampering tests).
    """
    transcript: list[tuple[str, bytes]] = []
    to_sender = list(receiver.start())
    while to_sender:
        to_receiver: list[bytes] = []
        for m in to_sender:
            m = tap("fc->agency", m) if tap else m
            transcript.append(("fc->agency", m))
            to_receiver.extend(sender.handle(wire(m)))
        to_sender = []
        for m in to_receiver:
            m = tap("agency->fc", m) if tap else m
            transcript.append(("agency->fc", m))
            to_sender.extend(receiver.handle(wire(m)))
    return transcript
