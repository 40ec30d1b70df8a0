"""The answering side of the statistics kinds: a thin gRPC adapter (one servicer).

Aggregate (`AggregateRpc` below; protocols/psi_shuffle.py, protocols/he_aggregate.py).
Both parties draw fresh keys for a shuffled match over the agency's rows that have a
usable value; the agency's values travel BFV-encrypted under a per-query key that
never leaves this process; the fund centre selects and adds them, masks the sums, and
the agency decrypts only masked totals, adds OpenDP discrete Laplace noise (when the
grant sets ``dp_epsilon``, split evenly between counts and sums, with the grant's
``aggregate_value_bound`` as a sum's sensitivity), suppresses groups below
``min_group_size`` and releases. Rows whose value is not an integer in [0, bound] are
left out and only counted. The bound is public (it shapes the limbs the asker sees):
the declared one, else 2^62 - 1, never the largest value present.

* Fund centre learns: the dataset's group names (distinct values of the group-by column
  among usable rows), how many rows take part and how many were left out as unusable
  (dataset-wide counts), and per group either "suppressed" or count, sum and mean —
  exact without DP, noised with DP. Its node software also learns the *exact* size of
  the whole intersection (the match's selection count; DP covers the per-group figures,
  not that total — which is why the grant's minimum query size and quotas matter). It
  never sees a single value and never learns which of its identifiers matched.
* Agency learns: the number of elements asked, the purpose, and per group the count
  blurred by the fund centre's own discrete Laplace noise (which it needs to suppress
  small groups). Everything else it decrypts is uniformly masked. It learns nothing
  about which of its rows matched.

Threshold (node/agency/threshold.py; protocols/threshold.py, protocols/oprf.py,
protocols/labels.py). Per dataset x partner x epoch the agency draws a 3072-bit
Paillier key (its factors sealed under the node KEK) and, per version, publishes a
table prepared at registration, refresh or rotation (node/datasets/threshold_tables.py): for
every row with a usable income, the row's tag under the partner's epoch OPRF key and
Enc(income) sealed under the row's full OPRF output, sorted by tag. The
fund centre syncs the table once per epoch, evaluates its applicants' identifiers
blindly (RFC 9497, proven in VOPRF mode), opens the sealed ciphertexts of the applicants
that matched, and sends one sign-preserving blinded comparison per asked identifier
(dummies for the unmatched, shuffled); the agency returns only signs.

* Fund centre learns: N (rows with a usable income) and the number left out; per
  applicant, whether a usable income is registered for that identifier (membership in
  those rows: unavoidable once it can find its applicant's ciphertext; and since the
  evaluation uses its epoch key, F_k(x) is the same as in membership queries) and, if
  so, whether it is >= the applicant's threshold. It never sees an income: the
  ciphertexts are Paillier under the agency's key (semantically secure), and it can
  open only the sealed ciphertexts of identifiers it had evaluated, each counted in the
  policy's quotas. A fund centre that deviates can still compare one person's income
  against thresholds of its choice, one entry per element asked (bisection needs ~40):
  the quotas and the ledger bound that, not the cryptography.
* Agency learns: the number of applicants asked, the purpose, and when the table was
  synced; per comparison entry a fair-coin sign and a magnitude blurred over 1024
  octaves (threshold.py bounds it: statistical distance <= 65/1024 between any two
  income gaps, ~1% for realistic ones). The batch has exactly one entry per asked
  identifier (dummies for the unmatched, shuffled), so it learns neither who applied,
  nor how many matched, nor any threshold.

Policy, for both: the grant must list the kind and the purpose; minimum and maximum
query sizes and daily / monthly / epoch quotas apply to the elements asked; aggregate
columns must be in ``aggregate_columns`` and the threshold column must be
``threshold_column``, and registered attributes of the current version; noised
aggregates charge ``dp_epsilon`` to the partner's budget for the dataset and epoch
(shared with cardinality queries). Every query, answered or refused, is written to the
query log and the ledger with its kind, size, outcome and epsilon (admitted before the
first answer leaves, completed with the signed receipt before the summary) — never an
identifier or a value.
"""
from __future__ import annotations

from protocols.dp import ReleasePlan
from protocols.session import ProtocolStateError
from protocols.session import AggregateSummary, SessionRefusal, StatisticsAccepted, ThresholdSummary

from node.agency import admission
from node.agency.admission import Servicer
from node.agency.threshold import ThresholdRpc
from node.core.errors import InvalidRequest, NotPermitted, NotServed, StreamEnded
from node.datasets.statistics_rows import (
    MAX_GROUPS, aggregate_rows, hashed_rows, select_packed, version_columns,
)
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import statistics_pb2 as spb
from node.rpc.shuqiao.v1 import statistics_pb2_grpc as spb_grpc
from node.transport.chunks import chunk_size, unwrap, wrap

# What the sessions refuse (node/agency/admission.py's as_refusal says which refusal each is).
SESSION_ERRORS = (SessionRefusal, ProtocolStateError)


OPS = {spb.AGGREGATE_OP_COUNT: "count", spb.AGGREGATE_OP_SUM: "sum", spb.AGGREGATE_OP_MEAN: "mean"}


class AggregateRpc:
    """The agency's side of aggregate queries: admission and policy around the session.

    The protocol (shuffled match, BFV columns, noised release) is
    protocols/aggregate.AggregateAnswerer; this adapter admits the query, checks the
    columns against the grant, reads the rows taking part, builds the release plan from
    the grant (protocols/dp.ReleasePlan: the grant's ``dp_epsilon``, reserved at
    admission) and moves the messages. The session's per-query secrets (the shuffle key
    and permutation, the BFV secret key) live for the stream's lifetime only, keyed by
    nothing a peer can name: never stored, pickled or logged. See the module doc for
    what each side learns.
    """

    def Aggregate(self, request_iterator, context):
        return self._stream(request_iterator, context, "aggregate", self._aggregate)

    def _aggregate(self, requests, peer: str, record: QueryRecord):
        from protocols.aggregate import AggregateAnswerer  # TenSEAL loads only where aggregates run
        h, _, grant, version = self._admit(next(requests, None), peer, record, "aggregate",
                                           spb.STATISTICS_KIND_AGGREGATE)
        with_sums = self._aggregate_columns(h, grant, version)
        rows = self._aggregate_rows(h, grant, version)
        plan = ReleasePlan.for_query(grant.dp_epsilon, with_sums)
        pool = self.ctx.pool
        hashed = select_packed(hashed_rows(self.ctx, version, version_columns(self.ctx, version)),
                               rows.positions, 32)
        session = AggregateAnswerer(
            hashed, rows.values, rows.groups, rows.group_names, value_bound=rows.value_bound,
            unusable_rows=rows.unusable, elements=h.total_elements, plan=plan,
            budget=plan.budget(peer, h.dataset, h.epoch), min_group_size=grant.min_group_size,
            chunk_bytes=chunk_size(self.cfg.grpc.max_message_bytes), mapper=pool.map,
            columns_at_once=2 * pool.workers)
        yield from self._serve(session, requests, record, spb.AggregateResponse)

    def _aggregate_columns(self, h, grant, version) -> bool:
        """The asked operations and columns against the grant; whether sums are asked."""
        ops = {OPS.get(op) for op in h.ops} or {"count"}
        if None in ops:
            raise InvalidRequest("unknown aggregate operation")
        with_sums = bool(ops & {"sum", "mean"})
        if with_sums and not h.value_column:
            raise InvalidRequest("sum and mean need a value column")
        for column, role in ((h.value_column, "an aggregate value"),
                             (h.group_by, "a group-by column")):
            if column:
                self._check_column(column, grant.aggregate_columns, version, h.dataset, role)
        if with_sums and grant.dp_epsilon is not None and grant.aggregate_value_bound is None:
            raise NotServed(f"noised sums on {h.dataset!r} need the grant's aggregate_value_bound "
                            "(the largest value one row may add); ask the agency to set it")
        return with_sums

    def _aggregate_rows(self, h, grant, version):
        rows = aggregate_rows(version_columns(self.ctx, version), h.value_column, h.group_by,
                              grant.aggregate_value_bound)
        if len(rows.group_names) > MAX_GROUPS:
            raise NotServed(f"column {h.group_by!r} has more than {MAX_GROUPS} distinct values")
        if not len(rows.positions):
            raise NotServed(f"no row of {h.dataset!r} has a usable value in {h.value_column!r}")
        return rows


class StatisticsAnswerer(Servicer, AggregateRpc, ThresholdRpc, spb_grpc.StatisticsServicer):
    def _stream(self, requests, context, kind: str, body):
        """One query stream (node/agency/admission.py): refusals become gRPC statuses, and
        the query log gets exactly one record, whatever happens."""
        return self.query_stream(requests, context, kind, body, SESSION_ERRORS)

    def _admit(self, first, peer: str, record: QueryRecord, kind: str, kind_number: int):
        """The header against the grant and the policy (one admission for every kind); an
        aggregate reserves the grant's whole per-query epsilon (counts and sums share it).
        Returns (header, declared, grant, current version)."""
        admitted = admission.admit(self.ctx, first, peer, record, kinds={kind_number: kind},
                                   current=True, reserve_epsilon=kind == "aggregate")
        return admitted.header, admitted.declared, admitted.grant, admitted.version

    def _grant(self, dataset: str, peer: str):
        return admission.grant_for(self.cfg, dataset, peer)

    def _serve(self, session, requests, record: QueryRecord, envelope):
        """Move messages between the asker's stream and an admitted query's session: the
        admitted entry first, the record charged as each answer leaves, the completed
        entry before the summary. A session's refusal ends the stream with its reason;
        a stream that stops early, with the session's reason naming the round."""
        record.admit(self.ctx)  # in the ledger before any answer leaves
        try:
            yield from admission.serve_session(
                session, requests, unwrap,
                lambda message: self._emit(envelope, message, session, record))
        except StreamEnded:
            session.end_of_stream()  # refuses in its own words, naming the round

    def _emit(self, envelope, message, session, record: QueryRecord):
        record.evaluated, record.epsilon_micro = session.elements_answered, session.epsilon_micro
        if isinstance(message, StatisticsAccepted):
            return wrap(envelope, message, query_id=record.query_id)
        if isinstance(message, (AggregateSummary, ThresholdSummary)):
            return wrap(envelope, message, query_id=record.query_id,
                        **admission.answered(self.ctx, record))
        return wrap(envelope, message)

    @staticmethod
    def _check_column(column: str, allowed: list[str], version, dataset: str, role: str) -> None:
        if column not in allowed:
            raise NotPermitted(f"column {column!r} may not be used as {role} on dataset {dataset!r}; "
                               f"allowed: {', '.join(allowed) or 'none'}")
        if column not in version.attributes:
            raise NotServed(f"column {column!r} is not a registered attribute of {dataset!r} "
                            f"version {version.version}")
