"""The agency's rows for the statistics kinds, read once per dataset version.

A version's identifiers and attribute columns are kept in the node context's caches (the
latest few versions), as is H(y) of every row for the shuffled match. Values are parsed strictly:
an attribute cell counts only if it is a plain ASCII integer (optional sign, no
separators or decimals) within the protocol's range; any other row is left out of the
query and only *counted* as unusable, so a typo in one row never stops a release and
never shows up as a value.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from adapters import IdType, encode
from protocols import psi_shuffle as ps

from node.datasets.stored_rows import iter_rows

MAX_GROUPS = 64          # each group costs (1 + limbs) x blocks BFV ciphertexts
MAX_INCOME = 2**62       # |income - threshold| must stay below 2^64 (threshold.py)
MAX_VALUE = 2**62 - 1    # he_aggregate's largest per-row bound
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")


@dataclass(frozen=True)
class VersionColumns:
    ids: list[bytes]                  # encoded identifiers, dataset order
    attrs: dict[str, list[str]]       # registered attribute -> text per row


def parse_int(text: str) -> int | None:
    s = text.strip()
    return int(s) if _INTEGER.fullmatch(s) else None


def version_columns(ctx, version) -> VersionColumns:
    """Identifiers and attributes of a stored version (read once per node context)."""
    return ctx.caches.version_columns.get_or_build(version.id, lambda: _read_columns(ctx, version))


def _read_columns(ctx, version) -> VersionColumns:
    kind = IdType(version.id_type)
    ids, attrs = [], {a: [] for a in version.attributes}
    with ctx.engine.connect() as conn:
        for subject, values in iter_rows(conn, version.id, ctx.kek):
            ids.append(encode(kind, subject))
            for a, column in attrs.items():
                column.append(values.get(a, ""))
    return VersionColumns(ids, attrs)


def hashed_rows(ctx, version, cols: VersionColumns) -> bytes:
    """Packed H(y) of every row of a version (psi_shuffle's hash), cached per version."""
    return ctx.caches.shuffle_hashes.get_or_build(
        version.id, lambda: ps.hash_identifiers(cols.ids, ctx.pool.map))


def select_packed(packed: bytes, positions: np.ndarray, width: int) -> bytes:
    return np.frombuffer(packed, np.uint8).reshape(-1, width)[positions].tobytes()


@dataclass(frozen=True)
class AggregateRows:
    positions: np.ndarray             # dataset rows taking part
    values: np.ndarray                # their values (zeros for a count of rows)
    groups: np.ndarray                # their group index
    group_names: tuple[str, ...]
    unusable: int
    value_bound: int                  # the per-row maximum the protocol enforces


def aggregate_rows(cols: VersionColumns, value_column: str, group_column: str,
                   declared_bound: int | None) -> AggregateRows:
    """Rows with a usable value (0 <= v <= bound), their values and groups.

    Without a value column every row takes part. Without a declared bound the bound is
    the protocol's maximum, never the largest value present: the bound shapes what the
    asker sees (limb sizes, the summary), so it must not depend on anyone's value.
    """
    n = len(cols.ids)
    limit = declared_bound if declared_bound is not None else MAX_VALUE
    if value_column:
        parsed = [parse_int(v) for v in cols.attrs[value_column]]
        keep = np.fromiter((v is not None and 0 <= v <= limit for v in parsed), bool, count=n)
        positions = np.flatnonzero(keep)
        values = np.array([parsed[i] for i in positions], dtype=np.int64)
    else:
        positions, values = np.arange(n), np.zeros(n, dtype=np.int64)
    labels = cols.attrs[group_column] if group_column else [""] * n
    names = tuple(sorted({labels[i].strip() for i in positions}))
    index = {name: g for g, name in enumerate(names)}
    groups = np.array([index[labels[i].strip()] for i in positions], dtype=np.int64)
    return AggregateRows(positions, values, groups, names, n - len(positions), limit)


def usable_income(text: str) -> int | None:
    """The income in a cell if a threshold check can use it (an integer below 2^62)."""
    value = parse_int(text or "")
    return value if value is not None and abs(value) < MAX_INCOME else None


def income_rows(cols: VersionColumns, column: str) -> tuple[np.ndarray, list[int], int]:
    """(dataset rows with a usable income, their incomes, number left out)."""
    parsed = [usable_income(v) for v in cols.attrs[column]]
    positions = [i for i, v in enumerate(parsed) if v is not None]
    return (np.array(positions, dtype=np.int64), [parsed[i] for i in positions],
            len(parsed) - len(positions))
