"""Operator jobs over files: an applicant list in, a result file out.

May import: node.asker and the layers below it (node.rules is its sibling, not below it)."""
