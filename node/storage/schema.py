"""Storage: SQLAlchemy Core tables for datasets, keys, tag tables and the query log.

SQLite (WAL, synchronous=FULL) is the embedded default; any SQLAlchemy URL works, and
PostgreSQL is tested against a real server. Core rather than the ORM because the hot
paths are bulk inserts of dataset rows and tag chunks.

The query log is append-only: UPDATE and DELETE are refused by the database itself
(triggers), not only by this code.
"""
from __future__ import annotations

from sqlalchemy import (
    JSON, BigInteger, Boolean, Column, DateTime, Engine, Float, ForeignKey, Index, Integer, LargeBinary,
    MetaData, String, Table, Text, UniqueConstraint, create_engine, event, text,
)

metadata = MetaData()

datasets = Table(
    "datasets", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("id_type", String(32), nullable=False),
    Column("id_column", String(256), nullable=False),
    Column("attributes", JSON, nullable=False),
    Column("row_count", BigInteger, nullable=False),
    Column("invalid_count", BigInteger, nullable=False),
    Column("source_kind", String(16), nullable=False),
    Column("source_label", String(512), nullable=False),
    Column("source_fingerprint", String(64), nullable=False),
    Column("base_version", Integer),  # set when the version was refreshed from another
    Column("status", String(16), nullable=False),  # active | retired
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True)),
    UniqueConstraint("name", "version", name="uq_dataset_version"),
)

# The agency's own rows (normalised identifier and registered attributes), stored in
# compressed chunks: a version is only ever read whole (to build a tag table for a new
# partner or epoch), and one insert per chunk keeps registering a million rows cheap.
dataset_chunks = Table(
    "dataset_chunks", metadata,
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("rows", LargeBinary, nullable=False),  # sealed zlib(JSON [[subject, {attrs}], ...]): node/datasets/stored_rows.py
    UniqueConstraint("dataset_id", "seq", name="uq_dataset_chunk"),
)

# OPRF keys, one per dataset x partner x epoch, sealed under the node KEK.
oprf_keys = Table(
    "oprf_keys", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(64), nullable=False),
    Column("partner", String(64), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("sealed_key", LargeBinary, nullable=False),
    Column("public_key", LargeBinary(32), nullable=False),  # pkS = k*G, published for VOPRF
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dataset", "partner", "epoch", name="uq_key_epoch"),
)

# Per partner and epoch, each row's tag (and sealed label) in row order, chunk-aligned
# with dataset_chunks: never sent, the source of predicate tables and refreshes.
row_tags = Table(
    "row_tags", metadata,
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False),
    Column("partner", String(64), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("tags", LargeBinary, nullable=False),
    Column("labels", LargeBinary),  # fixed-width sealed labels, or NULL
    UniqueConstraint("dataset_id", "partner", "epoch", "seq", name="uq_row_tags"),
)

# Tag tables the node serves: truncated F_k(y) (and sealed labels) for every row of a
# version -- or of the rows satisfying a predicate -- sorted by tag.
tag_tables = Table(
    "tag_tables", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False),
    Column("partner", String(64), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("predicate", Text, nullable=False),  # canonical predicate text, "" for all rows
    Column("tag_length", Integer, nullable=False),
    Column("label_length", Integer, nullable=False),  # 0: no labels
    Column("row_count", BigInteger, nullable=False),
    Column("digest", LargeBinary(32), nullable=False),  # SHA-256(sorted tags || labels)
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dataset_id", "partner", "epoch", "predicate", name="uq_tag_table"),
)

tag_chunks = Table(
    "tag_chunks", metadata,
    Column("table_id", Integer, ForeignKey("tag_tables.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("tags", LargeBinary, nullable=False),
    Column("labels", LargeBinary),
    UniqueConstraint("table_id", "seq", name="uq_tag_chunk"),
)

# Tag tables fetched from partners, cached by dataset version and epoch.
peer_tag_tables = Table(
    "peer_tag_tables", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("partner", String(64), nullable=False),
    Column("dataset", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("predicate", Text, nullable=False),
    Column("tag_length", Integer, nullable=False),
    Column("label_length", Integer, nullable=False),
    Column("row_count", BigInteger, nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("public_key", LargeBinary(32), nullable=False),  # pinned per partner epoch
    Column("oprf_mode", Integer, nullable=False),
    Column("fetched_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("partner", "dataset", "version", "epoch", "predicate", name="uq_peer_tag_table"),
)

peer_tag_chunks = Table(
    "peer_tag_chunks", metadata,
    Column("table_id", Integer, ForeignKey("peer_tag_tables.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("tags", LargeBinary, nullable=False),
    Column("labels", LargeBinary),
    UniqueConstraint("table_id", "seq", name="uq_peer_tag_chunk"),
)

# Paillier keys of threshold checks, one per dataset x partner x key epoch x income
# column; the factors are sealed under the node KEK, bound to those four by the sealing's
# associated data (node/datasets/threshold_tables.py).
threshold_keys = Table(
    "threshold_keys", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(64), nullable=False),
    Column("partner", String(64), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("income_column", String(256), nullable=False),
    Column("modulus", LargeBinary, nullable=False),
    Column("key_id", LargeBinary(16), nullable=False),
    Column("sealed_key", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dataset", "partner", "epoch", "income_column", name="uq_threshold_key"),
)

# Threshold tables the node serves: per dataset version under one key, every usable
# row's tag and sealed Enc(income), sorted by tag.
threshold_tables = Table(
    "threshold_tables", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False),
    Column("key_ref", Integer, ForeignKey("threshold_keys.id"), nullable=False),
    Column("tag_length", Integer, nullable=False),
    Column("label_length", Integer, nullable=False),
    Column("row_count", BigInteger, nullable=False),
    Column("unusable_count", BigInteger, nullable=False),
    Column("digest", LargeBinary(32), nullable=False),  # SHA-256(key id || tags || labels)
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dataset_id", "key_ref", name="uq_threshold_table"),
)

threshold_chunks = Table(
    "threshold_chunks", metadata,
    Column("table_id", Integer, ForeignKey("threshold_tables.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("tags", LargeBinary, nullable=False),
    Column("labels", LargeBinary, nullable=False),
    UniqueConstraint("table_id", "seq", name="uq_threshold_chunk"),
)

# Metadata of every query made or answered; never an identifier or a message body.
query_log = Table(
    "query_log", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("query_id", String(64), nullable=False),
    Column("role", String(8), nullable=False),  # asker | answerer
    Column("asker", String(64), nullable=False),
    Column("answerer", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("dataset", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("elements", BigInteger, nullable=False),
    Column("matched", BigInteger),  # asker side only
    Column("outcome", String(16), nullable=False),  # answered | refused | failed | aborted
    Column("reason", Text, nullable=False),
    Column("predicate", Text, nullable=False, default=""),
    Column("authorisation_digest", String(64), nullable=False, default=""),
    Column("epsilon_micro", BigInteger, nullable=False, default=0),  # DP spent, millionths
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Index("ix_query_log_query", "query_id", "role"),
    # What a partner was charged on a dataset (quotas at admission, and on /metrics).
    Index("ix_query_log_charged", "asker", "dataset", "started_at"),
)

# One row per predicate table built for a partner (node/agency/predicate_tables.py): counts the
# preparations of the last 24 h, and orders the cached tables by last use for eviction.
# table_id is cleared when the table is evicted; the row stays for the daily count.
predicate_preparations = Table(
    "predicate_preparations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("partner", String(64), nullable=False),
    Column("dataset", String(64), nullable=False),
    Column("table_id", Integer),
    Column("prepared_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=False),
    Index("ix_predicate_preparations_partner", "partner", "prepared_at"),
    Index("ix_predicate_preparations_table", "table_id"),
)

# Small mutable facts about the node itself, e.g. the digest of the last policy it
# ledgered (the ledger holds the history; this only saves scanning it).
node_state = Table(
    "node_state", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# The answering node's claim on every query id it admitted, holding what the query
# reserved against the partner's element quotas and DP budget until its query-log row
# settles it (node/policy/admission.py). The primary key makes a query id answerable once;
# a claim never settled (the node stopped mid-query) keeps counting in full.
query_claims = Table(
    "query_claims", metadata,
    Column("query_id", String(64), primary_key=True),
    Column("partner", String(64), nullable=False),
    Column("dataset", String(64), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("elements", BigInteger, nullable=False),
    Column("epsilon_micro", BigInteger, nullable=False),
    Column("admitted_at", DateTime(timezone=True), nullable=False),
    Column("settled", Boolean, nullable=False),
    Index("ix_query_claims_open", "partner", "dataset", "settled"),
)

# Running totals of the query log for /metrics (node/policy/metrics.py), bumped in the
# transaction that writes each query-log row, so a scrape reads a few rows whatever the
# log's length and agrees with it. Labels are configured names only ("other" for the rest);
# `bucket` is the index of the query's latency bucket.
query_metrics = Table(
    "query_metrics", metadata,
    Column("role", String(8), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("partner", String(64), primary_key=True),
    Column("dataset", String(64), primary_key=True),
    Column("purpose", String(64), primary_key=True),
    Column("outcome", String(16), primary_key=True),
    Column("bucket", Integer, primary_key=True, autoincrement=False),
    Column("queries", BigInteger, nullable=False),
    Column("elements", BigInteger, nullable=False),
    Column("seconds", Float, nullable=False),
)

# One row per partner x dataset, locked (SELECT ... FOR UPDATE) by every admission to
# it on server databases, so checking and reserving a quota is one serial step.
admission_locks = Table(
    "admission_locks", metadata,
    Column("partner", String(64), primary_key=True),
    Column("dataset", String(64), primary_key=True),
)


def delete_tables(conn, tables: Table, chunks: Table, *where) -> None:
    """Delete the rows of ``tables`` matching ``where`` and their chunks (``table_id``)."""
    from sqlalchemy import delete, select
    ids = select(tables.c.id).where(*where)
    conn.execute(delete(chunks).where(chunks.c.table_id.in_(ids)))
    conn.execute(delete(tables).where(*where))


_APPEND_ONLY = ("query_log",)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA secure_delete=ON")  # deleted rows (a purged version) are overwritten
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for `url` with the node's settings (SQLite: WAL, synchronous=FULL)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def _append_only_ddl(dialect: str, table: str) -> list[str]:
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            for op in ("UPDATE", "DELETE")
        ]
    if dialect == "postgresql":
        return [
            "CREATE OR REPLACE FUNCTION shuqiao_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$",
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION shuqiao_append_only()",
        ]
    if dialect in ("mysql", "mariadb"):
        return [
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
            f"FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{table} is append-only'"
            for op in ("UPDATE", "DELETE")
        ]
    raise ValueError(f"unsupported database dialect for the append-only log: {dialect}")
