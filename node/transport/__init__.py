"""Transport: who is calling (mTLS identity), channels to partners, call and stream limits, chunked messages,
and the mapping of the error hierarchy to gRPC status codes.

May import: node.core, node.storage, node.keys."""
