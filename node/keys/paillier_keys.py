"""Paillier keys of threshold checks, sealed under the node KEK.

One key per dataset x partner x key epoch x income column. The factors p, q are sealed
with the purpose ``paillier-key/v1/<dataset>/<partner>/<epoch>/<column>``, so a blob
copied to another row does not open; they are unsealed into a :class:`PaillierSecret`,
which does not print, pickle or copy (node/datasets/threshold_tables.py keeps it in the
node context's caches).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

import phe
from sqlalchemy import Connection, insert, select

from protocols import threshold as th

from node.core.clock import SYSTEM_CLOCK
from node.storage.schema import threshold_keys

def key_purpose(dataset: str, partner: str, epoch: int, column: str) -> str:
    return f"paillier-key/v1/{dataset}/{partner}/{epoch}/{column}"


class PaillierSecret:
    """A Paillier private key that refuses to be printed, pickled or copied."""

    __slots__ = ("_key",)

    def __init__(self, key: phe.PaillierPrivateKey) -> None:
        self._key = key

    def expose(self) -> phe.PaillierPrivateKey:
        """The key itself; every caller is a place it leaves this wrapper."""
        return self._key

    def __repr__(self) -> str:
        return "<PaillierSecret: redacted>"

    __str__ = __repr__

    def _refuse(self, *_: object) -> NoReturn:
        raise TypeError("PaillierSecret holds a private key and cannot be pickled or copied")

    __reduce__ = __reduce_ex__ = __getstate__ = __copy__ = __deepcopy__ = _refuse


def _pack_factors(p: int, q: int) -> bytes:
    out = b""
    for x in (p, q):
        raw = int(x).to_bytes((int(x).bit_length() + 7) // 8, "big")
        out += struct.pack(">H", len(raw)) + raw
    return out


def _unpack_factors(data: bytes) -> tuple[int, int]:
    (a,) = struct.unpack_from(">H", data, 0)
    p = int.from_bytes(data[2:2 + a], "big")
    (b,) = struct.unpack_from(">H", data, 2 + a)
    q = int.from_bytes(data[4 + a:4 + a + b], "big")
    if 4 + a + b != len(data):
        raise ValueError("malformed sealed Paillier factors")
    return p, q


@dataclass(frozen=True)
class KeyRow:
    id: int
    dataset: str
    partner: str
    epoch: int
    column: str
    n: int
    key_id: bytes
    sealed: bytes


def _key_row(row) -> KeyRow:
    return KeyRow(row.id, row.dataset, row.partner, row.epoch, row.income_column,
                  int.from_bytes(row.modulus, "big"), bytes(row.key_id), bytes(row.sealed_key))


def find_key(conn: Connection, dataset: str, partner: str, epoch: int, column: str) -> KeyRow | None:
    c = threshold_keys.c
    row = conn.execute(select(threshold_keys).where(
        c.dataset == dataset, c.partner == partner, c.epoch == epoch,
        c.income_column == column)).first()
    return _key_row(row) if row else None


def ensure_key(conn: Connection, kek, dataset: str, partner: str, epoch: int, column: str, *,
               now: datetime | None = None) -> KeyRow:
    """The key of (dataset, partner, epoch, column), drawn and sealed (created `now`) if there is none."""
    found = find_key(conn, dataset, partner, epoch, column)
    if found is not None:
        return found
    public, private = phe.generate_paillier_keypair(n_length=th.MIN_MODULUS_BITS)
    modulus = public.n.to_bytes((public.n.bit_length() + 7) // 8, "big")
    sealed = kek.seal(_pack_factors(private.p, private.q),
                      purpose=key_purpose(dataset, partner, epoch, column))
    conn.execute(insert(threshold_keys).values(
        dataset=dataset, partner=partner, epoch=epoch, income_column=column, modulus=modulus,
        key_id=th.key_id(public.n), sealed_key=sealed, created_at=now or SYSTEM_CLOCK.now()))
    return find_key(conn, dataset, partner, epoch, column)


def unseal_key(kek, key: KeyRow) -> PaillierSecret:
    """The private key of ``key``, unsealed and checked against the stored modulus."""
    p, q = _unpack_factors(kek.unseal(key.sealed, purpose=key_purpose(
        key.dataset, key.partner, key.epoch, key.column)))
    if p * q != key.n:
        raise ValueError("sealed Paillier factors do not match the stored modulus")
    return PaillierSecret(phe.PaillierPrivateKey(phe.PaillierPublicKey(key.n), p, q))
