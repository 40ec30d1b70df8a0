"""Datasets held by this node: registration of versions, key epochs, tag tables, threshold tables, and the rows the
statistics and bulk kinds read.

May import: node.runtime.context and the layers below it (ledger, transport, keys, storage, core), node.language."""
