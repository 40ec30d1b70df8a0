"""The asking side of cardinality queries (protocols/cardinality.py over gRPC).

The partner (agency) counts; this node adds its own dummy matches d' (a discrete
Laplace at `query.cardinality_epsilon`, shifted and clamped into [0, D']) so that the
count the agency sees, c + d', is blurred too, and subtracts d' from the release.
"""
from __future__ import annotations

import math
import queue
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from protocols import cardinality as card
from protocols.dp import DiscreteLaplace

from node.asker.membership import accept_receipt
from node.transport.channels import partner_channel
from node.core.progress import Progress, no_progress
from node.runtime.context import NodeContext
from node.core.errors import REFUSALS, PartnerError, rpc_error
from node.asker.peer_tables import dataset_info
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc

DELTA = 1e-9          # P(the own noise is clamped)
MAX_PADDING = 4096    # the agencies' cap on D'


@dataclass
class CardinalityResult:
    query_id: str
    count: int          # |X ∩ Y| + noise (exact when the agency's policy sets no epsilon)
    epsilon: float      # differential privacy the agency charged; 0.0 for an exact count
    noise_bound: int    # the noise lies in [-bound, +bound]
    seconds: float


def own_noise(epsilon: float, rows: int) -> tuple[int, int]:
    """(d', D'): this node's dummy matches and padding, D' below the partner's row count."""
    laplace = DiscreteLaplace(1, epsilon)            # one asked person changes c by 1
    shift = math.ceil(laplace.scale * math.log(1.0 / DELTA))
    shift = max(0, min(shift, (rows - 1) // 2, MAX_PADDING // 2))
    return min(max(shift + laplace.sample(), 0), 2 * shift), 2 * shift


def cardinality(ctx: NodeContext, partner: str, dataset: str, purpose: str,
                inputs: Sequence[bytes], progress: Progress = no_progress) -> CardinalityResult:
    """Only the size of the intersection of `inputs` with the partner's dataset."""
    if not inputs:
        raise ValueError("nothing to ask: no valid identifier in the input")
    started = time.perf_counter()
    cfg = ctx.config
    record = QueryRecord(query_id=str(uuid.uuid4()), role="asker", asker=cfg.node.id,
                         answerer=partner, kind="cardinality", dataset=dataset, purpose=purpose,
                         elements=len(inputs))
    outbox: queue.Queue = queue.Queue()
    call = None
    try:
        stub = pb_grpc.MembershipStub(partner_channel(ctx, partner))
        info = dataset_info(stub, partner, dataset, cfg.grpc.deadline_seconds)
        record.version, record.epoch = info.version, info.epoch
        dummies, padding = own_noise(cfg.query.cardinality_epsilon, info.row_count)
        # The padding's places are elements the agency counts over: it admits and
        # charges them like the asked ones, so this record counts them too.
        record.elements = len(inputs) + padding
        fund = card.FundCentreCount(list(inputs), dummies, padding)
        point, blinded = fund.request(mapper=ctx.pool.map)
        step = 32 * cfg.grpc.max_batch_elements
        outbox.put(pb.CardinalityRequest(header=pb.QueryHeader(
            query_id=record.query_id, dataset=dataset, version=info.version, epoch=info.epoch,
            purpose=purpose, total_elements=len(inputs) + padding, kind=pb.QUERY_KIND_CARDINALITY)))
        outbox.put(pb.CardinalityRequest(open=pb.CardinalityOpen(point=point, padding=padding)))
        for seq, i in enumerate(range(0, len(blinded), step)):
            outbox.put(pb.CardinalityRequest(batch=pb.ElementBatch(seq=seq, elements=blinded[i:i + step])))
        outbox.put(pb.CardinalityRequest(finish=pb.Finish()))
        key, y_parts, summary = None, [], None
        call = stub.Cardinality(iter(outbox.get, None), timeout=cfg.grpc.deadline_seconds)
        for resp in call:
            body = resp.WhichOneof("body")
            if body == "key" and key is None:
                key = resp.key
            elif body == "rows" and key is not None:
                y_parts.append(resp.rows)
                got = sum(map(len, y_parts)) // 32
                progress("rows", got, key.rows)
                if got == key.rows:
                    reply = fund.reply(key.key, b"".join(y_parts), mapper=ctx.pool.map)
                    for i in range(0, len(reply), step):
                        outbox.put(pb.CardinalityRequest(rows=reply[i:i + step]))
                    outbox.put(pb.CardinalityRequest(finish=pb.Finish()))
                elif got > key.rows:
                    raise card.InvalidMessage()
            elif body == "summary" and summary is None:
                summary = resp.summary
            elif body != "accepted":
                raise card.InvalidMessage()
        if summary is None:
            raise PartnerError(partner, "the cardinality answer ended early or is malformed")
        count = fund.count(summary.count)
        record.outcome, record.matched = "answered", count
        record.epsilon_micro = summary.epsilon_micro
        accept_receipt(ctx, partner, record, summary)
        return CardinalityResult(record.query_id, count, summary.epsilon_micro / 1e6,
                                 summary.noise_bound, time.perf_counter() - started)
    except card.InvalidMessage:
        exc = PartnerError(partner, "sent an invalid cardinality answer")
        record.outcome, record.reason = "failed", str(exc)
        raise exc from None
    except grpc.RpcError as exc:
        err = rpc_error(partner, exc)
        record.outcome = "refused" if err.code in REFUSALS else "failed"
        record.reason = str(err)
        raise err from None
    except PartnerError as exc:
        record.outcome = "refused" if exc.code in REFUSALS else "failed"
        record.reason = str(exc)
        raise
    except BaseException as exc:
        record.outcome, record.reason = "aborted", type(exc).__name__
        raise
    finally:
        outbox.put(None)
        if call is not None:
            call.cancel()
        record.write(ctx)
