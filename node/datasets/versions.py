"""Dataset versions as stored: listing them and finding the one currently served."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from node.storage.schema import datasets


@dataclass(frozen=True)
class DatasetVersion:
    id: int
    name: str
    version: int
    id_type: str
    id_column: str
    attributes: list[str]
    row_count: int
    invalid_count: int
    source_kind: str
    source_label: str
    source_fingerprint: str
    status: str
    created_at: datetime
    retired_at: datetime | None
    base_version: int | None = None


def list_versions(conn: Connection, name: str | None = None) -> list[DatasetVersion]:
    q = select(datasets).order_by(datasets.c.name, datasets.c.version)
    if name:
        q = q.where(datasets.c.name == name)
    return [DatasetVersion(**row._mapping) for row in conn.execute(q)]


def current_version(conn: Connection, name: str) -> DatasetVersion | None:
    row = conn.execute(select(datasets).where(datasets.c.name == name, datasets.c.status == "active")
                       .order_by(datasets.c.version.desc()).limit(1)).first()
    return DatasetVersion(**row._mapping) if row else None
