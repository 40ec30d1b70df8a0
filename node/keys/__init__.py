"""Key material: the KEK and sealed secrets, per-partner OPRF keys, Paillier keys, the federation PKI, and the
worker processes that use keys (which receive them only inside sealed types).

May import: node.core, node.storage."""
