"""A dataset version's stored rows: identifiers and attributes, sealed chunk by chunk.

Stored rows hold identifiers, so each chunk (zlib of JSON ``[[subject, {attrs}], ...]``)
is sealed with AES-256-GCM (node/keys/secrets.py) under a key derived from the node KEK,
bound to its dataset, version and place as associated data: a copied database or
backup shows no identifier, and a chunk moved to another row or version does not open.
Sealing costs one AES-GCM pass per chunk of 8,192 rows.
"""
from __future__ import annotations

import json
import zlib

from sqlalchemy import Connection, select, update

from node.runtime.context import NodeNotInitialised
from node.keys.secrets import KeyEncryptionKey, Sealer
from node.storage.schema import dataset_chunks, datasets

_ROWS_INFO = b"shuqiao dataset rows v1"


class StoredRowsError(NodeNotInitialised):
    """Stored rows cannot be read as they are (stored before sealing: run `shuqiao init`)."""


def rows_sealer(kek: KeyEncryptionKey) -> Sealer:
    return kek.sealer(info=_ROWS_INFO)


def rows_purpose(name: str, version: int, dataset_id: int, seq: int) -> str:
    return f"dataset-rows/{name}/v{version}/id{dataset_id}/chunk{seq}"


def pack_rows(rows: list[list], sealer: Sealer, purpose: str) -> bytes:
    plain = zlib.compress(json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode(), 1)
    return sealer.seal(plain, purpose=purpose)


def unpack_rows(blob: bytes, sealer: Sealer, purpose: str) -> list[list]:
    if bytes(blob[:1]) == _ZLIB_HEADER:
        raise StoredRowsError("this node stores dataset rows from before they were sealed; "
                              "run `shuqiao init --config ...` once to seal them")
    return json.loads(zlib.decompress(sealer.unseal(blob, purpose=purpose)))


_ZLIB_HEADER = b"\x78"  # what an unsealed chunk (zlib) starts with; a sealed one starts 0x01


def iter_chunks(conn: Connection, dataset_id: int, kek: KeyEncryptionKey):
    """(seq, [[normalised id, attrs], ...]) of a dataset version, one chunk in memory at a time.

    Raises:
        SealError: a chunk does not open (damaged, or moved from another row).
    """
    name, version = conn.execute(select(datasets.c.name, datasets.c.version).where(
        datasets.c.id == dataset_id)).one()
    sealer = rows_sealer(kek)
    seqs = conn.execute(select(dataset_chunks.c.seq).where(
        dataset_chunks.c.dataset_id == dataset_id).order_by(dataset_chunks.c.seq)).scalars().all()
    for seq in seqs:
        blob = conn.execute(select(dataset_chunks.c.rows).where(
            dataset_chunks.c.dataset_id == dataset_id, dataset_chunks.c.seq == seq)).scalar_one()
        yield seq, unpack_rows(blob, sealer, rows_purpose(name, version, dataset_id, seq))


def iter_rows(conn: Connection, dataset_id: int, kek: KeyEncryptionKey):
    """(normalised id, attrs) of every row of a dataset version, chunk by chunk."""
    for _, rows in iter_chunks(conn, dataset_id, kek):
        yield from rows


def seal_stored_rows(ctx) -> int:
    """Seal every chunk stored before chunks were sealed (idempotent). Returns how many."""
    sealer = rows_sealer(ctx.kek)
    done = 0
    with ctx.engine.begin() as conn:
        found = conn.execute(select(dataset_chunks.c.dataset_id, dataset_chunks.c.seq,
                                    datasets.c.name, datasets.c.version)
                             .join(datasets, datasets.c.id == dataset_chunks.c.dataset_id)).all()
        for dataset_id, seq, name, version in found:
            where = (dataset_chunks.c.dataset_id == dataset_id, dataset_chunks.c.seq == seq)
            blob = conn.execute(select(dataset_chunks.c.rows).where(*where)).scalar_one()
            if bytes(blob[:1]) != _ZLIB_HEADER:
                continue
            rows = json.loads(zlib.decompress(blob))
            conn.execute(update(dataset_chunks).where(*where).values(
                rows=pack_rows(rows, sealer, rows_purpose(name, version, dataset_id, seq))))
            done += 1
    if done:
        _drop_old_pages(ctx.engine)
    return done


def _drop_old_pages(engine) -> None:
    """Leave no copy of the replaced plaintext in the database's free pages or its WAL
    (SQLite: VACUUM rewrites the file from live rows; PostgreSQL: VACUUM FULL the table)."""
    from sqlalchemy import text
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("VACUUM"))
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        elif engine.dialect.name == "postgresql":
            conn.execute(text("VACUUM FULL dataset_chunks"))
