"""The agency's side of threshold checks: serving the stored table; policy around the session.

Tables and their Paillier keys are prepared ahead of queries and kept sealed in the
database (node/datasets/threshold_tables.py); this module streams a table to the
partner it was built for (in the format of protocols/threshold_table.py), and runs a
query's protocol (blind evaluation, signs) as protocols/threshold_session's
ThresholdAnswerer, with the Paillier key unsealed in this process and the OPRF key
used only by the node's workers. See node/agency/statistics.py for what each side learns.
"""
from __future__ import annotations

from functools import partial

from protocols import oprf
from protocols.threshold_session import ThresholdAnswerer
from protocols.threshold_table import removed_slices, row_slices

from node.datasets import threshold_tables as ts
from node.core.errors import NotPermitted, NotServed
from node.transport.identity import peer_node_id
from node.transport.status import refusals
from node.datasets.registration import current_version
from node.keys.workers import current_epoch, key_purpose, sealed_key
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import statistics_pb2 as spb
from node.transport.chunks import chunk_size


def stored_table(ctx, declared, grant, version, peer: str, epoch: int) -> ts.TableRow:
    """The prepared table for (version, peer, epoch); if there is none yet, its
    preparation starts in the background and the request is refused until it is done."""
    with ctx.engine.connect() as conn:
        table = ts.served_table(conn, declared.name, version.id, peer, epoch, grant.threshold_column)
    if table is not None:
        return table
    (target,) = ts.targets(declared, version.id, version.version, version.id_type,
                           version.attributes, {peer: epoch})
    ts.prepare_in_background(ctx, target)
    raise NotServed(f"the threshold table of {declared.name!r} for this version and epoch is being "
                    "prepared; ask again in a few minutes")


class ThresholdRpc:
    def _threshold_setup(self, dataset: str, peer: str, version=None, epoch: int | None = None):
        """Grant checks shared by the table sync and the query; returns (table, version)."""
        declared, grant = self._grant(dataset, peer)
        if "threshold" not in {k.value for k in grant.kinds}:
            raise NotPermitted(f"query kind 'threshold' is not granted for dataset {dataset!r}")
        if not grant.threshold_column:
            raise NotServed(f"the grant on {dataset!r} names no threshold_column")
        with self.ctx.engine.connect() as conn:
            version = version or current_version(conn, dataset)
            epoch = epoch if epoch is not None else current_epoch(conn, dataset, peer)
        if version is None or epoch is None:
            raise NotServed(f"dataset {dataset!r} has no registered version yet")
        self._check_column(grant.threshold_column, [grant.threshold_column], version, dataset,
                           "the threshold column")
        table = stored_table(self.ctx, declared, grant, version, peer, epoch)
        if not table.rows:
            raise NotServed(f"no row of {dataset!r} has a usable {grant.threshold_column!r}")
        return table, version

    @refusals
    def ThresholdTable(self, request, context):
        table, version = self._threshold_setup(request.dataset, peer_node_id(context))
        n, changes = table.key.n, None
        if request.held_digest and request.held_digest != table.digest:
            with self.ctx.engine.connect() as conn:  # a copy of an earlier version: the difference
                changes = ts.table_delta(conn, table, request.held_digest)
        yield spb.ThresholdTableChunk(info=spb.ThresholdTableInfo(
            dataset=request.dataset, version=version.version, epoch=table.key.epoch,
            modulus=n.to_bytes((n.bit_length() + 7) // 8, "big"), key_id=table.key.key_id,
            rows=table.rows, unusable_rows=table.unusable, digest=table.digest,
            tag_length=table.tag_length, label_length=table.label_length,
            delta_from=request.held_digest if changes else b""))
        if request.held_digest == table.digest:
            return
        yield from self._table_rows(table, changes)

    def _table_rows(self, table, changes):
        """The whole table, or the difference (rows added, then tags removed)."""
        size = chunk_size(self.cfg.grpc.max_message_bytes)
        t, w = table.tag_length, table.label_length
        if changes is not None:
            added, removed = changes
            for tags, labels in row_slices(added.tag_bytes(), added.label_bytes(), t, w, size):
                yield spb.ThresholdTableChunk(rows=spb.ThresholdTableRows(tags=tags, labels=labels))
            for gone in removed_slices(removed.tobytes(), t, size):
                yield spb.ThresholdTableChunk(removed=gone)
            return
        with self.ctx.engine.connect() as conn:
            for stored_tags, stored_labels in ts.iter_table_chunks(conn, table.id):
                for tags, labels in row_slices(stored_tags, stored_labels, t, w, size):
                    rows = spb.ThresholdTableRows(tags=tags, labels=labels)
                    yield spb.ThresholdTableChunk(rows=rows)

    def Threshold(self, request_iterator, context):
        return self._stream(request_iterator, context, "threshold", self._threshold)

    def _threshold(self, requests, peer: str, record: QueryRecord):
        h, declared, _, version = self._admit(next(requests, None), peer, record, "threshold",
                                              spb.STATISTICS_KIND_THRESHOLD)
        table, _ = self._threshold_setup(h.dataset, peer, version, h.epoch)
        if h.key_id != table.key.key_id or h.table_digest != table.digest:
            raise NotServed("the threshold table changed (new version, epoch or key); sync it again")
        with self.ctx.engine.connect() as conn:
            sealed = sealed_key(conn, h.dataset, peer, h.epoch)
        purpose, pool = key_purpose(h.dataset, peer, h.epoch), self.ctx.pool
        verifiable = declared.mode_number == oprf.MODE_VOPRF
        session = ThresholdAnswerer(
            ts.private_key(self.ctx, table.key).expose(), elements=h.total_elements,
            rows=table.rows, unusable_rows=table.unusable,
            evaluate=partial(pool.blind_evaluate, sealed, purpose),
            prove=partial(pool.prove, sealed, purpose) if verifiable else None,
            max_batch=self.cfg.grpc.max_batch_elements,
            chunk_bytes=chunk_size(self.cfg.grpc.max_message_bytes), mapper=pool.map)
        yield from self._serve(session, requests, record, spb.ThresholdResponse)
