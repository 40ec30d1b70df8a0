"""Transport: who is calling (mTLS identity), channels to partners, call and stream limits, chunked messages,
protocol session messages to and from their protobuf form, the mapping of the error hierarchy to gRPC status codes,
and retrying idempotent partner calls that failed transiently.

May import: node.core, node.storage, node.keys."""
