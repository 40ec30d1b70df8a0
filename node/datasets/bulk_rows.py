"""The agency's side of a bulk query: a dataset version's elements, as one array.

The bulk PSI (protocols/bulk) runs over every row of the current version at once. Its
elements are the rows' identifiers encoded exactly as a membership query encodes the
fund centre's (adapters.encode: type-separated bytes), so the same person matches in
both kinds. They are read from the sealed stored rows chunk by chunk
(node/datasets/stored_rows.py) into one fixed-width bytes array, about 50 bytes per row,
kept in the context's cache (node/runtime/context.py) for the version last asked about:
the first query on a version reads it (about 2 s per million rows), the next ones do
not. Registration already refused repeated identifiers, so the elements are distinct.
"""
from __future__ import annotations

import numpy as np

from adapters import IdType, encode

from node.datasets.stored_rows import iter_chunks


def encoder(id_type: str):
    """adapters.encode for one identifier type, as a prefix: the type-separated bytes are
    ``encode(type, "")`` followed by the identifier's UTF-8 (five times faster per row
    than calling encode, which parses the type each time; tests check they agree)."""
    prefix = encode(IdType(id_type), "")
    return lambda subject: prefix + subject.encode("utf-8")


def version_elements(ctx, version) -> np.ndarray:
    """Every row's encoded identifier of a stored version (numpy ``S`` array, dataset
    order), read once and kept in the context's cache for the next query on it.

    Raises:
        StoredRowsError, SealError: the stored rows do not open (node/datasets/stored_rows.py).
    """
    return ctx.caches.bulk_elements.get_or_build(version.id, lambda: _read_elements(ctx, version))


def _read_elements(ctx, version) -> np.ndarray:
    encoded = encoder(version.id_type)
    parts: list[np.ndarray] = []
    with ctx.engine.connect() as conn:
        for _, rows in iter_chunks(conn, version.id, ctx.kek):
            parts.append(np.array([encoded(subject) for subject, _ in rows], dtype=bytes))
    if not parts:
        return np.array([], dtype="S1")
    width = max(p.dtype.itemsize for p in parts)
    return np.concatenate([p.astype(f"S{width}", copy=False) for p in parts])
