"""The node's HTTP API (FastAPI): ledger, datasets and policy for auditors and admins; /metrics for a scraper;
health probes for load balancers.

May import: node.agency, node.asker, node.datasets and below; never node.cli or node.server."""
