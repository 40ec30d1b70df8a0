"""The asker's copy of a partner's threshold table, synced once per epoch and cached.

A table is the partner's Paillier public key plus, per usable row in tag order, a tag
F_k(y)[:t] and Enc(income) sealed under F_k(y). The copy is kept under
``<data_dir>/statistics/`` and checked against its digest every time it is read; a
partner that moved to a new version or epoch announces another digest, and the copy is
replaced (a restart of the partner changes nothing: its tables are stored). Nothing in
it is readable without the partner answering an OPRF query for the identifier concerned.
"""
from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from protocols import threshold as th

from .errors import PartnerError, rpc_error
from .rpc.shuqiao.v1 import statistics_pb2 as spb
from .stats_wire import INCOME_LABEL_LENGTH, RoundError, expect

_MAGIC = b"shuqiao-threshold-table/1\n"


@dataclass
class HeldTable:
    info: spb.ThresholdTableInfo
    n: int
    tags: np.ndarray        # S<tag_length>, sorted
    order: np.ndarray       # sorted position -> table row
    labels: bytes           # table order

    def label(self, row: int) -> bytes:
        w = self.info.label_length
        return self.labels[row * w:(row + 1) * w]


def _digest(info: spb.ThresholdTableInfo, tags: bytes, labels: bytes) -> bytes:
    return hashlib.sha256(info.key_id + tags + labels).digest()


def _held(info: spb.ThresholdTableInfo, tags: bytes, labels: bytes) -> HeldTable:
    arr = np.frombuffer(tags, dtype=f"S{info.tag_length}")
    order = np.argsort(arr, kind="stable")
    return HeldTable(info, int.from_bytes(info.modulus, "big"), arr[order], order, labels)


def _path(ctx, partner: str, dataset: str) -> Path:
    return ctx.config.data_dir / "statistics" / f"threshold-{partner}-{dataset}.bin"


def _load(path: Path) -> tuple[spb.ThresholdTableInfo, bytes, bytes] | None:
    try:
        data = path.read_bytes()
        if not data.startswith(_MAGIC):
            return None
        off = len(_MAGIC)
        (size,) = struct.unpack_from(">I", data, off)
        info = spb.ThresholdTableInfo.FromString(data[off + 4:off + 4 + size])
        off += 4 + size
        split = off + info.rows * info.tag_length
        tags, labels = data[off:split], data[split:]
    except Exception:  # unreadable or damaged (OSError, struct or protobuf errors): sync again
        return None
    if len(labels) != info.rows * info.label_length or _digest(info, tags, labels) != info.digest:
        return None
    return info, tags, labels


def _store(path: Path, info: spb.ThresholdTableInfo, tags: bytes, labels: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    blob = info.SerializeToString()
    with open(tmp, "wb") as f:
        f.write(_MAGIC + struct.pack(">I", len(blob)) + blob)
        f.write(tags)
        f.write(labels)
    os.replace(tmp, path)


def _check_info(partner: str, info: spb.ThresholdTableInfo) -> None:
    n = int.from_bytes(info.modulus, "big")
    try:
        th.validate_public_key(n)
    except th.InvalidPublicKey as exc:
        raise PartnerError(partner, f"sent a threshold key that is refused: {exc}") from None
    if (info.key_id != th.key_id(n) or not 12 <= info.tag_length <= 64 or not info.rows
            or info.label_length != INCOME_LABEL_LENGTH or len(info.digest) != 32):
        raise PartnerError(partner, "sent a malformed threshold table header")


def sync(ctx, stub, partner: str, dataset: str, deadline: float, progress) -> HeldTable:
    """The partner's current table for this node, from the cache or the partner.

    Raises:
        PartnerError: refusal, an unacceptable key, or a table that fails its digest.
    """
    path = _path(ctx, partner, dataset)
    held = _load(path)
    request = spb.ThresholdTableRequest(dataset=dataset, held_digest=held[0].digest if held else b"")
    try:
        responses = iter(stub.ThresholdTable(request, timeout=deadline))
        info = expect(responses, "info")
        _check_info(partner, info)
        if held and held[0].digest == info.digest:
            return _held(info, held[1], held[2])
        tags, labels, rows = [], [], 0
        for chunk in responses:
            if chunk.WhichOneof("body") != "rows":
                raise RoundError("expected table rows")
            tags.append(chunk.rows.tags)
            labels.append(chunk.rows.labels)
            rows += len(chunk.rows.tags) // info.tag_length
            progress("table", rows, info.rows)
    except grpc.RpcError as exc:
        raise rpc_error(partner, exc) from None
    except RoundError as exc:
        raise PartnerError(partner, f"sent a malformed threshold table: {exc}") from None
    tags_b, labels_b = b"".join(tags), b"".join(labels)
    if (len(tags_b) != info.rows * info.tag_length or len(labels_b) != info.rows * info.label_length
            or _digest(info, tags_b, labels_b) != info.digest):
        raise PartnerError(partner, "sent a threshold table that does not match its digest")
    _store(path, info, tags_b, labels_b)
    return _held(info, tags_b, labels_b)
