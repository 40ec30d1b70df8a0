"""Errors every protocol shares.

Each protocol keeps its own opaque error for a peer's malformed message; what they all
share is the one error for a message or step that comes out of its round: a second
``request()``, a release before the offer, a peer's message after the end.
"""

from __future__ import annotations

__all__ = ["ProtocolStateError"]


class ProtocolStateError(RuntimeError):
    """A step was called, or a message arrived, out of its round or after the end."""
