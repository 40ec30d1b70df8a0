"""The asker's copy of a partner's threshold table, synced once per epoch and cached.

A table is the partner's Paillier public key plus, per usable row in tag order, a tag
F_k(y)[:t] and Enc(income) sealed under F_k(y). The copy is kept under
``<data_dir>/statistics/`` and checked against its digest every time it is read; a
partner that moved to a new version or epoch announces another digest, and the copy is
replaced: by the difference (added rows, removed tags) when the partner still has the
held version under the same key, as after a refresh, else whole. The result must match
the announced digest either way. A restart of the partner changes nothing: its tables
are stored. Nothing in
it is readable without the partner answering an OPRF query for the identifier concerned.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protocols import threshold as th
from protocols.threshold_table import (
    InvalidTable, PublishedTable, check_header, table_digest,
)

from node.asker.streams import download, partner_call
from node.core.errors import PartnerError
from node.storage.schema import open_private, private_dir
from node.rpc.shuqiao.v1 import statistics_pb2 as spb
from node.transport.chunks import RoundError, expect
from node.datasets.tag_tables import Arrays, apply_delta

_MAGIC = b"shuqiao-threshold-table/1\n"


@dataclass
class HeldTable:
    info: spb.ThresholdTableInfo
    table: PublishedTable   # labels mapped from the cached file (not read into memory)


def _held(info: spb.ThresholdTableInfo, tags: bytes, labels: memoryview) -> HeldTable:
    return HeldTable(info, PublishedTable.from_rows(
        int.from_bytes(info.modulus, "big"), info.key_id, info.epoch, info.tag_length,
        info.label_length, tags, labels))


def _path(ctx, partner: str, dataset: str) -> Path:
    return ctx.config.data_dir / "statistics" / f"threshold-{partner}-{dataset}.bin"


def _load(path: Path) -> tuple[spb.ThresholdTableInfo, bytes, memoryview] | None:
    """(header, tags, labels) of a cached copy whose digest checks, else None.

    The file is memory-mapped: the labels (about a gigabyte at a million rows) are hashed
    and later opened in place, never copied into memory.
    """
    try:
        with open(path, "rb") as f:
            view = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        if bytes(view[:len(_MAGIC)]) != _MAGIC:
            return None
        off = len(_MAGIC)
        (size,) = struct.unpack_from(">I", view, off)
        info = spb.ThresholdTableInfo.FromString(bytes(view[off + 4:off + 4 + size]))
        off += 4 + size
        split = off + info.rows * info.tag_length
        if split + info.rows * info.label_length != len(view):
            return None
        digest = table_digest(info.key_id, view[off:split], view[split:])
    except Exception:  # missing, empty, unreadable or damaged (OSError, struct, protobuf): sync again
        return None
    if digest != info.digest:
        return None
    return info, bytes(view[off:split]), view[split:]


def _head(info: spb.ThresholdTableInfo) -> bytes:
    """A cached copy's header: magic, then the partner's table header."""
    blob = info.SerializeToString()
    return _MAGIC + struct.pack(">I", len(blob)) + blob


def _receive(path: Path, info: spb.ThresholdTableInfo, responses, progress) -> None:
    """Write the streamed rows into ``path`` (tags, then labels, at their offsets)."""
    private_dir(path.parent)
    head = _head(info)
    tags_at, labels_at = len(head), len(head) + info.rows * info.tag_length
    rows = 0
    with open_private(path, "wb") as f:
        f.write(head)
        f.truncate(labels_at + info.rows * info.label_length)
        for chunk in responses:
            if chunk.WhichOneof("body") != "rows":
                raise RoundError("expected table rows")
            t, lab = chunk.rows.tags, chunk.rows.labels
            count = len(t) // info.tag_length
            if (len(t) % info.tag_length or len(lab) != count * info.label_length
                    or rows + count > info.rows):
                raise RoundError("table rows do not fit the announced header")
            f.seek(tags_at + rows * info.tag_length)
            f.write(t)
            f.seek(labels_at + rows * info.label_length)
            f.write(lab)
            rows += count
            progress("table", rows, info.rows)
        if rows != info.rows:
            raise RoundError("the table ended before every row was sent")
        f.flush()
        os.fsync(f.fileno())


def _check_info(partner: str, info: spb.ThresholdTableInfo) -> None:
    try:
        check_header(int.from_bytes(info.modulus, "big"), info.key_id, rows=info.rows,
                     tag_length=info.tag_length, label_length=info.label_length,
                     digest=info.digest)
    except th.InvalidPublicKey as exc:
        raise PartnerError(partner, f"sent a threshold key that is refused: {exc}") from None
    except InvalidTable:
        raise PartnerError(partner, "sent a malformed threshold table header") from None


def _patch(path: Path, info: spb.ThresholdTableInfo, held, responses, progress) -> None:
    """Apply a streamed difference (added rows, then removed tags) to the held copy and
    write the result to ``path``; the caller checks it against the announced digest."""
    t, w = info.tag_length, info.label_length
    if (held[0].tag_length, held[0].label_length) != (t, w):
        raise RoundError("a difference with another row layout")
    tags, labels, removed = [], [], []
    for chunk in responses:
        body = chunk.WhichOneof("body")
        if body == "rows" and not removed:
            if len(chunk.rows.tags) % t or len(chunk.rows.labels) != len(chunk.rows.tags) // t * w:
                raise RoundError("table rows do not fit the announced header")
            tags.append(chunk.rows.tags)
            labels.append(chunk.rows.labels)
        elif body == "removed" and len(chunk.removed) % t == 0:
            removed.append(chunk.removed)
        else:
            raise RoundError("expected added rows, then removed tags")
        if sum(map(len, tags)) > info.rows * t or sum(map(len, removed)) > held[0].rows * t:
            raise RoundError("a difference larger than the tables")
    base = Arrays.from_bytes(held[1], t, held[2], w)
    added = Arrays.from_bytes(b"".join(tags), t, b"".join(labels), w)
    table = apply_delta(base, added, np.frombuffer(b"".join(removed), dtype=f"S{t}"))
    if len(table.tags) != info.rows:
        raise RoundError("the difference does not lead to the announced number of rows")
    progress("table (difference)", len(added.tags), len(added.tags))
    stored = spb.ThresholdTableInfo()
    stored.CopyFrom(info)
    stored.ClearField("delta_from")
    with open_private(path, "wb") as f:
        f.write(_head(stored))
        f.write(table.tag_bytes())
        f.write(table.label_bytes())
        f.flush()
        os.fsync(f.fileno())


def sync(ctx, stub, partner: str, dataset: str, deadline: float, progress) -> HeldTable:
    """The partner's current table for this node, from the cache or the partner.

    Raises:
        PartnerError: refusal, an unacceptable key, or a table that fails its digest.
    """
    path = _path(ctx, partner, dataset)
    held = _load(path)
    request = spb.ThresholdTableRequest(dataset=dataset, held_digest=held[0].digest if held else b"")
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with partner_call(partner, (RoundError,), lambda exc: f"sent a malformed threshold table: {exc}"):
            responses = download(partner, stub.ThresholdTable, request, deadline)
            info = expect(responses, "info")
            _check_info(partner, info)
            if held and held[0].digest == info.digest:
                return _held(*held)
            if info.delta_from:
                if not held or info.delta_from != held[0].digest:
                    raise RoundError("a difference from a table this node does not hold")
                _patch(tmp, info, held, responses, progress)
            else:
                _receive(tmp, info, responses, progress)
    except PartnerError:
        tmp.unlink(missing_ok=True)  # whatever was written of the copy
        raise
    fresh = _load(tmp)
    if fresh is None or fresh[0].digest != info.digest:
        tmp.unlink(missing_ok=True)
        raise PartnerError(partner, "sent a threshold table that does not match its digest")
    os.replace(tmp, path)
    return _held(*fresh)
