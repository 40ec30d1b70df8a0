"""Locate and load the shared known-answer vectors (``../shared/vectors`` from the repo).

The vectors are read-only data copied from the standards; tests name the file they use
so a failure points at its source. ``SHUQIAO_VECTORS`` overrides the location.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def vectors_dir() -> Path:
    """The vectors folder: ``$SHUQIAO_VECTORS`` or ``<repo>/../shared/vectors``."""
    override = os.environ.get("SHUQIAO_VECTORS")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "vectors"


def vector_path(relative: str) -> Path:
    """Path of one vector file, e.g. ``"oprf/rfc9497_all_suites.json"``."""
    return vectors_dir() / relative


def load_json(relative: str) -> Any:
    """Parse one JSON vector file; a missing file fails loudly, never skips."""
    path = vector_path(relative)
    if not path.is_file():
        raise FileNotFoundError(f"known-answer vectors missing: {path} (set SHUQIAO_VECTORS)")
    return json.loads(path.read_text(encoding="utf-8"))
