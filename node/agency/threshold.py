"""The agency's side of threshold checks: serving the stored table, blind evaluation, signs.

Tables and their Paillier keys are prepared ahead of queries and kept sealed in the
database (node/datasets/threshold_tables.py); this module streams a table to the partner it was
built for and answers comparisons with the key unsealed in this process. See
node/agency/statistics.py for what each side learns.
"""
from __future__ import annotations

import grpc

from protocols import oprf
from protocols import threshold as th

from node.datasets import threshold_tables as ts
from node.agency.tables import Refused
from node.transport.identity import peer_node_id
from node.datasets.registration import current_version
from node.keys.oprf_keys import current_epoch, key_purpose, sealed_key
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import statistics_pb2 as spb
from node.transport.chunks import chunk_size, chunks, collect


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
    raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                  f"the threshold table of {declared.name!r} for this version and epoch is being "
                  "prepared; ask again in a few minutes")


class ThresholdRpc:
    def _threshold_setup(self, dataset: str, peer: str, version=None, epoch: int | None = None):
        """Grant checks shared by the table sync and the query; returns (table, version)."""
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
        table = stored_table(self.ctx, declared, grant, version, peer, epoch)
        if not table.rows:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"no row of {dataset!r} has a usable {grant.threshold_column!r}")
        return table, version

    def ThresholdTable(self, request, context):
        peer = peer_node_id(context)
        try:
            table, version = self._threshold_setup(request.dataset, peer)
        except Refused as exc:
            context.abort(exc.code, exc.reason)
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
        size = chunk_size(self.cfg.grpc.max_message_bytes)
        step = max(1, size // (table.tag_length + table.label_length))
        t, w = table.tag_length, table.label_length
        if changes is not None:
            added, removed = changes
            tags, labels = added.tag_bytes(), added.label_bytes()
            for a in range(0, len(added.tags), step):
                yield spb.ThresholdTableChunk(rows=spb.ThresholdTableRows(
                    tags=tags[a * t:(a + step) * t], labels=labels[a * w:(a + step) * w]))
            gone = removed.tobytes()
            for a in range(0, len(gone), size - size % t):
                yield spb.ThresholdTableChunk(removed=gone[a:a + size - size % t])
            return
        with self.ctx.engine.connect() as conn:
            for tags, labels in ts.iter_table_chunks(conn, table.id):
                for a in range(0, len(tags) // t, step):
                    yield spb.ThresholdTableChunk(rows=spb.ThresholdTableRows(
                        tags=tags[a * t:(a + step) * t], labels=labels[a * w:(a + step) * w]))

    def Threshold(self, request_iterator, context):
        return self._stream(request_iterator, context, "threshold", self._threshold)

    def _threshold(self, requests, peer: str, record: QueryRecord):
        h, declared, _, version = self._admit(next(requests, None), peer, record, "threshold",
                                              spb.STATISTICS_KIND_THRESHOLD)
        table, _ = self._threshold_setup(h.dataset, peer, version, h.epoch)
        if h.key_id != table.key.key_id or h.table_digest != table.digest:
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
            record.evaluated += count  # charged from here on, however the query ends
            yield spb.ThresholdResponse(evaluated=spb.ThresholdEvaluated(
                seq=seq, elements=evaluated, proof=proof))
            done, seq = done + count, seq + 1
            if done == m:
                break
        else:
            raise Refused(grpc.StatusCode.CANCELLED, "the stream ended before every element was sent")
        width = 2 * ((table.key.n.bit_length() + 7) // 8)
        comparison = collect(requests, "comparison", 17 + m * width + 64)
        agency = th.AgencyThreshold(ts.unseal_key(self.ctx.kek, table.key).expose(), min_batch=m,
                                    max_batch=m, mapper=self.ctx.pool.map)
        try:
            response = agency.respond(
                th.ThresholdRequest.from_bytes(comparison))
        except th.ThresholdError as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"comparison refused: {exc}") from None
        yield from chunks(response.to_bytes(), size, lambda c: spb.ThresholdResponse(signs=c))
        yield spb.ThresholdResponse(summary=spb.ThresholdSummary(
            query_id=record.query_id, entries=m, **self._complete(record)))
