"""The node's HTTP API (FastAPI): ledger, datasets and policy for auditors and admins.

May import: node.agency, node.asker, node.datasets and below; never node.cli or node.server."""
