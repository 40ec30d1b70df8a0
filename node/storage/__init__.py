"""Storage: the database schema, sealed stored rows, owner-only files.

May import: node.core."""
