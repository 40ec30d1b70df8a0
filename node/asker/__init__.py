"""The asking side (the fund centre's node): one module per query kind, clients around protocols/ sessions, and the
caches of partners' tables; streams.py holds what every kind shares (the logged query, every call to a partner,
the session driven over a stream, the receipt).

May import: node.policy, node.datasets, node.runtime.context and below. Never node.agency, node.cli, node.server."""
