"""Operator jobs over files: an applicant list in, a result file out.

May import: node.asker, node.rules and below."""
