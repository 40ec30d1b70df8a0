"""What a partner offers this node: its datasets, and this node's own grant on each.

The partner's ListDatasets answer (node/agency/membership.py) describes each dataset it
serves to us and, with it, our grant as it enforces it now: purposes with their legal
basis, kinds, predicate columns, label attributes, query sizes, our quotas used and
left (rolling day, rolling 30 days, key epoch) and the DP budget left. An older partner
sends no grant; the view then says so rather than inventing limits.
"""
from __future__ import annotations

from node.asker.streams import call
from node.core.errors import PartnerError
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.runtime.context import NodeContext
from node.transport.channels import partner_channel


def list_offers(ctx: NodeContext, partner: str, timeout: float = 30.0) -> list[pb.DatasetInfo]:
    """The partner's listing for this node.

    Raises:
        PartnerError: the partner is not configured with an address, unreachable or refused.
    """
    from node.transport.channels import retrying
    stub = pb_grpc.MembershipStub(partner_channel(ctx, partner))
    # A listing changes nothing at the partner: one that fails transiently is asked again.
    listing = retrying(lambda: call(partner, stub.ListDatasets, pb.ListDatasetsRequest(), timeout),
                       what=f"listing the datasets of {partner}")
    return list(listing.datasets)


def askable_partners(ctx: NodeContext) -> list[str]:
    """Partners this node knows how to reach (those it can ask)."""
    return [p.id for p in ctx.config.partners if p.address]


def _quota(q: pb.QuotaUse) -> dict:
    return {"window": q.window, "used": q.used,
            "limit": q.limit if q.HasField("limit") else None,
            "left": q.left if q.HasField("left") else None}


def _privacy(g: pb.CallerGrant) -> dict | None:
    if not g.HasField("privacy"):
        return None
    p = g.privacy
    return {"epsilon_per_query": p.epsilon_per_query, "spent": p.spent,
            "budget": p.budget if p.HasField("budget") else None,
            "left": p.left if p.HasField("left") else None}


def offer(info: pb.DatasetInfo) -> dict:
    """One dataset and our grant on it, as plain data (the CLI's table and the HTTP API)."""
    out = {"dataset": info.name, "version": info.version, "epoch": info.epoch,
           "rows": info.row_count, "id_type": info.id_type,
           "oprf_mode": "voprf" if info.oprf_mode == 1 else "oprf", "kinds": list(info.kinds),
           "grant": None}
    if info.HasField("grant"):
        g = info.grant
        out["grant"] = {
            "purposes": [{"code": p.code, "legal_basis": p.legal_basis} for p in g.purposes],
            "predicate_columns": list(g.predicate_columns),
            "label_attributes": list(g.label_attributes),
            "min_elements": g.min_elements, "max_elements": g.max_elements,
            "min_counting_elements": g.min_counting_elements,
            "quotas": [_quota(q) for q in g.quotas], "privacy": _privacy(g),
            "aggregate_columns": list(g.aggregate_columns),
            "threshold_column": g.threshold_column or None, "min_group_size": g.min_group_size}
    return out


__all__ = ["PartnerError", "askable_partners", "list_offers", "offer"]
