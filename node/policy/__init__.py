"""Policy on the answering side, in one place: what a partner may ask (grants, sizes), admission (quotas, budgets,
query ids), consent digests and the query log.

May import: node.runtime.context and the layers below it."""
