"""Key epochs: rotating a dataset x partner key and rebuilding its tag table.

Rotation makes cached tag tables of the old epoch useless after the grace period: a
partner that kept a copy cannot keep matching against it. The new epoch's table is
built from the stored rows of the current version, in worker processes, and committed
together with the new key, so a partner never sees an epoch without its table; the
same holds for threshold tables, which get a new Paillier key with the epoch. Once an
epoch stops answering (right away without a grace period, else when it ends; checked
by `shuqiao serve`), its tables are deleted and the deletion ledgered.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from node.core.errors import InvalidInput
from node.runtime import admin_log
from node.datasets import threshold_tables as threshold_store
from node.runtime.context import NodeContext
from node.core.progress import Progress, no_progress
from node.datasets.stored_rows import iter_chunks
from node.datasets.versions import current_version
from node.keys.workers import current_epoch, epoch_started, new_epoch
from node.datasets.tag_tables import RowTagger

@dataclass(frozen=True)
class Rotation:
    dataset: str
    partner: str
    epoch: int
    rows: int


class RotationError(InvalidInput):
    """A rotation or pruning asked of a dataset or partner the config does not declare."""


def retag_version(ctx: NodeContext, conn: Connection, declared, version, keys,
                  progress: Progress = no_progress) -> list[tuple[str, int]]:
    """Row tags, sorted tables and threshold tables of a stored version under `keys`
    (partner -> (epoch, key))."""
    tagger = RowTagger(ctx, conn, ctx.config.node.id, declared, version.id, version.id_type, keys)
    for seq, rows in iter_chunks(conn, version.id, ctx.kek):
        tagger.add_chunk(seq, rows)
    done = tagger.finish()
    for target in threshold_store.targets(declared, version.id, version.version, version.id_type,
                                          version.attributes, {p: e for p, (e, _) in keys.items()}):
        threshold_store.prepare_in(ctx, conn, target, progress, tagger.outputs.get(target.partner))
    return done


def complete_version(ctx: NodeContext, conn: Connection, declared, version,
                     progress: Progress = no_progress) -> list[tuple[str, int]]:
    """Build what ``version`` lacks to be served: the tables of each granted partner's
    current epoch that it has no tag table for (a version that becomes current again when
    a newer one is retired was never tagged under epochs started after it), and its
    threshold tables. Returns the (partner, epoch) pairs tagged."""
    from sqlalchemy import delete, select

    from node.keys.workers import sealed_key
    from node.storage.schema import row_tags, tag_tables
    keys = {}
    for g in declared.grants:
        epoch = current_epoch(conn, declared.name, g.partner)
        if epoch is None:
            continue
        held = conn.execute(select(tag_tables.c.id).where(
            tag_tables.c.dataset_id == version.id, tag_tables.c.partner == g.partner,
            tag_tables.c.epoch == epoch, tag_tables.c.predicate == "")).first()
        if held is None:
            conn.execute(delete(row_tags).where(  # a partial set, if any, is rebuilt whole
                row_tags.c.dataset_id == version.id, row_tags.c.partner == g.partner,
                row_tags.c.epoch == epoch))
            keys[g.partner] = (epoch, sealed_key(conn, declared.name, g.partner, epoch))
    done = retag_version(ctx, conn, declared, version, keys, progress) if keys else []
    epochs = {g.partner: e for g in declared.grants
              if (e := current_epoch(conn, declared.name, g.partner)) is not None}
    for target in threshold_store.targets(declared, version.id, version.version, version.id_type,
                                          version.attributes, epochs):
        threshold_store.prepare_in(ctx, conn, target, progress)
    return done


def rotate(ctx: NodeContext, dataset: str, partner: str | None = None,
           progress: Progress = no_progress) -> list[Rotation]:
    """Start a new key epoch for `dataset` (one partner, or every granted partner)."""
    declared = ctx.config.dataset(dataset)
    if declared is None:
        raise RotationError(f"dataset {dataset!r} is not declared in the node config")
    partners = [g.partner for g in declared.grants]
    if partner is not None:
        if partner not in partners:
            raise RotationError(f"partner {partner!r} has no grant on dataset {dataset!r}")
        partners = [partner]
    done = []
    ctx.ledger  # loaded before the write transactions
    for p in partners:
        with ctx.engine.begin() as conn:
            version = current_version(conn, dataset)
            epoch, sealed = new_epoch(conn, ctx.kek, dataset, p, now=ctx.clock.now())
            if version is not None:
                retag_version(ctx, conn, declared, version, {p: (epoch, sealed)}, progress)
            done.append(Rotation(dataset, p, epoch, version.row_count if version else 0))
            admin_log.record(ctx, conn, "key_rotated", dataset, partner=p, epoch=epoch)
    prune_expired(ctx, dataset)
    return done


def prune_expired(ctx: NodeContext, dataset: str | None = None,
                  now: datetime | None = None) -> list[tuple[str, str, int]]:
    """Delete the tables of key epochs that no longer answer (older than the current one
    and past the grace period): row tags, tag tables and threshold tables, of every
    version. The keys stay. Returns (dataset, partner, epoch) pruned, each ledgered."""
    from sqlalchemy import delete, select

    from node.keys.workers import answerable_epochs
    from node.storage.schema import (datasets,
        delete_tables,
        row_tags,
        tag_chunks,
        tag_tables,
        threshold_chunks,
        threshold_keys,
        threshold_tables)
    pruned = []
    now = now or ctx.clock.now()
    ctx.ledger  # loaded before the write transactions
    for declared in ctx.config.datasets:
        if dataset is not None and declared.name != dataset:
            continue
        grace = timedelta(days=declared.grace_days)
        for grant in declared.grants:
            with ctx.engine.begin() as conn:
                live = answerable_epochs(conn, declared.name, grant.partner, grace, now)
                ids = select(datasets.c.id).where(datasets.c.name == declared.name)
                held = set(conn.execute(select(row_tags.c.epoch).distinct().where(
                    row_tags.c.dataset_id.in_(ids), row_tags.c.partner == grant.partner)).scalars())
                held |= set(conn.execute(select(threshold_keys.c.epoch).distinct().join(
                    threshold_tables, threshold_tables.c.key_ref == threshold_keys.c.id).where(
                    threshold_keys.c.dataset == declared.name,
                    threshold_keys.c.partner == grant.partner)).scalars())
                for epoch in sorted(e for e in held if live and e < min(live)):
                    delete_tables(conn, tag_tables, tag_chunks, tag_tables.c.dataset_id.in_(ids),
                                  tag_tables.c.partner == grant.partner, tag_tables.c.epoch == epoch)
                    conn.execute(delete(row_tags).where(
                        row_tags.c.dataset_id.in_(ids), row_tags.c.partner == grant.partner,
                        row_tags.c.epoch == epoch))
                    keys = select(threshold_keys.c.id).where(
                        threshold_keys.c.dataset == declared.name,
                        threshold_keys.c.partner == grant.partner, threshold_keys.c.epoch == epoch)
                    delete_tables(conn, threshold_tables, threshold_chunks,
                                  threshold_tables.c.key_ref.in_(keys))
                    admin_log.record(ctx, conn, "epoch_pruned", declared.name,
                                     partner=grant.partner, epoch=epoch)
                    pruned.append((declared.name, grant.partner, epoch))
    return pruned


def due(ctx: NodeContext, now: datetime | None = None) -> list[tuple[str, str]]:
    """(dataset, partner) pairs whose current epoch is older than the dataset's epoch length."""
    now = now or ctx.clock.now()
    out = []
    with ctx.engine.connect() as conn:
        for d in ctx.config.datasets:
            for g in d.grants:
                epoch = current_epoch(conn, d.name, g.partner)
                started = epoch and epoch_started(conn, d.name, g.partner, epoch)
                if started and now - started >= timedelta(days=d.epoch_days):
                    out.append((d.name, g.partner))
    return out


def prepare_current(ctx, dataset: str, progress: Progress = no_progress) -> list[tuple[threshold_store.Target, threshold_store.TableRow]]:
    """Prepare whatever the current version of ``dataset`` still lacks, for every
    threshold grant's current epoch (after a grant gained the kind, say)."""
    declared = ctx.config.dataset(dataset)
    if declared is None:
        raise ValueError(f"dataset {dataset!r} is not declared in the node config")
    ctx.ledger  # loaded before the write transaction
    with ctx.engine.begin() as conn:
        version = current_version(conn, dataset)
        if version is None:
            raise ValueError(f"dataset {dataset!r} has no active version (none registered, "
                             "or every version retired)")
        # Tag tables first: a version served again after the newest was retired may have
        # none under the current epochs, and its threshold tables are sealed under them.
        complete_version(ctx, conn, declared, version, progress)
        epochs = {g.partner: current_epoch(conn, dataset, g.partner) for g in declared.grants}
    epochs = {p: e for p, e in epochs.items() if e is not None}
    return [(t, threshold_store.prepare(ctx, t, progress))
            for t in threshold_store.targets(declared, version.id, version.version, version.id_type,
                             version.attributes, epochs)]
