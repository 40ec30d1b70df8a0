"""A byte wire for session messages in tests: every message is serialised and parsed back
into a fresh object, so two parties in one process share nothing by reference and a
message that holds anything but plain values (ints, bytes, tuples of them) fails.

The node's own wire is protobuf (proto/shuqiao/v1); its adapters convert, and the e2e
tests cover that path. Here the codec is deliberately unrelated to the sessions' code.
"""
from __future__ import annotations

import dataclasses
import json


def _encode(value):
    if isinstance(value, bool) or value is None:
        raise TypeError("session messages hold ints, bytes and tuples only")
    if isinstance(value, int):
        return value
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    raise TypeError(f"not a wire value: {type(value).__name__}")


def _decode(value):
    if isinstance(value, dict):
        return bytes.fromhex(value["hex"])
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return value


def dumps(message) -> bytes:
    fields = {f.name: _encode(getattr(message, f.name)) for f in dataclasses.fields(message)}
    return json.dumps({"type": type(message).__name__, "fields": fields}).encode()


def loads(data: bytes, types) -> object:
    """Parse one message whose type is among `types`."""
    raw = json.loads(data)
    (cls,) = [t for t in types if t.__name__ == raw["type"]]
    return cls(**{k: _decode(v) for k, v in raw["fields"].items()})


def cross(messages, types) -> list:
    """`messages` after a trip over the wire."""
    return [loads(dumps(m), types) for m in messages]


class Link:
    """An asker and an answerer session joined by the wire, messages handled as they
    arrive. The asker's first message is the header the node admits: the answerer session
    is made from it. `tamper(direction, message)` may replace a message in flight; `log`
    keeps (direction, message) as received."""

    def __init__(self, asker, make_answerer, types, tamper=None) -> None:
        self.asker, self.types, self.log = asker, types, []
        self.tamper = tamper or (lambda direction, message: message)
        header, *rest = self.send("answerer", asker.start())
        self.answerer = make_answerer(header)
        self.to_asker(self.answerer.start())
        self.deliver(rest)

    def send(self, direction: str, messages) -> list:
        out = [self.tamper(direction, m) for m in cross(messages, self.types)]
        self.log += [(direction, m) for m in out]
        return out

    def to_answerer(self, messages) -> None:
        self.deliver(self.send("answerer", messages))

    def deliver(self, crossed) -> None:
        """Messages already over the wire, to the answerer."""
        for m in crossed:
            self.to_asker(self.answerer.handle(m))

    def to_asker(self, messages) -> None:
        for m in self.send("asker", messages):
            self.to_answerer(self.asker.handle(m))

    def run(self) -> "Link":
        """Drain the asker's lazily produced batches, if it has any."""
        for batch in getattr(self.asker, "batches", lambda: ())():
            self.to_answerer([batch])
        return self

    def received(self, direction: str, kind) -> list:
        return [m for d, m in self.log if d == direction and isinstance(m, kind)]
