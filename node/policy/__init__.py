"""Policy on the answering side, in one place: what a partner may ask (grants, sizes), admission (quotas, budgets,
query ids), consent digests, the query log and the running totals of it that /metrics serves.

May import: node.runtime.context and the layers below it."""
