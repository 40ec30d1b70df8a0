"""This installation's version, as the package metadata says (pyproject's `version`)."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["software_version"]


def software_version() -> str:
    try:
        return version("shuqiao")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"
