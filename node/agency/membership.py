"""The Membership service's answering side: the table RPCs partners sync, prepare and diff,
and membership queries, a thin gRPC adapter around the session in protocols/membership.py
(rounds, checks, and who learns what are told there).

Rounds (see proto/shuqiao/v1/membership.proto):
  SyncTagTable  the asker fetches the sorted tags F_k(y)[:t] of a dataset version under
                its own partner key; it matches locally, so asking costs O(asked).
  Evaluate      header (purpose, dataset, version, epoch, element count) -> Accepted;
                then per batch of blinded elements B_i -> k*B_i (and VOPRF proofs of the
                elements the asker picks); Finish -> Summary with the signed receipt.
  Cardinality and Bulk  their own kinds on the same service (node/agency/cardinality.py,
                node/agency/bulk.py).
This module applies the policy around the session: admission (grant, purpose, quotas,
the served table and key epoch), the ledger's admitted entry before any answer leaves,
charging every evaluated element however the query ends, and the completed entry whose
receipt the summary carries. Every query, answered or refused, is written to the query
log (metadata only). Errors name the rule that was broken, never an element.

Tables. ListDatasets names the current version and key epoch of every dataset granted to the
caller; SyncTagTable streams a sorted table (or, for a refreshed version, the delta from
a version the caller holds); PrepareTable builds the table of rows satisfying a
predicate the policy allows. Refusals carry a reason and never an element.

The grant view: what a partner may ask of one dataset, told to that partner only
(ListDatasets). The view is built from the caller's own grant in the config in force (so
it changes with a reload) and from the same charges admission counts (node/policy/checks.py):
elements of answered queries, of queries broken off after being evaluated, and of
queries still open at their full reservation; DP epsilon likewise, per key epoch. It
names no other partner, and counts nothing but the caller's own queries: what a
partner learns here is what its own refusals would tell it one query at a time.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Connection, select

from protocols import membership as ms
from protocols import oprf
from protocols.session import ProtocolStateError

from node.agency import predicate_tables as predicate_cache
from node.agency.admission import (Admitted, Servicer, StreamEnded, admit, answered, check_epoch,
                                   grant_for, serve_session)
from node.agency.bulk import BulkRpc
from node.agency.cardinality import CardinalityRpc
from node.core.config import DatasetGrant
from node.core.errors import InvalidRequest, NotFound, NotPermitted, NotServed
from node.datasets.registration import current_version, iter_chunks
from node.datasets.tag_tables import (Arrays, delta, iter_row_tags, iter_table_chunks, label_length,
                                      load_table, store_table)
from node.keys.workers import current_epoch, key_purpose, public_key, sealed_key
from node.keys.workers import SealedKeyEvaluator
from node.language import predicate as pred
from node.policy import checks as policy
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.runtime.context import NodeContext
from node.storage.schema import datasets, tag_tables
from node.transport import membership_wire as wire
from node.transport.identity import peer_node_id
from node.transport.status import refusals

log = logging.getLogger(__name__)

_KINDS = {pb.QUERY_KIND_MEMBERSHIP: "membership", pb.QUERY_KIND_LABELED: "labeled",
          pb.QUERY_KIND_PREDICATE: "predicate"}
PROTOCOL_ERRORS = (ms.InvalidMessage, ProtocolStateError)

SEND_ROWS = 32768  # rows per streamed chunk


class TableRpcs:
    ctx: NodeContext

    # -- policy helpers -------------------------------------------------------------------
    def _table(self, conn, dataset: str, version: int, peer: str, epoch: int, predicate: str = ""):
        row = conn.execute(
            select(tag_tables, datasets.c.id_type, datasets.c.status, datasets.c.base_version,
                   datasets.c.attributes)
            .join(datasets, datasets.c.id == tag_tables.c.dataset_id)
            .where(datasets.c.name == dataset, datasets.c.version == version,
                   tag_tables.c.partner == peer, tag_tables.c.epoch == epoch,
                   tag_tables.c.predicate == predicate)).first()
        if row is None or row.status != "active":
            what = " with that predicate (prepare it first)" if predicate else ""
            raise NotServed(f"dataset {dataset!r} version {version} epoch {epoch} is not served{what}; "
                            "list datasets and sync the current version")
        return row

    def _held_table(self, conn, dataset: str, version: int, peer: str, epoch: int):
        """The full table of a version a partner says it holds, whatever its status."""
        return conn.execute(
            select(tag_tables).join(datasets, datasets.c.id == tag_tables.c.dataset_id)
            .where(datasets.c.name == dataset, datasets.c.version == version,
                   tag_tables.c.partner == peer, tag_tables.c.epoch == epoch,
                   tag_tables.c.predicate == "")).first()

    def _describe(self, conn, dataset, version, epoch, peer, table, grant, declared=None) -> pb.DatasetInfo:
        declared = declared or self.ctx.config.dataset(dataset)
        if declared is None:  # dropped by a reload since the grant was read
            raise NotFound(f"no dataset {dataset!r} is available to node {peer!r}")
        return pb.DatasetInfo(
            name=dataset, version=version, epoch=epoch, row_count=table.row_count,
            id_type=table.id_type, purposes=grant.purpose_codes, tag_table_digest=table.digest,
            tag_length=table.tag_length, public_key=public_key(conn, dataset, peer, epoch),
            oprf_mode=declared.mode_number,
            label_length=table.label_length, predicate=table.predicate,
            label_attributes=grant.label_attributes if table.label_length else [],
            kinds=[k.value for k in grant.kinds])

    def _current(self, conn, dataset: str, peer: str):
        current = current_version(conn, dataset)
        epoch = current and current_epoch(conn, dataset, peer)
        if current is None or epoch is None:
            registered = conn.execute(select(datasets.c.id).where(datasets.c.name == dataset)
                                      .limit(1)).first()
            raise NotServed(f"dataset {dataset!r} has no active version" if registered else
                            f"dataset {dataset!r} has no registered version yet")
        return current, epoch

    # -- rpcs ------------------------------------------------------------------------------
    def ListDatasets(self, request, context):
        peer = peer_node_id(context)
        out = pb.ListDatasetsResponse()
        cfg, now = self.ctx.config, self.ctx.clock.now()  # one config for the whole listing
        with self.ctx.engine.connect() as conn:
            for d in cfg.datasets:
                grant = next((g for g in d.grants if g.partner == peer), None)
                if grant is None:
                    continue
                try:  # a dataset with nothing to serve is left out, not an error for all
                    current, epoch = self._current(conn, d.name, peer)
                    table = self._table(conn, d.name, current.version, peer, epoch)
                except NotServed as exc:
                    log.info("not listed to %s: %s", peer, exc.reason)
                    continue
                info = self._describe(conn, d.name, current.version, epoch, peer, table, grant, d)
                # The caller's own grant only: `grant` is the one naming `peer`.
                info.grant.CopyFrom(caller_grant(conn, grant, d.name, epoch, now))
                out.datasets.append(info)
        return out

    @refusals
    def PrepareTable(self, request, context) -> pb.DatasetInfo:
        peer = peer_node_id(context)
        declared, grant = grant_for(self.ctx.config, request.dataset, peer)
        if "predicate" not in {k.value for k in grant.kinds}:
            raise NotPermitted(f"predicate queries are not granted for dataset {request.dataset!r}")
        try:
            ast = pred.parse(request.predicate)
            pred.check_allowed(ast, set(grant.predicate_columns))
        except pred.PredicateError as exc:
            raise InvalidRequest(f"predicate refused: {exc}") from None
        canonical = pred.to_canonical(ast)
        with self.ctx.engine.begin() as conn:
            current, epoch = self._current(conn, request.dataset, peer)
            missing = pred.columns(ast) - set(current.attributes)
            if missing:
                raise NotServed(f"column(s) {', '.join(sorted(missing))} are not registered "
                                f"attributes of {request.dataset!r} version {current.version}")
            try:
                table = self._table(conn, request.dataset, current.version, peer, epoch, canonical)
                predicate_cache.mark_used(conn, table.id, self.ctx.clock.now())
            except NotServed:  # not built yet, or evicted: a new build, counted
                predicate_cache.check_daily(conn, grant, request.dataset, peer, self.ctx.clock.now())
                self._build_predicate_table(conn, declared, grant, current, peer, epoch, ast, canonical)
                table = self._table(conn, request.dataset, current.version, peer, epoch, canonical)
                predicate_cache.record_build(self.ctx, conn, dataset=request.dataset,
                                             version=current.version, peer=peer, epoch=epoch,
                                             canonical=canonical, table_id=table.id, rows=table.row_count)
            return self._describe(conn, request.dataset, current.version, epoch, peer, table, grant,
                                  declared)

    def _build_predicate_table(self, conn, declared, grant, version, peer, epoch, ast, canonical) -> None:
        """Filter the version's rows; their tags were computed at registration."""
        keep = pred.compile_predicate(ast)
        parts_t, parts_l = [], []
        chunks = iter_chunks(conn, version.id, self.ctx.kek)
        for (seq, rows), (tags, lab) in zip(chunks, iter_row_tags(conn, version.id, peer, epoch)):
            arrays = Arrays.from_bytes(tags, declared.tag_length, lab, label_length(grant))
            mask = np.fromiter((keep(attrs) for _, attrs in rows), dtype=bool, count=len(rows))
            chosen = arrays.select(mask)
            parts_t.append(chosen.tag_bytes())
            parts_l.append(chosen.label_bytes())
        table = Arrays.from_bytes(b"".join(parts_t), declared.tag_length, b"".join(parts_l),
                                  label_length(grant)).sorted()
        store_table(conn, version.id, peer, epoch, canonical, declared.tag_length,
                    label_length(grant), table, now=self.ctx.clock.now())

    @refusals
    def SyncTagTable(self, request, context):
        peer = peer_node_id(context)
        header, table, changes = self._sync_plan(request, peer)
        if changes is None:
            yield pb.TagTableChunk(header=header)
            with self.ctx.engine.connect() as conn:  # one stored chunk in memory at a time
                for tags, lab in iter_table_chunks(conn, table.id):
                    yield pb.TagTableChunk(rows=pb.TagRows(tags=tags, labels=lab or b""))
            return
        added, removed = changes
        log.info("tag table of %s v%d for %s sent as a delta from v%d (+%d -%d rows)",
                 request.dataset, request.version, peer, request.base_version,
                 len(added.tags), len(removed))
        yield pb.TagTableChunk(header=header, base_version=request.base_version)
        for i in range(0, len(added.tags), SEND_ROWS):
            part = added.select(slice(i, i + SEND_ROWS))
            yield pb.TagTableChunk(rows=pb.TagRows(tags=part.tag_bytes(), labels=part.label_bytes()))
        for i in range(0, len(removed), SEND_ROWS):
            yield pb.TagTableChunk(removed_tags=removed[i:i + SEND_ROWS].tobytes())

    def _sync_plan(self, request, peer: str):
        """(header, table, None) to send the table whole, or (header, table, (added,
        removed)) to send the difference from the version the caller holds."""
        declared, grant = grant_for(self.ctx.config, request.dataset, peer)
        with self.ctx.engine.connect() as conn:
            check_epoch(self.ctx, conn, request.dataset, peer, request.epoch, declared)
            table = self._table(conn, request.dataset, request.version, peer, request.epoch,
                                request.predicate)
            header = self._describe(conn, request.dataset, request.version, request.epoch,
                                    peer, table, grant, declared)
            if not request.base_version or request.predicate \
                    or table.base_version != request.base_version:
                return header, table, None
            # The caller's copy: retired or not, it only serves to compute the difference
            # (nothing the caller does not hold already); if it is gone, the table goes whole.
            base = self._held_table(conn, request.dataset, request.base_version, peer, request.epoch)
            if base is None:
                return header, table, None
            return header, table, delta(load_table(conn, base), load_table(conn, table))


# -- the grant view -----------------------------------------------------------------------

# (window, how far back it reaches (None: the current key epoch), the grant's limit field)
_WINDOWS = (("day", timedelta(days=1), "daily_elements"),
            ("month", timedelta(days=30), "monthly_elements"),
            ("epoch", None, "epoch_elements"))


def quota_uses(conn: Connection, grant: DatasetGrant, dataset: str, epoch: int,
               now: datetime) -> list[pb.QuotaUse]:
    uses = []
    for window, span, field in _WINDOWS:
        used = policy.answered_elements(conn, grant.partner, dataset,
                                        since=now - span if span else None,
                                        epoch=None if span else epoch)
        limit = getattr(grant, field)
        use = pb.QuotaUse(window=window, used=used)
        if limit is not None:
            use.limit, use.left = limit, max(0, limit - used)
        uses.append(use)
    return uses


def privacy_budget(conn: Connection, grant: DatasetGrant, dataset: str, epoch: int) -> pb.PrivacyBudget | None:
    if grant.dp_epsilon is None:
        return None  # exact counts: no budget is spent
    spent = policy.dp_spent(conn, grant.partner, dataset, epoch)
    budget = pb.PrivacyBudget(epsilon_per_query=grant.dp_epsilon, spent=spent)
    if grant.dp_budget is not None:
        budget.budget, budget.left = grant.dp_budget, max(0.0, grant.dp_budget - spent)
    return budget


def caller_grant(conn: Connection, grant: DatasetGrant, dataset: str, epoch: int,
                 now: datetime) -> pb.CallerGrant:
    """The caller's grant on `dataset` and what is left of it in key epoch `epoch`."""
    view = pb.CallerGrant(
        purposes=[pb.GrantedPurpose(code=p.code, legal_basis=p.legal_basis) for p in grant.purposes],
        predicate_columns=grant.predicate_columns, label_attributes=grant.label_attributes,
        min_elements=grant.min_elements, max_elements=grant.max_elements,
        min_counting_elements=policy.min_elements(grant, "cardinality"),
        quotas=quota_uses(conn, grant, dataset, epoch, now),
        aggregate_columns=grant.aggregate_columns, threshold_column=grant.threshold_column or "",
        min_group_size=grant.min_group_size)
    budget = privacy_budget(conn, grant, dataset, epoch)
    if budget is not None:
        view.privacy.CopyFrom(budget)
    return view


class MembershipAnswerer(Servicer, TableRpcs, CardinalityRpc, BulkRpc, pb_grpc.MembershipServicer):
    def Evaluate(self, request_iterator, context):
        return self.query_stream(request_iterator, context, "membership", self._evaluate,
                                 PROTOCOL_ERRORS)

    def _evaluate(self, requests, peer: str, record: QueryRecord):
        admitted = admit(self.ctx, next(requests, None), peer, record, kinds=_KINDS, consent=True,
                         check=lambda conn, a: self._served(conn, a, peer, record))
        h = admitted.header
        record.admit(self.ctx)  # in the ledger before any answer leaves
        session = ms.MembershipAnswerer(
            ms.Header(h.total_elements),
            SealedKeyEvaluator(self.ctx.pool, admitted.checked, key_purpose(h.dataset, peer, h.epoch)),
            max_batch=self.cfg.grpc.max_batch_elements,
            verifiable=admitted.declared.mode_number == oprf.MODE_VOPRF)

        def emit(message):
            record.evaluated = session.evaluated  # charged from here on, however the query ends
            if isinstance(message, ms.Summary):  # committed before the receipt is sent
                return wire.evaluate_response(message, query_id=record.query_id,
                                              **answered(self.ctx, record))
            envelope = {"query_id": record.query_id} if isinstance(message, ms.Accepted) else {}
            return wire.evaluate_response(message, **envelope)

        try:
            yield from serve_session(session, requests, wire.parse_evaluate_request, emit)
        except StreamEnded:
            record.outcome = "aborted"  # the asker stopped sending: not a refusal of ours
            raise

    def _served(self, conn, admitted: Admitted, peer: str, record: QueryRecord) -> bytes:
        """The kind's own checks (a predicate is granted and named, the table it asks of
        is served, labels exist); returns the query's sealed key."""
        h, kind, grant = admitted.header, admitted.kind, admitted.grant
        if h.predicate and kind != "predicate":
            policy.check_request(grant, dataset=h.dataset, kind="predicate", elements=h.total_elements)
        if kind == "predicate" and not h.predicate:
            raise InvalidRequest("a predicate query names its predicate")
        table = self._table(conn, h.dataset, h.version, peer, h.epoch, h.predicate)
        record.predicate = h.predicate
        if kind == "labeled" and not table.label_length:
            raise NotServed(f"dataset {h.dataset!r} has no labels for node {peer!r}")
        return sealed_key(conn, h.dataset, peer, h.epoch)
