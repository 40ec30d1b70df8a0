"""The node's HTTP API (FastAPI): real-time checks for the fund centre's business systems; ledger,
datasets and policy for auditors and admins; /metrics for a scraper; health probes for load
balancers; the OpenAPI document and its interactive docs, with their static files (static/).

May import: node.jobs, node.rules and below; never node.cli or node.server."""
