"""Errors shared by every protocol in protocols/.

Each protocol keeps its own opaque error for a malformed peer message (what a remote
party may learn differs per protocol); what they all share is the round order.
"""
from __future__ import annotations

__all__ = ["ProtocolStateError"]


class ProtocolStateError(RuntimeError):
    """A step was called, or a peer's message arrived, out of order, twice or after the end.

    The node's adapters answer it as a refusal of the stream (gRPC INVALID_ARGUMENT);
    its message names the round, never a value.
    """
