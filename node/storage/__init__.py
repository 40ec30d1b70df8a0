"""Storage: the database schema, sealed stored rows, owner-only files, result files.

May import: node.core."""
