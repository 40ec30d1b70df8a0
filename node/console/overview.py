"""The overview page: what every role sees first — this node, its partners, its datasets, its ledger."""
from __future__ import annotations

from fastapi import Depends, FastAPI, Request

from node.console.pages import render
from node.core.service_config import Role
from node.http.auth import Authenticator, Principal
from node.runtime.context import NodeContext

WORDS = {
    "zh": {"overview.node": "本节点", "overview.partners": "合作节点", "overview.datasets": "数据集",
           "overview.ledger": "账本", "overview.ledger_size": "账本条目数", "overview.dataset": "名称",
           "overview.version": "当前版本", "overview.rows": "行数", "overview.partner": "节点",
           "overview.address": "地址", "overview.no_version": "未登记"},
    "en": {"overview.node": "This node", "overview.partners": "Partners", "overview.datasets": "Datasets",
           "overview.ledger": "Ledger", "overview.ledger_size": "Ledger entries", "overview.dataset": "Name",
           "overview.version": "Current version", "overview.rows": "Rows", "overview.partner": "Node",
           "overview.address": "Address", "overview.no_version": "not registered"},
}


def install(app: FastAPI, ctx: NodeContext, auth: Authenticator) -> None:
    anyone = auth.require(Role.OPERATOR, Role.ADMIN, Role.AUDITOR)

    @app.get("/console/", include_in_schema=False)
    def overview(request: Request, principal: Principal = Depends(anyone)):
        from node.datasets.registration import current_version
        cfg = ctx.config
        with ctx.engine.connect() as conn:
            datasets = [(d.name, current_version(conn, d.name)) for d in cfg.datasets]
        return render(request, "overview.html", principal, words=WORDS, node=cfg.node,
                      partners=cfg.partners, datasets=datasets, ledger_size=ctx.ledger.size())
