"""A node at run time: its context (config, database, KEK, worker pool, ledger, caches) and what every upper layer
does through it: admin entries in the ledger, the ledger key's certification; and the node's life on disk:
the data directory lock, backups and their verified restore; and the live config (what a reload of a running
node may change, applying it, and what is enforced).

May import: node.ledger, node.transport, node.keys, node.storage, node.core.
"""
