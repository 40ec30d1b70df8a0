"""The asking side: sync a partner's tag table, then ask with blinded elements.

An online query costs O(number asked): the dataset-sized part (the tag table) is
fetched once per dataset version and key epoch, checked against its digest and cached.
Blinding, the partner's evaluation and unblinding run as a pipeline of batches over a
bidirectional stream, each side spreading its batches over every core.
"""
from __future__ import annotations

import hashlib
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

import grpc
import numpy as np
from sqlalchemy import insert, select

from protocols import oprf
from protocols.group import is_valid_element

from .config import ConfigError
from .context import NodeContext
from .pki import load_tls_identity, target_name
from .querylog import QueryRecord
from .rpc.shuqiao.v1 import membership_pb2 as pb
from .rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from .server import grpc_options
from .store import peer_tag_chunks, peer_tag_tables

CONNECT_TIMEOUT = 10.0
Progress = Callable[[str, int, int | None], None]


def _noop(stage: str, done: int, total: int | None) -> None:
    pass


class PartnerError(Exception):
    """A partner refused, failed or could not be reached; `code` is the gRPC status."""

    def __init__(self, partner: str, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(f"partner {partner!r}: {message}")
        self.partner = partner
        self.code = code


def _rpc_error(partner: str, exc: grpc.RpcError) -> PartnerError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"unavailable ({details}); is the node running and reachable?"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        details = "no answer before the deadline"
    return PartnerError(partner, f"{code.name if code else 'error'}: {details}", code)


def partner_channel(ctx: NodeContext, partner_id: str) -> grpc.Channel:
    """The context's open channel to a partner (created and checked on first use)."""
    channel = ctx.channels.get(partner_id)
    if channel is None:
        channel = ctx.channels[partner_id] = open_channel(ctx, partner_id)
    return channel


def open_channel(ctx: NodeContext, partner_id: str, *, timeout: float = CONNECT_TIMEOUT) -> grpc.Channel:
    """A mutual-TLS channel to a configured partner, checked to be up."""
    cfg = ctx.config
    partner = cfg.partner(partner_id)
    if not partner.address:
        raise ConfigError(f"partner {partner_id!r} has no address in the config; add address = \"HOST:PORT\"")
    tls = cfg.tls
    cert, key = load_tls_identity(cfg.path(tls.cert), cfg.path(tls.key),
                                  kek=ctx.kek if tls.key_sealed else None)
    creds = grpc.ssl_channel_credentials(root_certificates=cfg.path(tls.ca).read_bytes(),
                                         private_key=key.expose(), certificate_chain=cert)
    options = grpc_options(cfg.grpc.max_message_bytes) + [
        ("grpc.ssl_target_name_override", target_name(partner_id))]
    channel = grpc.secure_channel(partner.address, creds, options=options)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        channel.close()
        raise PartnerError(partner_id, f"unreachable at {partner.address}: no mutual-TLS connection "
                           f"within {timeout:g} s (is the node running, and do both nodes use the "
                           "same federation CA?)", grpc.StatusCode.UNAVAILABLE) from None
    return channel


@dataclass(frozen=True)
class CachedTable:
    id: int
    partner: str
    dataset: str
    version: int
    epoch: int
    tag_length: int
    row_count: int


def dataset_info(stub, partner: str, dataset: str, deadline: float) -> pb.DatasetInfo:
    try:
        listing = stub.ListDatasets(pb.ListDatasetsRequest(), timeout=deadline)
    except grpc.RpcError as exc:
        raise _rpc_error(partner, exc) from None
    for info in listing.datasets:
        if info.name == dataset:
            return info
    offered = ", ".join(i.name for i in listing.datasets) or "none"
    raise PartnerError(partner, f"offers no dataset {dataset!r} to this node (offered: {offered})",
                       grpc.StatusCode.NOT_FOUND)


def sync_tag_table(ctx: NodeContext, stub, partner: str, info: pb.DatasetInfo,
                   progress: Progress = _noop) -> CachedTable:
    """Make sure the partner's tag table for `info`'s version and epoch is cached."""
    key = dict(partner=partner, dataset=info.name, version=info.version, epoch=info.epoch)
    t = peer_tag_tables.c
    if info.oprf_mode not in (oprf.MODE_OPRF, oprf.MODE_VOPRF) or (
            info.oprf_mode == oprf.MODE_VOPRF and not is_valid_element(info.public_key)):
        raise PartnerError(partner, "announced an unsupported OPRF mode or an invalid public key")
    with ctx.engine.connect() as conn:
        pinned = conn.execute(select(t.public_key, t.oprf_mode).where(
            t.partner == partner, t.dataset == info.name, t.epoch == info.epoch)).first()
        row = conn.execute(select(peer_tag_tables).where(
            t.partner == partner, t.dataset == info.name, t.version == info.version,
            t.epoch == info.epoch)).first()
    if pinned is not None and (pinned.public_key != info.public_key or pinned.oprf_mode != info.oprf_mode):
        raise PartnerError(partner, f"presents a different key for {info.name!r} epoch {info.epoch} "
                           "than it did before (inconsistent key); refusing to query it")
    if row is not None and row.digest == info.tag_table_digest:
        return CachedTable(row.id, partner, info.name, info.version, info.epoch,
                           row.tag_length, row.row_count)
    if row is not None:
        raise PartnerError(partner, f"tag table of {info.name!r} version {info.version} changed "
                           "under the same version number; refusing it (report this to the partner)")
    request = pb.SyncTagTableRequest(dataset=info.name, version=info.version, epoch=info.epoch)
    digest, chunks, count, header = hashlib.sha256(), [], 0, None
    tlen = info.tag_length
    try:
        for msg in stub.SyncTagTable(request, timeout=ctx.config.grpc.deadline_seconds):
            if msg.WhichOneof("body") == "header":
                header = msg.header
                continue
            if header is None or len(msg.tags) % tlen:
                raise PartnerError(partner, "sent a malformed tag table")
            digest.update(msg.tags)
            chunks.append(msg.tags)
            count += len(msg.tags) // tlen
            progress("sync", count, info.row_count)
    except grpc.RpcError as exc:
        raise _rpc_error(partner, exc) from None
    if (header is None or header.tag_table_digest != info.tag_table_digest or count != info.row_count
            or digest.digest() != info.tag_table_digest or header.tag_length != tlen):
        raise PartnerError(partner, "tag table does not match its announced digest and size")
    tags = np.frombuffer(b"".join(chunks), dtype=f"S{tlen}")
    if len(tags) > 1 and not bool(np.all(tags[1:] > tags[:-1])):
        raise PartnerError(partner, "tag table is not strictly sorted; refusing it")
    with ctx.engine.begin() as conn:
        table_id = conn.execute(insert(peer_tag_tables).values(
            **key, tag_length=tlen, row_count=count, digest=info.tag_table_digest,
            public_key=info.public_key, oprf_mode=info.oprf_mode,
            fetched_at=datetime.now(timezone.utc))).inserted_primary_key[0]
        if chunks:
            conn.execute(insert(peer_tag_chunks), [
                {"table_id": table_id, "seq": i, "tags": c} for i, c in enumerate(chunks)])
    return CachedTable(table_id, partner, info.name, info.version, info.epoch, tlen, count)


_loaded: dict[tuple[str, int], np.ndarray] = {}  # tag tables this process has read, newest last


def load_tags(ctx: NodeContext, table: CachedTable) -> np.ndarray:
    """The sorted tags of a cached table (kept in memory for the next query of this process)."""
    key = (ctx.config.storage_url, table.id)
    if key not in _loaded:
        with ctx.engine.connect() as conn:
            blobs = conn.execute(select(peer_tag_chunks.c.tags).where(
                peer_tag_chunks.c.table_id == table.id).order_by(peer_tag_chunks.c.seq)).scalars().all()
        while len(_loaded) >= 4:
            _loaded.pop(next(iter(_loaded)))
        _loaded[key] = np.frombuffer(b"".join(blobs), dtype=f"S{table.tag_length}")
    return _loaded[key]


def match_tags(asked: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Membership of each asked tag in the sorted table: O(m log n), no re-sort of the table."""
    if len(table) == 0:
        return np.zeros(len(asked), dtype=bool)
    pos = np.searchsorted(table, asked).clip(max=len(table) - 1)
    return table[pos] == asked


@dataclass
class MembershipResult:
    query_id: str
    partner: str
    dataset: str
    version: int
    epoch: int
    matched: np.ndarray  # bool per input, in input order
    seconds: float


def membership(ctx: NodeContext, partner: str, dataset: str, purpose: str,
               inputs: Sequence[bytes], progress: Progress = _noop) -> MembershipResult:
    """Which of `inputs` (encoded identifiers) are in the partner's dataset.

    Raises:
        PartnerError: unreachable partner, refusal (with the partner's reason), a partner
            that dies mid-query, or a malformed answer. The query is logged either way.
    """
    if not inputs:
        raise ValueError("nothing to ask: no valid identifier in the input")
    started = time.perf_counter()
    cfg = ctx.config
    record = QueryRecord(query_id=str(uuid.uuid4()), role="asker", asker=cfg.node.id,
                         answerer=partner, kind="membership", dataset=dataset, purpose=purpose,
                         elements=len(inputs))
    try:
        channel = partner_channel(ctx, partner)
    except PartnerError as exc:
        record.reason = str(exc)
        record.write(ctx.engine)
        raise
    try:
        stub = pb_grpc.MembershipStub(channel)
        info = dataset_info(stub, partner, dataset, cfg.grpc.deadline_seconds)
        record.version, record.epoch = info.version, info.epoch
        table = sync_tag_table(ctx, stub, partner, info, progress)
        tags = _evaluate(ctx, stub, partner, record, info, inputs, progress)
        matched = match_tags(np.frombuffer(tags, dtype=f"S{table.tag_length}"), load_tags(ctx, table))
        record.outcome, record.matched = "answered", int(matched.sum())
        return MembershipResult(record.query_id, partner, dataset, info.version, info.epoch,
                                matched, time.perf_counter() - started)
    except PartnerError as exc:
        record.outcome = "refused" if exc.code in _REFUSALS else "failed"
        record.reason = str(exc)
        raise
    except BaseException as exc:
        record.outcome, record.reason = "aborted", type(exc).__name__
        raise
    finally:
        record.write(ctx.engine)


_REFUSALS = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND,
             grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
             grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.RESOURCE_EXHAUSTED}


def _evaluate(ctx, stub, partner, record: QueryRecord, info, inputs, progress) -> bytes:
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
            purpose=record.purpose, total_elements=n, kind=pb.QUERY_KIND_MEMBERSHIP)))
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
                                                       resp.batch.elements, info.tag_length))
                    progress("query", b, n)
            elif body == "proof" and verifiable:
                seq = resp.proof.seq
                if seq not in pending or seq != len(finals):
                    raise PartnerError(partner, "sent a proof for no pending batch")
                evaluated, picked = pending.pop(seq)
                a, b = bounds[seq]
                finals.append(pool.submit_finalize(inputs[a:b], blinds.pop(seq), evaluated,
                                                   info.tag_length, mode, resp.proof.proof,
                                                   info.public_key, picked))
                progress("query", b, n)
            elif body == "summary":
                if resp.summary.elements_evaluated != n or len(finals) != len(bounds) or pending:
                    raise PartnerError(partner, "summary does not match the query")
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
            raise _rpc_error(partner, exc) from None
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
