"""Witnessing rounds: every partner's log is witnessed, whichever side knows the address.

Between two partners, the one that knows the other's address (the fund centre, in the
shipped configs/) does all of it over its own connection, each round:
1. push: it asks the partner to check and cosign *its* head (`ask_cosignature`), and
   keeps the partner's ledger-key certification with the cosignature (witness_pki.py);
2. pull: it fetches the partner's head (and a consistency proof from the last head it
   accepted), checks and cosigns it (`Witness.observe`);
3. exchange: it hands the partner the cosignatures it made of the partner's heads (so the
   partner serves them with its head, with its key's certification), and both compare what they cosigned for third
   parties and the conflicts they hold (ledger/witness_gossip.py).
So an agency that does not know the fund centre's address is still witnessed by it, and
still witnesses it. Conflicts raise alarms (ledger/alarms.py); `status_lines` is what
`serve` and `shuqiao witness status` print.
"""
from __future__ import annotations

import logging
from pathlib import Path

import grpc

from node.core.config import NodeConfig
from node.core.errors import InvalidRequest, OutOfRange
from node.runtime.context import NodeContext
from node.ledger.alarms import ROUNDS
from node.transport.channels import Backoff, retrying, transient
from node.transport.status import refused_as

log = logging.getLogger(__name__)


def _pull(witness, partner: str, key, source) -> str:
    from node.ledger.sources import SourceError
    head = source.tree_head()
    seen = witness.observe(partner, key, head)
    if seen.verdict == "need_proof":
        try:
            proof = source.consistency_proof(seen.need_proof_from, head.size)
        except SourceError as exc:
            if transient(exc):  # unreachable is not unprovable: retried, never judged
                raise
            proof = []  # a log that cannot prove its growth is judged on no proof
        seen = witness.observe(partner, key, head, seen.need_proof_from, proof)
    return seen.verdict


def _prover(ctx: NodeContext, reachable: dict[str, grpc.Channel]):
    from node.ledger.grpc_service import pb, pb_grpc

    def prove(log_node: str, first: int, second: int) -> list[bytes] | None:
        channel = reachable.get(log_node)
        if channel is None:
            return None
        try:
            answer = pb_grpc.LedgerStub(channel).GetConsistencyProof(
                pb.GetConsistencyProofRequest(first=first, second=second), timeout=30)
        except grpc.RpcError as exc:
            if refused_as(exc, OutOfRange, InvalidRequest):
                raise LookupError("the log has no such tree") from None
            return None
        return list(answer.hashes)
    return prove


# A round runs in the background: a few attempts, so a partner that is restarting is
# still witnessed this round, without holding up the other partners' for long.
ROUND_BACKOFF = Backoff(attempts=4, first=1.0, cap=4.0)


def _witness_one(ctx: NodeContext, witness, partner: str, reachable: dict[str, grpc.Channel]) -> str:
    """Push this node's head to `partner` and pull the partner's; "pushed/pulled" verdicts."""
    from node.transport.channels import partner_channel
    from node.ledger import pin_partner_key
    from node.ledger.grpc_service import GrpcLogSource, ask_certified_cosignature
    from node.ledger.witness_pki import keep_certification
    channel = partner_channel(ctx, partner)
    reachable[partner] = channel
    source = GrpcLogSource(channel, partner, timeout=30)
    key = pin_partner_key(ctx.engine, partner, source.public_key(), now=ctx.clock.now())
    answer, certification = ask_certified_cosignature(ctx.ledger, channel)
    if isinstance(answer, tuple) and answer[0] == "stale":
        pushed = "stale"  # the partner had already seen a newer head of ours
    elif isinstance(answer, tuple):
        pushed = answer[0]
        log.error("partner %s refuses to cosign this node's ledger head: it reports %s",
                  partner, pushed)
    else:
        witness.store_cosignature(answer, key)
        keep_certification(ctx.engine, partner, key,  # attached, else as published
                           certification or source.key_certification(), now=ctx.clock.now())
        pushed = "cosigned"
    return f"{pushed}/{_pull(witness, partner, key, source)}"


def witness_partners(ctx: NodeContext, *, backoff: Backoff = ROUND_BACKOFF) -> dict[str, str]:
    """One witnessing round; returns partner -> "pushed/pulled" verdicts or an error name.

    Each step is safe to repeat, so a partner that is transiently unreachable is tried
    again after a pause (node/transport/channels.py) before the round gives up on it.
    """
    from node.ledger.grpc_service import exchange_notes
    from node.ledger.witness import Witness
    witness = Witness(ctx.ledger)
    results: dict[str, str] = {}
    reachable: dict[str, grpc.Channel] = {}
    for partner in ctx.config.partners:
        if not partner.address:
            continue
        try:
            results[partner.id] = retrying(lambda: _witness_one(ctx, witness, partner.id, reachable),
                                           what=f"witnessing {partner.id}", backoff=backoff)
            ROUNDS.labels(partner=partner.id, result="ok").inc()
        except Exception as exc:  # an unreachable partner must not stop the round
            results[partner.id] = type(exc).__name__
            ROUNDS.labels(partner=partner.id, result="failed").inc()
            log.warning("witnessing %s failed: %s", partner.id, type(exc).__name__,
                        extra={"partner": partner.id})
    prove = _prover(ctx, reachable)
    for partner_id, channel in reachable.items():
        try:
            retrying(lambda: exchange_notes(witness, partner_id, channel, prove),
                     what=f"comparing witness notes with {partner_id}", backoff=backoff)
        except Exception as exc:
            log.warning("comparing witness notes with %s failed: %s", partner_id, type(exc).__name__,
                        extra={"partner": partner_id})
    return results


def status_lines(ctx: NodeContext) -> list[str]:
    """One line per open ledger conflict (an alarm), or one line saying there is none."""
    from node.ledger.alarms import OPEN
    from node.ledger.witness import Witness
    open_conflicts = Witness(ctx.ledger).open_conflicts()
    OPEN.set(len(open_conflicts))
    if not open_conflicts:
        return ["witnessing: no open ledger conflict"]
    return [f"LEDGER ALARM: open {c.kind} of the ledger of {c.partner} (tree sizes {c.first.size} "
            f"and {c.second.size}, recorded {c.detected_at:%Y-%m-%d %H:%M:%S}); resolve with "
            f"`shuqiao witness resolve --partner {c.partner} --root <hex>` once the true history "
            "is established" for c in open_conflicts]


def report_status(ctx: NodeContext, previous: list[str] | None) -> list[str]:
    """Log the status lines when they change (ERROR while an alarm is open); returns them."""
    lines = status_lines(ctx)
    if lines != previous:
        for line in lines:
            (log.error if line.startswith("LEDGER ALARM") else log.info)("status: %s", line)
    return lines


def coverage_warnings(configs: list[NodeConfig]) -> list[str]:
    """Logs that would have no witness, given the configs of (part of) a federation.

    Two nodes witness each other when both list each other as partners and at least one
    knows the other's address. With one config alone, only what it shows is judged.
    """
    by_id = {c.node.id: c for c in configs}
    warnings: list[str] = []
    for cfg in configs:
        witnesses = set()
        for p in cfg.partners:
            other = by_id.get(p.id)
            if other is None:
                if p.address:
                    witnesses.add(p.id)  # we reach it; whether it lists us is its config's business
                continue
            lists_us = any(q.id == cfg.node.id for q in other.partners)
            reach = p.address or any(q.id == cfg.node.id and q.address for q in other.partners)
            if lists_us and reach:
                witnesses.add(p.id)
            elif not lists_us:
                warnings.append(f"{cfg.node.id} lists {p.id} as a partner, but {p.id} does not "
                                f"list {cfg.node.id}: they cannot witness each other")
        unknown = [p.id for p in cfg.partners if p.id not in by_id and not p.address]
        if not witnesses and not unknown:
            warnings.append(f"the ledger of {cfg.node.id} would have no witness: no partner "
                            "that it reaches, or that reaches it")
        elif not witnesses:
            warnings.append(f"the ledger of {cfg.node.id} is witnessed only if "
                            f"{', '.join(unknown)} {'lists' if len(unknown) == 1 else 'list'} its address")
    return warnings


def load_configs(paths: list[Path]) -> list[NodeConfig]:
    from node.core.config import load_config
    return [load_config(p) for p in paths]
