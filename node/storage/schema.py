"""Storage: SQLAlchemy Core tables for datasets, keys, tag tables and the query log, and the
files that may hold personal data, the database first, owner-only.

SQLite (WAL, synchronous=FULL) is the embedded default; any SQLAlchemy URL works, and
PostgreSQL is tested against a real server. Core rather than the ORM because the hot
paths are bulk inserts of dataset rows and tag chunks.

The query log is append-only: UPDATE and DELETE are refused by the database itself
(triggers), not only by this code.

Files that may hold personal data are owner-only (0600, directories 0700) whatever the
umask. A node's data directory holds its database (identifiers, sealed or not, and the query
log), its key-encryption key, cached partner tables, and the operator's result files
name applicants. Each is created with its final mode (``os.open`` with 0600, then
``fchmod``, since a umask can only narrow the mode and an unusual one may be in force),
never chmod-ed after the data is in; and the node's processes run with umask 077
(:func:`restrict_umask`), so files that libraries create (SQLite's -wal and -shm, say)
are owner-only too.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import (
    JSON, BigInteger, Boolean, Column, DateTime, Engine, Float, ForeignKey, Index, Integer,
    LargeBinary, MetaData, String, Table, Text, UniqueConstraint, create_engine, event,
)
from sqlalchemy.engine import make_url

metadata = MetaData()


# -- column sets the tables share ----------------------------------------------------------


def serial() -> Column:
    """The surrogate key: a database-assigned integer."""
    return Column("id", Integer, primary_key=True, autoincrement=True)


def required(**types) -> list[Column]:
    """NOT NULL columns, in the order given (name=SQL type)."""
    return [Column(name, type_, nullable=False) for name, type_ in types.items()]


def names(*columns: str) -> list[Column]:
    """NOT NULL names of at most 64 characters: node ids, dataset names, purpose codes."""
    return [Column(name, String(64), nullable=False) for name in columns]


def moment(name: str = "created_at", *, nullable: bool = False) -> Column:
    """A point in time, with its zone."""
    return Column(name, DateTime(timezone=True), nullable=nullable)


def chunks_of(name: str, parent: str, *, labels_required: bool = False) -> Table:
    """A table's rows in chunks, in order: tags, and fixed-width labels (NULL: none)."""
    return Table(
        name, metadata,
        Column("table_id", Integer, ForeignKey(f"{parent}.id"), nullable=False),
        *required(seq=Integer, tags=LargeBinary),
        Column("labels", LargeBinary, nullable=not labels_required),
        UniqueConstraint("table_id", "seq", name=f"uq_{name[:-1]}"),
    )


def _dataset_ref() -> Column:
    return Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False)


# -- datasets and their keys ----------------------------------------------------------------

datasets = Table(
    "datasets", metadata, serial(),
    *names("name"),
    *required(version=Integer, id_type=String(32), id_column=String(256), attributes=JSON,
              row_count=BigInteger, invalid_count=BigInteger, source_kind=String(16),
              source_label=String(512), source_fingerprint=String(64)),
    Column("base_version", Integer),  # set when the version was refreshed from another
    Column("status", String(16), nullable=False),  # active | retired
    moment(), moment("retired_at", nullable=True),
    UniqueConstraint("name", "version", name="uq_dataset_version"),
)

# The agency's own rows (normalised identifier and registered attributes), stored in
# compressed chunks: a version is only ever read whole (to build a tag table for a new
# partner or epoch), and one insert per chunk keeps registering a million rows cheap.
dataset_chunks = Table(
    "dataset_chunks", metadata, _dataset_ref(),
    *required(seq=Integer, row_count=Integer,
              rows=LargeBinary),  # sealed zlib(JSON [[subject, {attrs}], ...]): node/datasets/stored_rows.py
    UniqueConstraint("dataset_id", "seq", name="uq_dataset_chunk"),
)

# OPRF keys, one per dataset x partner x epoch, sealed under the node KEK.
oprf_keys = Table(
    "oprf_keys", metadata, serial(),
    *names("dataset", "partner"),
    *required(epoch=Integer, sealed_key=LargeBinary,
              public_key=LargeBinary(32)),  # pkS = k*G, published for VOPRF
    moment(),
    UniqueConstraint("dataset", "partner", "epoch", name="uq_key_epoch"),
)

# Per partner and epoch, each row's tag (and sealed label) in row order, chunk-aligned
# with dataset_chunks: never sent, the source of predicate tables and refreshes.
row_tags = Table(
    "row_tags", metadata, _dataset_ref(),
    *names("partner"),
    *required(epoch=Integer, seq=Integer, tags=LargeBinary),
    Column("labels", LargeBinary),  # fixed-width sealed labels, or NULL
    UniqueConstraint("dataset_id", "partner", "epoch", "seq", name="uq_row_tags"),
)

# -- tag tables: served, and fetched from partners ------------------------------------------

# Tag tables the node serves: truncated F_k(y) (and sealed labels) for every row of a
# version -- or of the rows satisfying a predicate -- sorted by tag.
tag_tables = Table(
    "tag_tables", metadata, serial(), _dataset_ref(),
    *names("partner"),
    *required(epoch=Integer,
              predicate=Text,  # canonical predicate text, "" for all rows
              tag_length=Integer, label_length=Integer,  # label_length 0: no labels
              row_count=BigInteger,
              digest=LargeBinary(32)),  # SHA-256(sorted tags || labels)
    moment(),
    UniqueConstraint("dataset_id", "partner", "epoch", "predicate", name="uq_tag_table"),
)
tag_chunks = chunks_of("tag_chunks", "tag_tables")

# Tag tables fetched from partners, cached by dataset version and epoch.
peer_tag_tables = Table(
    "peer_tag_tables", metadata, serial(),
    *names("partner", "dataset"),
    *required(version=Integer, epoch=Integer, predicate=Text, tag_length=Integer,
              label_length=Integer, row_count=BigInteger, digest=LargeBinary(32),
              public_key=LargeBinary(32),  # pinned per partner epoch
              oprf_mode=Integer),
    moment("fetched_at"),
    UniqueConstraint("partner", "dataset", "version", "epoch", "predicate", name="uq_peer_tag_table"),
)
peer_tag_chunks = chunks_of("peer_tag_chunks", "peer_tag_tables")

# -- threshold checks ------------------------------------------------------------------------

# Paillier keys of threshold checks, one per dataset x partner x key epoch x income
# column; the factors are sealed under the node KEK, bound to those four by the sealing's
# associated data (node/datasets/threshold_tables.py).
threshold_keys = Table(
    "threshold_keys", metadata, serial(),
    *names("dataset", "partner"),
    *required(epoch=Integer, income_column=String(256), modulus=LargeBinary,
              key_id=LargeBinary(16), sealed_key=LargeBinary),
    moment(),
    UniqueConstraint("dataset", "partner", "epoch", "income_column", name="uq_threshold_key"),
)

# Threshold tables the node serves: per dataset version under one key, every usable
# row's tag and sealed Enc(income), sorted by tag.
threshold_tables = Table(
    "threshold_tables", metadata, serial(), _dataset_ref(),
    Column("key_ref", Integer, ForeignKey("threshold_keys.id"), nullable=False),
    *required(tag_length=Integer, label_length=Integer, row_count=BigInteger,
              unusable_count=BigInteger,
              digest=LargeBinary(32)),  # SHA-256(key id || tags || labels)
    moment(),
    UniqueConstraint("dataset_id", "key_ref", name="uq_threshold_table"),
)
threshold_chunks = chunks_of("threshold_chunks", "threshold_tables", labels_required=True)

# -- queries ---------------------------------------------------------------------------------

# Metadata of every query made or answered; never an identifier or a message body.
query_log = Table(
    "query_log", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("query_id", String(64), nullable=False),
    Column("role", String(8), nullable=False),  # asker | answerer
    *names("asker", "answerer"),
    Column("kind", String(32), nullable=False),
    *names("dataset"),
    *required(version=Integer, epoch=Integer, purpose=String(64), elements=BigInteger),
    Column("matched", BigInteger),  # asker side only
    Column("outcome", String(16), nullable=False),  # answered | refused | failed | aborted
    Column("reason", Text, nullable=False),
    Column("predicate", Text, nullable=False, default=""),
    Column("authorisation_digest", String(64), nullable=False, default=""),
    Column("epsilon_micro", BigInteger, nullable=False, default=0),  # DP spent, millionths
    moment("started_at"), moment("finished_at"),
    Index("ix_query_log_query", "query_id", "role"),
    # What a partner was charged on a dataset (quotas at admission, and on /metrics).
    Index("ix_query_log_charged", "asker", "dataset", "started_at"),
)

# One row per predicate table built for a partner (node/agency/predicate_tables.py): counts the
# preparations of the last 24 h, and orders the cached tables by last use for eviction.
# table_id is cleared when the table is evicted; the row stays for the daily count.
predicate_preparations = Table(
    "predicate_preparations", metadata, serial(),
    *names("partner", "dataset"),
    Column("table_id", Integer),
    moment("prepared_at"), moment("used_at"),
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
# settles it (node/policy/querylog.py). The primary key makes a query id answerable once;
# a claim never settled (the node stopped mid-query) keeps counting in full.
query_claims = Table(
    "query_claims", metadata,
    Column("query_id", String(64), primary_key=True),
    *names("partner", "dataset"),
    *required(epoch=Integer, elements=BigInteger, epsilon_micro=BigInteger),
    moment("admitted_at"),
    Column("settled", Boolean, nullable=False),
    Index("ix_query_claims_open", "partner", "dataset", "settled"),
)

# Running totals of the query log for /metrics (node/policy/querylog.py), bumped in the
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


# -- the HTTP service and the console --------------------------------------------------------

# Console sessions: the SHA-256 of the session cookie (never the cookie itself), whose
# token (by name) it stands for, and when it ends. A token revoked by a reload ends its
# sessions too: each request resolves the name against the tokens in force.
console_sessions = Table(
    "console_sessions", metadata,
    Column("digest", String(64), primary_key=True),
    *names("token_name"),
    moment("created_at"), moment("expires_at"), moment("seen_at"),
)

# Answers to POSTs by Idempotency-Key, per token: a retried request gets the first
# answer again; the same key with another body is refused. `status` 0: still running.
idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("token_name", String(64), primary_key=True),
    Column("key", String(128), primary_key=True),
    *required(request_digest=String(64), status=Integer),
    Column("body", LargeBinary, nullable=True),
    moment("created_at"),
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


# -- owner-only files ----------------------------------------------------------------------

PRIVATE_UMASK = 0o077
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def restrict_umask() -> None:
    """Make every file and directory this process creates owner-only from now on."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) if missing and make it 0700."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.chmod(path, 0o700)
    except PermissionError:  # another owner: acceptable only if it is closed already
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            raise PermissionError(f"directory {path} is open to group or others and this user "
                                  f"cannot close it; run `chmod 700 {path}` as its owner") from None
    return path


def open_private(path: str | os.PathLike[str], mode: str = "w", **kwargs):
    """``open(path, mode)`` for writing a file that is 0600 from its first byte.

    ``mode`` is "w"/"wb" (truncate) or "a"/"ab" (append); other arguments go to
    :func:`open` (encoding, newline). A symlink at ``path`` is refused.
    """
    if mode.replace("b", "") not in ("w", "a"):
        raise ValueError("open_private writes: mode is w, wb, a or ab")
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # an existing file keeps its mode through open(); narrow it
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) in place of its old content."""
    with open_private(path, "wb") as f:
        f.write(data)


def private_sqlite(url: str) -> None:
    """For a SQLite file database: create the file 0600 before SQLite does, and narrow
    an existing one and its journals. SQLite gives -wal and -shm the database's mode."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return
    if parsed.database.startswith("file:"):
        return  # a URI filename; its owner chose its place and mode
    db = Path(parsed.database)
    if not db.parent.is_dir():
        return  # SQLite says so when it opens
    os.close(os.open(db, os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o600))
    for p in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))):
        try:
            os.chmod(p, 0o600)
        except FileNotFoundError:
            pass
