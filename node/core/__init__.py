"""Foundations every other package may use: the config schema, the error hierarchy, incidents, the clock,
log line formats (text, JSON), the installed version.

May import: nothing from node (only protocols, adapters and third-party libraries)."""
