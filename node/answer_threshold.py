"""The agency's side of threshold checks: the per-epoch table, blind evaluation, signs.

The Paillier private key of a (dataset version, partner, epoch) lives only in this
process's memory, inside a :class:`ThresholdTable` that refuses to be printed or
pickled; its factors travel only to the node's own worker processes (prepare_incomes,
sign_task). A restart draws a new key and table; askers see a new digest and sync
again. See node/answer_statistics.py for what each side learns.
"""
from __future__ import annotations

import hashlib
import threading

import grpc
import numpy as np
import phe

from protocols import oprf
from protocols import psi_shuffle as ps
from protocols import threshold as th

from .answer_tables import Refused
from .auth import peer_node_id
from .datasets import current_version
from .keys import current_epoch, key_purpose, sealed_key
from .querylog import QueryRecord
from .rpc.shuqiao.v1 import statistics_pb2 as spb
from .stats_rows import income_rows, version_columns
from .stats_wire import (INCOME_LABEL_LENGTH, INCOME_LABEL_PAD, chunk_size, chunks, collect,
                         income_label, income_label_context)

ROWS_PER_TASK = 8192

_lock = threading.Lock()
_tables: dict[tuple[str, str], "ThresholdTable"] = {}   # (dataset, partner) -> latest table


class ThresholdTable:
    """One partner's prepared table for one dataset version and epoch (agency-private)."""

    __slots__ = ("_private_key", "n", "key_id", "version_id", "version", "epoch", "column",
                 "rows", "unusable", "tag_length", "label_length", "tags", "labels", "digest")

    def __init__(self, private_key: phe.PaillierPrivateKey, **fields) -> None:
        self._private_key = private_key
        for name, value in fields.items():
            setattr(self, name, value)

    def agency(self, batch: int, mapper) -> th.AgencyThreshold:
        """The protocol object answering one query of exactly ``batch`` entries."""
        return th.AgencyThreshold(self._private_key, min_batch=batch, max_batch=batch,
                                  mapper=mapper)

    def __repr__(self) -> str:
        return f"<ThresholdTable epoch={self.epoch} rows={self.rows} private key hidden>"

    def _refuse(self, *_: object) -> None:
        raise TypeError("ThresholdTable holds a Paillier private key; it is not copyable")

    __reduce__ = __reduce_ex__ = __getstate__ = __copy__ = __deepcopy__ = _refuse


def threshold_table(ctx, declared, grant, version, peer: str, epoch: int) -> ThresholdTable:
    """The table for (version, peer, epoch), prepared on first use and kept in memory."""
    with _lock:  # one preparation at a time; a second caller waits for the first
        table = _tables.get((declared.name, peer))
        if table is None or (table.version_id, table.epoch, table.column) != (
                version.id, epoch, grant.threshold_column):
            table = _tables[(declared.name, peer)] = _prepare(ctx, declared, grant, version,
                                                             peer, epoch)
        return table


def _prepare(ctx, declared, grant, version, peer: str, epoch: int) -> ThresholdTable:
    cols = version_columns(ctx, version)
    positions, incomes, unusable = income_rows(cols, grant.threshold_column)
    if not len(positions):
        raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                      f"no row of {declared.name!r} has a usable {grant.threshold_column!r}")
    public_key, private_key = phe.generate_paillier_keypair(n_length=th.MIN_MODULUS_BITS)
    n, key_id = public_key.n, th.key_id(public_key.n)
    width = 2 * ((n.bit_length() + 7) // 8)
    packed = th.prepare_incomes(private_key, incomes, mapper=ctx.pool.map)
    labels_in = [income_label(packed[i * width:(i + 1) * width]) for i in range(len(incomes))]
    context = income_label_context(owner=ctx.config.node.id, partner=peer, dataset=declared.name,
                                   version=version.version, epoch=epoch, key_id=key_id)
    with ctx.engine.connect() as conn:
        sealed = sealed_key(conn, declared.name, peer, epoch)
    purpose = key_purpose(declared.name, peer, epoch)
    ids = [cols.ids[i] for i in positions]
    futures = [ctx.pool.submit_rows(sealed, purpose, ids[a:a + ROWS_PER_TASK], declared.tag_length,
                                    declared.mode_number, labels_in[a:a + ROWS_PER_TASK], context,
                                    INCOME_LABEL_PAD)
               for a in range(0, len(ids), ROWS_PER_TASK)]
    parts = [f.result() for f in futures]
    label_length = INCOME_LABEL_LENGTH
    order = ps.random_permutation(len(ids))  # the table's order says nothing about the rows'
    tags = np.frombuffer(b"".join(t for t, _ in parts), np.uint8).reshape(
        -1, declared.tag_length)[order].tobytes()
    sealed_labels = np.frombuffer(b"".join(lab for _, lab in parts), np.uint8).reshape(
        -1, label_length)[order].tobytes()
    return ThresholdTable(
        private_key, n=n, key_id=key_id, version_id=version.id, version=version.version,
        epoch=epoch, column=grant.threshold_column, rows=len(ids), unusable=unusable,
        tag_length=declared.tag_length, label_length=label_length, tags=tags,
        labels=sealed_labels, digest=table_digest(key_id, tags, sealed_labels))


def table_digest(key_id: bytes, tags: bytes, labels: bytes) -> bytes:
    return hashlib.sha256(key_id + tags + labels).digest()


class ThresholdRpc:
    def _threshold_setup(self, dataset: str, peer: str, version=None, epoch: int | None = None):
        """Grant checks shared by the table sync and the query; returns the table."""
        declared, grant = self._grant(dataset, peer)
        if "threshold" not in {k.value for k in grant.kinds}:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                          f"query kind 'threshold' is not granted for dataset {dataset!r}")
        if not grant.threshold_column:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"the grant on {dataset!r} names no threshold_column")
        with self.ctx.engine.connect() as conn:
            version = version or current_version(conn, dataset)
            epoch = epoch if epoch is not None else current_epoch(conn, dataset, peer)
        if version is None or epoch is None:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"dataset {dataset!r} has no registered version yet")
        self._check_column(grant.threshold_column, [grant.threshold_column], version, dataset,
                           "the threshold column")
        return threshold_table(self.ctx, declared, grant, version, peer, epoch), declared

    def ThresholdTable(self, request, context):
        peer = peer_node_id(context)
        try:
            table, _ = self._threshold_setup(request.dataset, peer)
        except Refused as exc:
            context.abort(exc.code, exc.reason)
        yield spb.ThresholdTableChunk(info=spb.ThresholdTableInfo(
            dataset=request.dataset, version=table.version, epoch=table.epoch,
            modulus=table.n.to_bytes((table.n.bit_length() + 7) // 8, "big"), key_id=table.key_id,
            rows=table.rows, unusable_rows=table.unusable, digest=table.digest,
            tag_length=table.tag_length, label_length=table.label_length))
        if request.held_digest == table.digest:
            return
        step = max(1, chunk_size(self.cfg.grpc.max_message_bytes)
                   // (table.tag_length + table.label_length))
        for a in range(0, table.rows, step):
            b = min(table.rows, a + step)
            yield spb.ThresholdTableChunk(rows=spb.ThresholdTableRows(
                tags=table.tags[a * table.tag_length:b * table.tag_length],
                labels=table.labels[a * table.label_length:b * table.label_length]))

    def Threshold(self, request_iterator, context):
        return self._stream(request_iterator, context, "threshold", self._threshold)

    def _threshold(self, requests, peer: str, record: QueryRecord):
        h, declared, _, version = self._admit(next(requests, None), peer, record, "threshold",
                                              spb.STATISTICS_KIND_THRESHOLD)
        table, _ = self._threshold_setup(h.dataset, peer, version, h.epoch)
        if h.key_id != table.key_id or h.table_digest != table.digest:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          "the threshold table changed (new version, epoch or key); sync it again")
        m, size = h.total_elements, chunk_size(self.cfg.grpc.max_message_bytes)
        max_batch = min(self.cfg.grpc.max_batch_elements, oprf.MAX_VOPRF_BATCH)
        self._admitted(record)
        yield spb.ThresholdResponse(accepted=spb.StatisticsAccepted(
            query_id=record.query_id, max_chunk_bytes=size, rows=table.rows,
            unusable_rows=table.unusable, max_batch_elements=max_batch))
        with self.ctx.engine.connect() as conn:
            sealed = sealed_key(conn, h.dataset, peer, h.epoch)
        purpose = key_purpose(h.dataset, peer, h.epoch)
        verifiable = declared.mode_number == oprf.MODE_VOPRF
        done, seq = 0, 0
        for req in requests:
            b = req.batch if req.WhichOneof("body") == "batch" else None
            count, rest = divmod(len(b.elements), oprf.ELEMENT_LEN) if b else (0, 1)
            if b is None or b.seq != seq or rest or not 1 <= count <= max_batch or done + count > m:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              f"expected batch {seq}: a whole number of 1..{max_batch} blinded "
                              "elements within the announced total")
            try:
                evaluated = self.ctx.pool.blind_evaluate(sealed, purpose, b.elements)
            except oprf.InvalidElement:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              f"batch {seq} holds an invalid group element") from None
            proof = self.ctx.pool.prove(sealed, purpose, b.elements, evaluated) if verifiable else b""
            yield spb.ThresholdResponse(evaluated=spb.ThresholdEvaluated(
                seq=seq, elements=evaluated, proof=proof))
            done, seq = done + count, seq + 1
            if done == m:
                break
        else:
            raise Refused(grpc.StatusCode.CANCELLED, "the stream ended before every element was sent")
        width = 2 * ((table.n.bit_length() + 7) // 8)
        comparison = collect(requests, "comparison", 17 + m * width + 64)
        try:
            response = table.agency(m, self.ctx.pool.map).respond(
                th.ThresholdRequest.from_bytes(comparison))
        except th.ThresholdError as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"comparison refused: {exc}") from None
        yield from chunks(response.to_bytes(), size, lambda c: spb.ThresholdResponse(signs=c))
        yield spb.ThresholdResponse(summary=spb.ThresholdSummary(
            query_id=record.query_id, entries=m, **self._complete(record)))
