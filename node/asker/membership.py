"""The asking side: sync a partner's tag table, then ask with blinded elements.

An online query costs O(number asked): the dataset-sized part (the tag table) is
fetched once per dataset version and key epoch, checked against its digest and cached.
Blinding, the partner's evaluation and unblinding run as a pipeline of batches over a
bidirectional stream, each side spreading its batches over every core.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Sequence

import grpc
import numpy as np

from protocols import labels, oprf

from node.core.config import ConfigError
from node.runtime.context import NodeContext
from node.core.errors import REFUSALS, PartnerError, rpc_error
from node.asker.peer_tables import dataset_info, load_arrays, match_tags, prepare_table, sync_tag_table
from node.keys.pki import load_tls_identity, target_name
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.transport.channels import partner_channel
from node.datasets.tag_tables import label_context
from node.core.progress import Progress, no_progress

log = logging.getLogger(__name__)


@dataclass
class MembershipResult:
    query_id: str
    partner: str
    dataset: str
    version: int
    epoch: int
    matched: np.ndarray  # bool per input, in input order
    seconds: float
    predicate: str = ""
    labels: list[dict | None] | None = None  # labeled queries: attributes of matched inputs
    receipt: object = None  # the answerer's verified receipt (None if missing or invalid)


def accept_receipt(ctx: NodeContext, partner: str, record: QueryRecord, summary) -> None:
    """Verify the answerer's signed receipt and keep it for this node's ledger entry.

    The partner's ledger key is pinned on first use. A missing or invalid receipt does
    not lose the answer, but is recorded in the entry's reason (and found by
    `shuqiao audit cross-check`), and the operator is warned.
    """
    from node.ledger import LedgerPublicKey, Receipt, pin_partner_key, verify_receipt
    from node.ledger.receipts import ReceiptError
    from node.ledger.signing import SignatureError
    try:
        if summary is None or not summary.receipt:
            raise ReceiptError("the partner sent no receipt")
        key = pin_partner_key(ctx.engine, partner, LedgerPublicKey.from_text(summary.ledger_public_key))
        receipt = Receipt.from_bytes(summary.receipt)
        verify_receipt(key, receipt, record.entry(ctx.ledger, "completed").metadata())
        record.receipt = receipt
    except (ReceiptError, SignatureError, ValueError) as exc:
        record.receipt = None
        record.reason = f"receipt missing or invalid: {exc}"
        log.warning("query %s to %s: %s", record.query_id, partner, record.reason)


_KIND_PB = {"membership": pb.QUERY_KIND_MEMBERSHIP, "labeled": pb.QUERY_KIND_LABELED,
            "predicate": pb.QUERY_KIND_PREDICATE}


def membership(ctx: NodeContext, partner: str, dataset: str, purpose: str,
               inputs: Sequence[bytes], progress: Progress = no_progress, *, kind: str = "membership",
               predicate: str | None = None, consent_digest: str | None = None
               ) -> MembershipResult:
    """Which of `inputs` (encoded identifiers) are in the partner's dataset.

    kind "predicate" asks membership in the rows satisfying `predicate`; kind "labeled"
    also opens the allow-listed attributes of matched rows (optionally on a predicate).

    Raises:
        PartnerError: unreachable partner, refusal (with the partner's reason), a partner
            that dies mid-query, or a malformed answer. The query is logged either way.
    """
    if not inputs:
        raise ValueError("nothing to ask: no valid identifier in the input")
    if kind not in _KIND_PB or (kind == "predicate" and not predicate) or (
            kind == "membership" and predicate):
        raise ValueError("kind must be membership, labeled or predicate (with a predicate)")
    started = time.perf_counter()
    cfg = ctx.config
    record = QueryRecord(query_id=str(uuid.uuid4()), role="asker", asker=cfg.node.id,
                         answerer=partner, kind=kind, dataset=dataset, purpose=purpose,
                         elements=len(inputs),
                         authorisation_digest=consent_digest or "")  # node/policy/consent.py
    try:
        channel = partner_channel(ctx, partner)
    except PartnerError as exc:
        record.reason = str(exc)
        record.write(ctx)
        raise
    try:
        stub = pb_grpc.MembershipStub(channel)
        deadline = cfg.grpc.deadline_seconds
        info = (prepare_table(stub, partner, dataset, predicate, deadline) if predicate
                else dataset_info(stub, partner, dataset, deadline))
        record.version, record.epoch, record.predicate = info.version, info.epoch, info.predicate
        if kind == "labeled" and not info.label_length:
            raise PartnerError(partner, f"offers no labels on {dataset!r} to this node",
                               grpc.StatusCode.FAILED_PRECONDITION)
        table = sync_tag_table(ctx, stub, partner, info, progress)
        width = oprf.OUTPUT_LEN if kind == "labeled" else info.tag_length
        outputs = _evaluate(ctx, stub, partner, record, info, inputs, progress, width)
        held = load_arrays(ctx, table)
        if kind == "labeled":
            tags = np.frombuffer(b"".join(o[:info.tag_length] for o in
                                          (outputs[i:i + width] for i in range(0, len(outputs), width))),
                                 dtype=f"S{info.tag_length}")
            matched, pos = match_tags(tags, held.tags)
            opened = _open_labels(ctx, partner, info, outputs, width, matched, pos, held)
        else:
            matched, _ = match_tags(np.frombuffer(outputs, dtype=f"S{width}"), held.tags)
            opened = None
        record.outcome, record.matched = "answered", int(matched.sum())
        accept_receipt(ctx, partner, record, record.summary)
        return MembershipResult(record.query_id, partner, dataset, info.version, info.epoch,
                                matched, time.perf_counter() - started, info.predicate, opened,
                                record.receipt)
    except PartnerError as exc:
        record.outcome = "refused" if exc.code in REFUSALS else "failed"
        record.reason = str(exc)
        raise
    except BaseException as exc:
        record.outcome, record.reason = "aborted", type(exc).__name__
        raise
    finally:
        record.write(ctx)


def _open_labels(ctx, partner, info, outputs: bytes, width: int, matched, pos, held) -> list[dict | None]:
    context = label_context(partner, ctx.config.node.id, info.name, info.epoch)
    opened: list[dict | None] = []
    for i, hit in enumerate(matched):
        if not hit:
            opened.append(None)
            continue
        try:
            opened.append(labels.open_label(outputs[i * width:(i + 1) * width],
                                            held.labels[pos[i]].tobytes(), context))
        except labels.LabelError:
            raise PartnerError(partner, "sent a label that does not open for a matched row") from None
    return opened


def _evaluate(ctx, stub, partner, record: QueryRecord, info, inputs, progress, width: int) -> bytes:
    """The Evaluate stream: blinded batches out, evaluations (and VOPRF proofs) back.

    Messages to the partner go through an outbox, because two parties write to it: the
    blinding pipeline (header, batches) and the answer loop (proof requests, finish).
    """
    pool, cfg = ctx.pool, ctx.config
    n, mode = len(inputs), info.oprf_mode
    verifiable = mode == oprf.MODE_VOPRF
    outbox: queue.Queue = queue.Queue()
    accepted, stop = threading.Event(), threading.Event()
    batch_size = [cfg.grpc.max_batch_elements]
    bounds: list[tuple[int, int]] = []
    blinds: dict[int, bytes] = {}
    rng = random.SystemRandom()

    def requests():
        while True:
            msg = outbox.get()
            if msg is None:
                return
            yield msg

    def produce() -> None:
        outbox.put(pb.EvaluateRequest(header=pb.QueryHeader(
            query_id=record.query_id, dataset=info.name, version=info.version, epoch=info.epoch,
            purpose=record.purpose, total_elements=n, kind=_KIND_PB[record.kind],
            predicate=record.predicate, consent_digest=record.authorisation_digest)))
        if not accepted.wait(cfg.grpc.deadline_seconds) or stop.is_set():
            return
        size = batch_size[0]
        bounds.extend((a, min(n, a + size)) for a in range(0, n, size))
        ahead: list = []
        for seq, (a, b) in enumerate(bounds):
            ahead.append((seq, pool.submit_blind(inputs[a:b], mode)))
            while ahead and (len(ahead) > pool.workers + 1 or seq == len(bounds) - 1):
                s, fut = ahead.pop(0)
                blinds[s], blinded = fut.result()
                if stop.is_set():
                    return
                outbox.put(pb.EvaluateRequest(batch=pb.ElementBatch(seq=s, elements=blinded)))

    def sample(count: int) -> list[int]:
        if cfg.query.verification == "full" or count <= cfg.query.proof_sample:
            return list(range(count))
        return sorted(rng.sample(range(count), cfg.query.proof_sample))

    producer = threading.Thread(target=produce, name="blind", daemon=True)
    producer.start()
    finals: list = []
    pending: dict[int, tuple] = {}  # VOPRF: seq -> (evaluated, sample) awaiting the proof
    call = stub.Evaluate(requests(), timeout=cfg.grpc.deadline_seconds)
    try:
        for resp in call:
            body = resp.WhichOneof("body")
            if body == "accepted":
                batch_size[0] = max(1, min(batch_size[0], resp.accepted.max_batch_elements))
                accepted.set()
            elif body == "batch":
                seq = resp.batch.seq
                if seq != len(finals) + len(pending) or seq >= len(bounds):
                    raise PartnerError(partner, "answered batches out of order")
                a, b = bounds[seq]
                if len(resp.batch.elements) != (b - a) * 32:
                    raise PartnerError(partner, f"answered batch {seq} with the wrong size")
                if verifiable:
                    picked = sample(b - a)
                    pending[seq] = (resp.batch.elements, picked)
                    outbox.put(pb.EvaluateRequest(proof_request=pb.ProofRequest(seq=seq, indices=picked)))
                else:
                    finals.append(pool.submit_finalize(inputs[a:b], blinds.pop(seq),
                                                       resp.batch.elements, width))
                    progress("query", b, n)
            elif body == "proof" and verifiable:
                seq = resp.proof.seq
                if seq not in pending or seq != len(finals):
                    raise PartnerError(partner, "sent a proof for no pending batch")
                evaluated, picked = pending.pop(seq)
                a, b = bounds[seq]
                finals.append(pool.submit_finalize(inputs[a:b], blinds.pop(seq), evaluated,
                                                   width, mode, resp.proof.proof,
                                                   info.public_key, picked))
                progress("query", b, n)
            elif body == "summary":
                if resp.summary.elements_evaluated != n or len(finals) != len(bounds) or pending:
                    raise PartnerError(partner, "summary does not match the query")
                record.summary = resp.summary
            else:
                raise PartnerError(partner, f"sent an unexpected {body or 'empty'} message")
            if bounds and len(finals) == len(bounds) and not pending and not stop.is_set():
                stop.set()  # every batch answered (and proven): finish the stream
                outbox.put(pb.EvaluateRequest(finish=pb.Finish()))
                outbox.put(None)
    except BaseException as exc:
        stop.set()
        accepted.set()   # release the producer if it still waits
        outbox.put(None)
        call.cancel()
        if isinstance(exc, grpc.RpcError):
            raise rpc_error(partner, exc) from None
        raise
    finally:
        producer.join(timeout=5)
    if len(finals) != len(bounds) or not bounds:
        raise PartnerError(partner, "the answer ended early")
    try:
        return b"".join(f.result() for f in finals)
    except ValueError as exc:  # protocols.oprf.InvalidElement is a ValueError
        raise PartnerError(partner, "answered with an invalid group element or a proof that "
                                    "does not verify against its published key") from exc
