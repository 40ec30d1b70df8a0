"""Dataset registration: an adapter's rows become an immutable dataset version.

A registration streams the source once: each identifier is typed and normalised, the
row is stored (sealed under the node KEK: node/datasets/stored_rows.py), and its OPRF tags for
every granted partner are computed in worker processes while reading goes on. Invalid rows are reported with line number and reason;
the version then holds every valid row (or, with `strict`, nothing at all). Everything
is one database transaction, so a failed or interrupted registration leaves no trace.

Tag tables are stored sorted, so their order says nothing about the source's order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

from sqlalchemy import Connection, func, insert, select, update

from adapters import IdType, InvalidRow, ValidRow, read_identifiers

from node.core.errors import InvalidInput
from node.runtime import admin_log
from node.runtime.context import NodeContext
from node.keys.workers import ensure_key
from node.storage.schema import dataset_chunks, datasets
# iter_chunks, iter_rows, list_versions: where callers have long found them.
from node.datasets.stored_rows import iter_chunks, iter_rows, pack_rows, rows_purpose, rows_sealer
from node.datasets.tag_tables import RowTagger
from node.core.progress import Progress, no_progress
from node.datasets.versions import DatasetVersion, current_version, list_versions

__all__ = ["ROW_BATCH", "Refresh", "Registration", "RegistrationError", "current_version",
           "iter_chunks", "iter_rows", "list_versions", "purge", "refresh", "register", "retire"]

ROW_BATCH = 8192


class RegistrationError(InvalidInput):
    """The registration was refused or aborted; nothing was stored."""


@dataclass
class Registration:
    name: str
    version: int
    row_count: int
    fingerprint: str
    invalid: list[InvalidRow] = field(default_factory=list)
    tag_tables: list[tuple[str, int]] = field(default_factory=list)  # (partner, epoch)


def _declared(ctx: NodeContext, name: str):
    declared = ctx.config.dataset(name)
    if declared is None:
        raise RegistrationError(
            f"dataset {name!r} is not declared in the node config; add a [[datasets]] "
            f"entry with name = {name!r} and its grants first")
    return declared


def _insert_version(ctx: NodeContext, conn: Connection, **values) -> int:
    """A new row of ``datasets``, counted and fingerprinted once its rows are in."""
    return conn.execute(insert(datasets).values(
        row_count=0, source_fingerprint="", status="active", created_at=ctx.clock.now(),
        **values)).inserted_primary_key[0]


class _VersionRows:
    """A new version's rows, stored chunk by chunk (sealed under the KEK: stored_rows.py);
    chunks of rows not tagged before go to the tagger as well."""

    def __init__(self, ctx: NodeContext, conn: Connection, name: str, version: int,
                 dataset_id: int, tagger: RowTagger) -> None:
        self.conn, self.tagger, self.sealer = conn, tagger, rows_sealer(ctx.kek)
        self.name, self.version, self.dataset_id = name, version, dataset_id
        self.seq = self.rows = 0

    def write(self, rows: list[list], tag: bool = True) -> None:
        self.conn.execute(insert(dataset_chunks).values(
            dataset_id=self.dataset_id, seq=self.seq, row_count=len(rows),
            rows=pack_rows(rows, self.sealer,
                           rows_purpose(self.name, self.version, self.dataset_id, self.seq))))
        if tag:
            self.tagger.add_chunk(self.seq, rows)
        self.seq += 1
        self.rows += len(rows)

    def write_all(self, rows: list[list]) -> None:
        for i in range(0, len(rows), ROW_BATCH):
            self.write(rows[i:i + ROW_BATCH])


def _store_source(source, id_column: str, id_type: IdType, attributes: Sequence[str],
                  out: _VersionRows, progress: Progress) -> list[InvalidRow]:
    """Read ``source`` into ``out`` in batches of ROW_BATCH rows; returns the invalid rows."""
    invalid: list[InvalidRow] = []
    batch: list[list] = []
    total = getattr(source, "progress_total", None)
    for item in read_identifiers(source, id_column, id_type, attributes):
        if isinstance(item, ValidRow):
            batch.append([item.normalised_id, item.attrs])
            if len(batch) >= ROW_BATCH:
                out.write(batch)
                batch = []
                progress("reading", source.progress_position(), total)
        else:
            invalid.append(item)
    if batch:
        out.write(batch)
    progress("reading", total or out.rows, total)
    return invalid


def register(ctx: NodeContext, name: str, source, *, id_column: str, id_type: IdType,
             attributes: Sequence[str] = (), strict: bool = False, source_kind: str,
             source_label: str, progress: Progress = no_progress) -> Registration:
    """Register `source` as the next version of dataset `name`.

    Raises:
        RegistrationError: the dataset is not declared in the config, the source has no
            valid row, or (strict) some row is invalid. Nothing is stored.
        adapters.SourceError: a missing column or an undecodable file.
    """
    declared = _declared(ctx, name)
    ctx.ledger  # loaded before the registration's write transaction
    with ctx.engine.begin() as conn:
        version = (conn.execute(select(func.max(datasets.c.version))
                                .where(datasets.c.name == name)).scalar() or 0) + 1
        dataset_id = _insert_version(
            ctx, conn, name=name, version=version, id_type=id_type.value, id_column=id_column,
            attributes=list(attributes), invalid_count=0, source_kind=source_kind,
            source_label=source_label[:512])
        keys = {g.partner: ensure_key(conn, ctx.kek, name, g.partner, now=ctx.clock.now())
                for g in declared.grants}
        tagger = RowTagger(ctx, conn, ctx.config.node.id, declared, dataset_id, id_type.value, keys)
        out = _VersionRows(ctx, conn, name, version, dataset_id, tagger)
        invalid = _store_source(source, id_column, id_type, attributes, out, progress)
        if strict and invalid:
            raise RegistrationError(
                f"{len(invalid)} invalid row(s) and --strict was given; nothing was registered "
                f"(first: line {invalid[0].line}: {invalid[0].reason})")
        if out.rows == 0:
            raise RegistrationError("the source has no valid row; nothing was registered")
        progress("tags", 0, len(keys))
        tag_tables_done = tagger.finish(progress)
        _prepare_thresholds(ctx, conn, declared, dataset_id, version, id_type.value, attributes,
                            {p: e for p, (e, _) in keys.items()}, None, tagger, progress)
        fingerprint = source.fingerprint()
        conn.execute(update(datasets).where(datasets.c.id == dataset_id).values(
            row_count=out.rows, invalid_count=len(invalid), source_fingerprint=fingerprint))
        admin_log.record(ctx, conn, "dataset_registered", name, version=version, rows=out.rows,
                         invalid=len(invalid), source=source_kind, sha256=fingerprint)
    return Registration(name, version, out.rows, fingerprint, invalid, tag_tables_done)


def _prepare_thresholds(ctx, conn, declared, dataset_id: int, version: int, id_type: str,
                        attributes, epochs: dict[str, int], base_id: int | None,
                        tagger: RowTagger, progress: Progress) -> None:
    """The version's threshold tables (node/datasets/threshold_tables.py), in this transaction,
    sealed under the OPRF outputs the tagger already computed."""
    from node.datasets import threshold_tables as threshold_store
    for target in threshold_store.targets(declared, dataset_id, version, id_type, attributes,
                                          epochs, base_id):
        threshold_store.prepare_in(ctx, conn, target, progress, tagger.outputs.get(target.partner))


def retire(ctx: NodeContext, name: str, version: int) -> "DatasetVersion | None":
    """Mark a version retired: partners can no longer sync or query it (ledgered).

    Retiring the newest active version makes the one before it current again; what it
    lacks to be served (tables of newer key epochs) is built in the same transaction.
    Returns the version served from now on, if any.
    """
    ctx.ledger
    with ctx.engine.begin() as conn:
        res = conn.execute(update(datasets).where(
            datasets.c.name == name, datasets.c.version == version, datasets.c.status == "active")
            .values(status="retired", retired_at=ctx.clock.now()))
        if res.rowcount != 1:
            raise RegistrationError(f"no active version {version} of dataset {name!r}")
        admin_log.record(ctx, conn, "dataset_retired", name, version=version)
        current = current_version(conn, name)
        declared = ctx.config.dataset(name)
        if current is not None and current.version < version and declared is not None:
            # The newest was retired: the previous active version is served again, under
            # the partners' current key epochs, which may have started after it.
            from node.datasets.epochs import complete_version
            complete_version(ctx, conn, declared, current)
    return current


def purge(ctx: NodeContext, name: str, version: int) -> int:
    """Delete a retired version's rows and every table derived from them (ledgered).

    The version's record stays (status "purged"), as do ledger entries about it; its
    personal data goes: stored rows, row tags, tag tables and threshold tables. A partner
    that still holds a table of it syncs the current version whole. Returns its row count.
    """
    from sqlalchemy import delete

    from node.storage.schema import (delete_tables,
        row_tags,
        tag_chunks,
        tag_tables,
        threshold_chunks,
        threshold_tables)
    ctx.ledger
    with ctx.engine.begin() as conn:
        row = conn.execute(select(datasets).where(
            datasets.c.name == name, datasets.c.version == version)).first()
        if row is None:
            raise RegistrationError(f"dataset {name!r} has no version {version}")
        if row.status != "retired":
            raise RegistrationError(
                f"version {version} of {name!r} is {row.status}; only a retired version can be "
                f"purged (retire it first: shuqiao dataset retire {name} --version {version})")
        for tables, chunks in ((tag_tables, tag_chunks), (threshold_tables, threshold_chunks)):
            delete_tables(conn, tables, chunks, tables.c.dataset_id == row.id)
        conn.execute(delete(row_tags).where(row_tags.c.dataset_id == row.id))
        conn.execute(delete(dataset_chunks).where(dataset_chunks.c.dataset_id == row.id))
        conn.execute(update(datasets).where(datasets.c.id == row.id).values(status="purged"))
        admin_log.record(ctx, conn, "dataset_purged", name, version=version, rows=row.row_count)
    return row.row_count


@dataclass
class Refresh:
    name: str
    version: int
    base_version: int
    row_count: int
    added: int
    removed: int
    invalid: list[InvalidRow] = field(default_factory=list)


def refresh(ctx: NodeContext, name: str, *, add=None, remove=None, id_column: str,
            attributes: Sequence[str] | None = None, progress: Progress = no_progress) -> Refresh:
    """A new version = the current one + rows of `add` - identifiers of `remove`.

    Only added rows are evaluated; every kept row keeps its tag and sealed label, so the
    partners' copies refresh by delta. Rows of `add` whose identifier is already present,
    and identifiers of `remove` that are absent, are reported as invalid and not applied.
    """
    from node.keys.workers import current_epoch, sealed_key
    declared = _declared(ctx, name)
    ctx.ledger  # loaded before the write transaction
    with ctx.engine.begin() as conn:
        base = current_version(conn, name)
        if base is None:
            raise RegistrationError(f"dataset {name!r} has no version to refresh; use `dataset add`")
        attrs = list(attributes if attributes is not None else base.attributes)
        gone, new_rows, invalid = _read_changes(add, remove, id_column, IdType(base.id_type), attrs)
        keys = {g.partner: current_epoch(conn, name, g.partner) for g in declared.grants}
        keys = {p: (e, sealed_key(conn, name, p, e)) for p, e in keys.items() if e is not None}
        version = base.version + 1
        dataset_id = _insert_version(
            ctx, conn, name=name, version=version, id_type=base.id_type, id_column=base.id_column,
            attributes=attrs, invalid_count=len(invalid), source_kind="refresh",
            source_label=f"v{base.version} + {len(new_rows)} - {len(gone)}",
            base_version=base.version)
        tagger = RowTagger(ctx, conn, ctx.config.node.id, declared, dataset_id, base.id_type, keys)
        out = _VersionRows(ctx, conn, name, version, dataset_id, tagger)
        present = _copy_kept(ctx, conn, base, gone, keys, out, progress)
        invalid += [InvalidRow(line, "removal list: identifier is not in the dataset")
                    for ident, line in gone.items() if ident not in present]
        fresh = []
        for line, row in new_rows:
            if row[0] in present and row[0] not in gone:
                invalid.append(InvalidRow(line, "additions: identifier is already in the dataset"))
            else:
                fresh.append(row)
        out.write_all(fresh)
        if out.rows == 0:
            raise RegistrationError("the refreshed version would be empty; nothing was registered")
        tagger.finish(progress)
        _prepare_thresholds(ctx, conn, declared, dataset_id, version, base.id_type, attrs,
                            {p: e for p, (e, _) in keys.items()}, base.id, tagger, progress)
        removed = len(gone.keys() & present)
        conn.execute(update(datasets).where(datasets.c.id == dataset_id).values(
            row_count=out.rows, invalid_count=len(invalid)))
        admin_log.record(ctx, conn, "dataset_registered", name, version=version, rows=out.rows,
                         base_version=base.version, added=len(fresh), removed=removed)
    return Refresh(name, version, base.version, out.rows, len(fresh), removed,
                   sorted(invalid, key=lambda r: r.line))


def _read_changes(add, remove, id_column: str, kind: IdType, attrs: list[str]
                  ) -> tuple[dict[str, int], list[tuple[int, list]], list[InvalidRow]]:
    """(identifier -> line of the removal list, (line, row) to add, invalid rows of both)."""
    invalid: list[InvalidRow] = []
    gone = {item.normalised_id: item.line for item in _valid(remove, id_column, kind, (), invalid)}
    new_rows = [(item.line, [item.normalised_id, item.attrs])
                for item in _valid(add, id_column, kind, attrs, invalid)]
    return gone, new_rows, invalid


def _valid(source, id_column: str, kind: IdType, attrs, invalid: list[InvalidRow]) -> Iterator[ValidRow]:
    """The valid rows of ``source`` (none without one); the others go to ``invalid``."""
    if source is None:
        return
    for item in read_identifiers(source, id_column, kind, attrs):
        if isinstance(item, ValidRow):
            yield item
        else:
            invalid.append(item)


def _copy_kept(ctx: NodeContext, conn: Connection, base: DatasetVersion, gone: Iterable[str],
               keys: dict, out: _VersionRows, progress: Progress) -> set[str]:
    """Copy the base version's rows and row tags chunk by chunk, less the removed ones;
    returns every identifier the base version held."""
    import numpy as np

    from node.datasets.tag_tables import iter_row_tags
    present: set[str] = set()
    tag_iters = {p: iter_row_tags(conn, base.id, p, e) for p, (e, _) in keys.items()}
    for _, chunk in iter_chunks(conn, base.id, ctx.kek):
        keep = np.array([r[0] not in gone for r in chunk], dtype=bool)
        present.update(r[0] for r in chunk)
        kept = [r for r, k in zip(chunk, keep) if k]
        for p, it in tag_iters.items():
            tags, lab = next(it)  # one chunk of row tags per chunk of rows, kept or not
            if kept:
                out.tagger.keep(p, out.seq, tags, lab, keep)
        if kept:
            out.write(kept, tag=False)
        progress("copying", out.rows, base.row_count)
    return present
