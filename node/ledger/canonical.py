"""Canonical JSON for everything the ledger hashes or signs, the identifier guard, and the
checks of the fields signed and hashed structures share (node ids, sizes, tokens, text).

A ledger entry, a tree head or a receipt is hashed or signed as bytes, so the same
content must always give the same bytes, on every node and in every language an
auditor might use. The form (close to RFC 8785 for the values we allow):

* an object with keys sorted by code point, no whitespace, UTF-8, no escaping of
  non-ASCII text (``ensure_ascii=False``);
* integers only (no floats, NaN or infinities: their text forms differ between
  encoders), no booleans where an integer is expected, no duplicate keys;
* `parse` accepts only bytes that `dump` would have produced, so two different byte
  strings can never decode to the same entry (no malleability of signed or hashed data).

The identifier guard is defence in depth: entries hold query metadata, never a
resident's identifier, but a careless `reason` or `details` string could carry one.
`dump` refuses any string with a 15- or 18-character run that looks like a Chinese
resident identity number, so such a string never reaches the append-only ledger,
where it could not be deleted.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from node.core.errors import EvidenceError, ShuqiaoError

__all__ = ["CanonicalError", "IdentifierLeak", "dump", "parse", "rfc3339", "check_time",
           "check_hex", "check_node_id", "check_size", "check_bytes", "check_token", "check_text",
           "clean_text", "MAX_INT"]

# Integers stay within what every JSON reader represents exactly (IEEE double).
MAX_INT = 2**53 - 1

# 15 or more digits in a run (the 18-character form may end in X): the shape of a
# resident identity number (15 digits, old form; 17 digits and a check character).
# Runs are bounded by non-digits, so counts, sizes and dates never match.
_ID_LIKE = re.compile(r"(?<!\d)\d{14,}[\dXxＸｘ](?!\d)")
# Hex of hashes, signatures and keys ("ed25519:<hex>" included) is machine output,
# and random hex often holds long digit runs; it is exempt from the guard.
_MACHINE_HEX = re.compile(r"(?:[a-z0-9]{1,16}:)?[0-9a-f]{64,}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", re.ASCII)


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                            allow_nan=False)


class CanonicalError(EvidenceError, ValueError):
    """Bytes or a value that are not in the ledger's canonical form."""


class IdentifierLeak(CanonicalError):
    """A string that looks like a resident identifier was about to enter the ledger.

    The message names the field, never the value.
    """


def _no_float(text: str) -> Any:
    raise CanonicalError("floats are not allowed in ledger data")


def _no_constant(text: str) -> Any:
    raise CanonicalError(f"{text} is not allowed in ledger data")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CanonicalError(f"duplicate key {key!r}")
        out[key] = value
    return out


class _Refused(ShuqiaoError):
    """Internal: the fast walk found something; the slow walk names where."""


def _fast_walk(value: Any, strings: list[str]) -> None:
    # Hot path (every append): no path strings, flat values handled inline.
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise _Refused
            strings.append(key)
            t = type(item)
            if t is str:
                strings.append(item)
            elif t is not int or not -MAX_INT <= item < 10**14:
                _fast_walk(item, strings)
    elif kind is str:
        strings.append(value)
    elif kind is int:
        if not -MAX_INT <= value <= MAX_INT:
            raise _Refused
        if value >= 10**14:  # a resident number smuggled in as an integer
            strings.append(str(value))
    elif kind is list or kind is tuple:
        for item in value:
            _fast_walk(item, strings)
    elif value is not None and kind is not bool:
        raise _Refused


def _slow_walk(value: Any, path: str, strings: list[tuple[str, str]]) -> None:
    kind = type(value)  # exact types: a str or int subclass could encode surprisingly
    if kind is str:
        strings.append((path, value))
    elif kind is int:
        if not -MAX_INT <= value <= MAX_INT:
            raise CanonicalError(f"{path}: integer out of range")
        strings.append((path, str(value)))
    elif kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise CanonicalError(f"{path}: object keys must be strings")
            strings.append((f"{path}.{key} (key)", key))
            _slow_walk(item, f"{path}.{key}", strings)
    elif kind is list or kind is tuple:
        for position, item in enumerate(value):
            _slow_walk(item, f"{path}[{position}]", strings)
    elif value is not None and kind is not bool:
        raise CanonicalError(f"{path}: {kind.__name__} is not allowed in ledger data")


def _looks_like_id(text: str) -> bool:
    return bool(_ID_LIKE.search(text)) and not _MACHINE_HEX.fullmatch(text)


def _check(obj: dict[str, Any]) -> None:
    """Refuse values without a canonical form and identifier-shaped strings."""
    strings: list[str] = []
    try:
        _fast_walk(obj, strings)
        if not _ID_LIKE.search("\x00".join(strings)) or not any(map(_looks_like_id, strings)):
            return  # the common case: one regex pass over every string
    except _Refused:
        pass
    named: list[tuple[str, str]] = []
    _slow_walk(obj, "$", named)  # raises CanonicalError naming the field, if that was it
    for path, text in named:
        if _looks_like_id(text):
            raise IdentifierLeak(
                f"{path} holds a number shaped like a resident identifier; "
                "ledger entries must never carry identifiers")


def dump(obj: dict[str, Any]) -> bytes:
    """The canonical bytes of `obj` (a dict of str, int, bool, None, list, dict).

    Raises:
        CanonicalError: a float or another type that has no canonical form.
        IdentifierLeak: a string (or a very large integer) shaped like a resident id.
    """
    if not isinstance(obj, dict):
        raise CanonicalError("ledger data is a JSON object")
    _check(obj)
    return _ENCODER.encode(obj).encode("utf-8")


def parse(data: bytes) -> dict[str, Any]:
    """Decode canonical bytes; refuse anything `dump` would not have produced.

    Raises:
        CanonicalError: not UTF-8 JSON, not an object, floats, duplicate keys, or not
            in canonical form (whitespace, key order, escapes).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CanonicalError("ledger data is bytes")
    data = bytes(data)
    try:
        obj = json.loads(data.decode("utf-8"), parse_float=_no_float,
                         parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except CanonicalError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CanonicalError("not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise CanonicalError("ledger data is a JSON object")
    if dump(obj) != data:
        raise CanonicalError("not in canonical form (key order, whitespace or escapes)")
    return obj


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean_text(text: str, limit: int) -> str:
    """Make free text (a refusal reason, a peer-supplied name) fit for an entry.

    Control characters become spaces, identifier-shaped runs become "[redacted]", and
    the result is cut to `limit` characters. For text the node does not fully control;
    the encoder still refuses anything identifier-shaped that skipped this.
    """
    text = _CONTROL.sub(" ", str(text))
    text = _ID_LIKE.sub("[redacted]", text)
    return text[:limit]


def rfc3339(moment: datetime) -> str:
    """UTC, second precision: 2025-03-01T08:00:00Z (sub-second parts are dropped)."""
    if moment.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_time(value: Any, field: str) -> str:
    """Check an RFC 3339 UTC second-precision time string and return it."""
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise CanonicalError(f"{field} must be an RFC 3339 UTC time like 2025-03-01T08:00:00Z")
    try:  # datetime() checks the calendar far faster than strptime parses
        datetime(int(value[0:4]), int(value[5:7]), int(value[8:10]), int(value[11:13]),
                 int(value[14:16]), int(value[17:19]))
    except ValueError:
        raise CanonicalError(f"{field} is not a valid date and time") from None
    return value


def parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def check_hex(value: Any, field: str, size: int) -> bytes:
    """Decode lowercase hex of exactly `size` bytes."""
    if not isinstance(value, str) or len(value) != 2 * size or value != value.lower():
        raise CanonicalError(f"{field} must be {2 * size} lowercase hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise CanonicalError(f"{field} must be {2 * size} lowercase hex digits") from None


# The fields every signed or hashed structure shares, checked alike wherever they occur.
_NODE_ID = re.compile(r"[a-z][a-z0-9_-]{1,62}")
_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_CONTROL_CHAR = re.compile(r"[\x00-\x1f\x7f]")


def check_node_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _NODE_ID.fullmatch(value):
        raise CanonicalError(f"{field} must be a node id")
    return value


def check_size(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise CanonicalError(f"{field} must be a non-negative integer")
    return value


def check_bytes(value: Any, size: int, field: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise CanonicalError(f"{field} must be {size} bytes")
    return value


def check_token(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise CanonicalError(f"{field} must be 1-64 letters, digits or ._:-")
    return value


def check_text(value: Any, field: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit or _CONTROL_CHAR.search(value):
        raise CanonicalError(f"{field} must be text of at most {limit} characters")
    return value
