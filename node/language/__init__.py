"""The predicate language: tokens and the parser/evaluator of an agency's predicates over its own columns.

May import: node.core."""
