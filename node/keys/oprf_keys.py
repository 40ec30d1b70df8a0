"""Per dataset x partner x epoch OPRF keys, sealed under the node KEK.

Each partner gets its own key, so tag tables given to two partners cannot be joined,
and a key's epoch can be rotated without touching other partners. A key is unsealed
only where it is used (a worker evaluating a batch); the database holds only the
sealed blob, bound to its dataset, partner and epoch by the sealing's associated data.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import Connection, func, insert, select

from protocols import oprf

from node.core.clock import SYSTEM_CLOCK
from node.keys.secrets import KeyEncryptionKey
from node.storage.schema import oprf_keys


def key_purpose(dataset: str, partner: str, epoch: int) -> str:
    """The associated data a key blob is sealed under."""
    return f"oprf-key/v1/{dataset}/{partner}/{epoch}"


def current_epoch(conn: Connection, dataset: str, partner: str) -> int | None:
    return conn.execute(
        select(func.max(oprf_keys.c.epoch)).where(
            oprf_keys.c.dataset == dataset, oprf_keys.c.partner == partner)).scalar()


def sealed_key(conn: Connection, dataset: str, partner: str, epoch: int) -> bytes | None:
    return conn.execute(
        select(oprf_keys.c.sealed_key).where(
            oprf_keys.c.dataset == dataset, oprf_keys.c.partner == partner,
            oprf_keys.c.epoch == epoch)).scalar()


def ensure_key(conn: Connection, kek: KeyEncryptionKey, dataset: str, partner: str, *,
               now: datetime | None = None) -> tuple[int, bytes]:
    """The current (epoch, sealed key) for dataset x partner, creating epoch 1 if none."""
    epoch = current_epoch(conn, dataset, partner)
    if epoch is not None:
        return epoch, sealed_key(conn, dataset, partner, epoch)
    return new_epoch(conn, kek, dataset, partner, now=now)


def new_epoch(conn: Connection, kek: KeyEncryptionKey, dataset: str, partner: str, *,
              now: datetime | None = None) -> tuple[int, bytes]:
    """Create the next epoch's key for dataset x partner, started `now` (the caller's clock;
    the system clock if not given); returns (epoch, sealed key)."""
    epoch = (current_epoch(conn, dataset, partner) or 0) + 1
    key = oprf.OprfSecretKey.generate()
    blob = kek.seal(key.export_secret_bytes(), purpose=key_purpose(dataset, partner, epoch))
    conn.execute(insert(oprf_keys).values(
        dataset=dataset, partner=partner, epoch=epoch, sealed_key=blob,
        public_key=key.public_key(), created_at=now or SYSTEM_CLOCK.now()))
    return epoch, blob


def epoch_started(conn: Connection, dataset: str, partner: str, epoch: int) -> datetime | None:
    value = conn.execute(select(oprf_keys.c.created_at).where(
        oprf_keys.c.dataset == dataset, oprf_keys.c.partner == partner,
        oprf_keys.c.epoch == epoch)).scalar()
    if value is not None and value.tzinfo is None:  # SQLite drops the zone; we store UTC
        value = value.replace(tzinfo=timezone.utc)
    return value


def answerable_epochs(conn: Connection, dataset: str, partner: str, grace: timedelta,
                      now: datetime) -> set[int]:
    """The current epoch, plus the previous one while the grace period after rotation lasts
    (judged at `now`, the context's time)."""
    current = current_epoch(conn, dataset, partner)
    if current is None:
        return set()
    epochs = {current}
    started = epoch_started(conn, dataset, partner, current)
    if current > 1 and started is not None and now < started + grace:
        epochs.add(current - 1)
    return epochs


def public_key(conn: Connection, dataset: str, partner: str, epoch: int) -> bytes | None:
    return conn.execute(
        select(oprf_keys.c.public_key).where(
            oprf_keys.c.dataset == dataset, oprf_keys.c.partner == partner,
            oprf_keys.c.epoch == epoch)).scalar()
