"""Grants and policy per partner: what each partner may ask of each dataset, edited with
the config schema's validation and applied live; and what it has used of its quotas and
differential-privacy budget.

An edit goes the way an edit of the file by hand goes, without the hand: the grant is
validated (node/core/config.DatasetGrant, then the whole config), written into the
config file atomically with a backup (node/runtime/config_file.py), and put in force by
the reload a SIGHUP runs (`request_reload`, node/runtime/live_config.py), which ledgers
the new policy (`policy_changed`) with the console user as its actor. A reload that
refuses the file puts the backup back, so the file and the policy in force agree.
Usage is what admission counts (node/policy/checks.py), as /metrics shows it.
"""
from __future__ import annotations

import threading
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from node.console import grant_form
from node.console.admin_common import Flash, actor_of, words
from node.console.pages import render
from node.core.config import ConfigError
from node.core.service_config import Role
from node.http.auth import Authenticator, Principal
from node.runtime.context import NodeContext

BASE = "/console/admin/grants"
FIELD_WORDS = {
    "zh": {"purposes": "用途与法律依据", "kinds": "允许的查询类型", "predicate_columns": "条件查询可用的列",
           "label_attributes": "可返回的标签属性", "aggregate_columns": "可汇总或分组的列",
           "threshold_column": "阈值比较列", "min_elements": "每次查询最少元素数", "max_elements": "每次查询最多元素数",
           "min_counting_elements": "计数类查询最少元素数", "daily_elements": "日配额（滚动 24 小时）",
           "monthly_elements": "月配额（滚动 30 天）", "epoch_elements": "每个密钥周期配额",
           "min_group_size": "最小发布分组", "dp_epsilon": "每次查询的差分隐私 ε", "dp_budget": "每个密钥周期的 ε 预算",
           "exact_small_counts": "允许发布精确的小计数", "bulk_trusts_partner_software": "批量求交：信任对方节点软件",
           "kind.membership": "成员核验", "kind.labeled": "带标签核验", "kind.predicate": "条件核验",
           "kind.cardinality": "交集计数", "kind.aggregate": "汇总统计", "kind.threshold": "阈值核验", "kind.bulk": "批量求交"},
    "en": {"purposes": "Purposes and legal basis", "kinds": "Query kinds allowed", "predicate_columns": "Columns predicates may use",
           "label_attributes": "Attributes labels may open", "aggregate_columns": "Columns aggregates may sum or group by",
           "threshold_column": "Threshold column", "min_elements": "Smallest query (elements)",
           "max_elements": "Largest query (elements)", "min_counting_elements": "Smallest counting query (elements)",
           "daily_elements": "Daily quota (rolling 24 h, elements)", "monthly_elements": "Monthly quota (rolling 30 days, elements)",
           "epoch_elements": "Quota per key epoch (elements)", "min_group_size": "Smallest group released",
           "dp_epsilon": "DP epsilon per query", "dp_budget": "DP budget per key epoch (total epsilon)",
           "exact_small_counts": "Release exact small counts", "bulk_trusts_partner_software": "Bulk: trust the partner's node software",
           "kind.membership": "membership", "kind.labeled": "labeled", "kind.predicate": "predicate",
           "kind.cardinality": "cardinality", "kind.aggregate": "aggregate", "kind.threshold": "threshold", "kind.bulk": "bulk"},
}
WORDS = words(FIELD_WORDS, {
    "zh": {"gr.partners": "合作方", "gr.partner": "合作方", "gr.granted": "已授权的数据集", "gr.none": "未授权",
           "gr.edit": "编辑授权", "gr.add": "新增授权", "gr.save": "校验并生效", "gr.usage": "配额与预算使用情况",
           "gr.window": "统计口径", "gr.used": "已用", "gr.limit": "上限", "gr.no_limit": "不限",
           "gr.window.daily": "近 24 小时", "gr.window.monthly": "近 30 天", "gr.window.epoch": "本密钥周期",
           "gr.dp": "差分隐私预算", "gr.no_dp": "未启用差分隐私", "gr.no_epoch": "尚未生成密钥（无已登记版本）",
           "gr.purposes_hint": "每行一个用途：用途代码 | 法律依据，例如 flexible-worker-deposit | 《住房公积金管理条例》第二十条",
           "gr.list_hint": "多个列名以逗号分隔；留空表示不开放。", "gr.empty_default": "单位均为元素（被查询的人数）；留空表示不限或采用默认值。",
           "gr.comments": "保存时将重写配置文件（{path}），文件中的注释不会保留；原文件另存为 .bak 备份。",
           "gr.invalid": "授权未通过校验，未作任何修改：", "gr.applied": "已生效：{dataset} 对 {partner} 的授权已更新并记入账本（策略摘要 {digest}）。",
           "gr.unchanged": "未作修改：提交的授权与现行授权相同。", "gr.refused": "节点拒绝了新配置，已恢复原文件：",
           "gr.not_applied": "未能生效，已恢复原文件：", "gr.file_differs": "注意：",
           "gr.warning_bulk": "批量求交只在对方节点软件诚实时安全。", "gr.grant_on": "{dataset} 的授权",
           "gr.quota_col": "配额", "gr.revoke": "撤销授权", "gr.revoked": "已撤销 {partner} 对 {dataset} 的授权并记入账本（策略摘要 {digest}）。",
           "gr.confirm_revoke": "确定撤销 {partner} 对 {dataset} 的授权？撤销后其查询将立即被拒绝。", "gr.g.use": "用途与查询类型", "gr.g.columns": "开放的列",
           "gr.g.size": "查询规模与配额", "gr.g.privacy": "隐私保护", "gr.epoch_now": "当前密钥周期：{epoch}"},
    "en": {"gr.partners": "Partners", "gr.partner": "Partner", "gr.granted": "Datasets granted", "gr.none": "not granted",
           "gr.edit": "Edit grant", "gr.add": "Add a grant", "gr.save": "Validate and apply", "gr.usage": "Quota and budget use",
           "gr.window": "Window", "gr.used": "Used", "gr.limit": "Limit", "gr.no_limit": "no limit",
           "gr.window.daily": "last 24 hours", "gr.window.monthly": "last 30 days", "gr.window.epoch": "this key epoch",
           "gr.dp": "Differential-privacy budget", "gr.no_dp": "no differential privacy",
           "gr.no_epoch": "no key yet (no version registered)",
           "gr.purposes_hint": "One purpose a line: code | legal basis, e.g. flexible-worker-deposit | Housing Provident Fund Regulations, art. 20",
           "gr.list_hint": "Column names separated by commas; empty: none.", "gr.empty_default": "In elements (people asked about); empty: no limit, or the default.",
           "gr.comments": "Saving rewrites the config file ({path}); its comments are not kept. The previous file is kept as .bak.",
           "gr.invalid": "The grant did not validate; nothing was changed:",
           "gr.applied": "Applied: the grant of {dataset} to {partner} is in force and ledgered (policy {digest}).",
           "gr.unchanged": "Nothing changed: the grant submitted is the one in force.",
           "gr.refused": "The node refused the new config; the previous file was put back:",
           "gr.not_applied": "Not applied; the previous file was put back:", "gr.file_differs": "Note:",
           "gr.warning_bulk": "Bulk is secure only while the partner's node software is honest.",
           "gr.grant_on": "Grant on {dataset}", "gr.quota_col": "Quota", "gr.revoke": "Revoke grant",
           "gr.revoked": "Revoked the grant of {dataset} to {partner}; ledgered (policy {digest}).",
           "gr.confirm_revoke": "Revoke the grant of {dataset} to {partner}? Its queries are refused from now on.", "gr.g.use": "Purposes and query kinds",
           "gr.g.columns": "Columns opened", "gr.g.size": "Query size and quotas", "gr.g.privacy": "Privacy", "gr.epoch_now": "Current key epoch: {epoch}"},
})


def usage(ctx: NodeContext, partner: str) -> dict:
    """Per dataset granted to `partner`: its use of the grant (node/policy/usage.py)."""
    from node.policy.usage import all_use
    with ctx.engine.connect() as conn:
        return {u.dataset: u for u in all_use(conn, ctx.config, ctx.clock.now(), partner)}


def install(app: FastAPI, ctx: NodeContext, auth: Authenticator) -> None:
    admin = auth.require(Role.ADMIN)
    flash = Flash()

    @app.get(BASE, include_in_schema=False)
    def partners(request: Request, principal: Principal = Depends(admin)):
        cfg = ctx.config
        rows = [(p, [d.name for d in cfg.datasets if any(g.partner == p.id for g in d.grants)], usage(ctx, p.id))
                for p in cfg.partners]
        return render(request, "admin_grants.html", principal, words=WORDS, rows=rows)

    def partner_page(request: Request, principal: Principal, partner: str, *, status: int = 200,
                     editing: str | None = None, fields: dict | None = None, problems=None,
                     failure: tuple[str, str] | None = None, applied: dict | None = None) -> Response:
        from node.runtime.admin_log import policy_digest
        from node.runtime.live_config import file_warning
        cfg = ctx.config
        try:
            p = cfg.partner(partner)
        except ConfigError:
            raise HTTPException(status_code=404, detail=f"partner {partner!r} is not configured") from None
        forms = []
        for d in cfg.datasets:
            grant = next((g for g in d.grants if g.partner == partner), None)
            shown = fields if editing == d.name and fields is not None else grant_form.shown(grant)
            forms.append((d.name, grant is not None, shown))
        return render(request, "admin_partner.html", principal, words=WORDS, status_code=status, partner=p,
                      forms=forms, usage=usage(ctx, partner), editing=editing, problems=problems or [],
                      failure=failure, applied=applied, kinds=grant_form.KINDS, flags=grant_form.FLAGS,
                      config_path=str(ctx.config_path or ""),
                      file_warning=file_warning(policy_digest(cfg), ctx.config_path))

    @app.get(BASE + "/{partner}", include_in_schema=False)
    def partner_grants(request: Request, partner: str, principal: Principal = Depends(admin),
                       done: str = ""):
        return partner_page(request, principal, partner, applied=flash.take(principal.name, done) if done else None)

    async def edit(request: Request, principal: Principal, partner: str, dataset: str, fields: dict | None):
        from starlette.concurrency import run_in_threadpool
        if ctx.config.dataset(dataset) is None or partner not in {p.id for p in ctx.config.partners}:
            raise HTTPException(status_code=404, detail="no such dataset or partner in the node config")
        outcome = await run_in_threadpool(_apply_grant, ctx, partner, dataset, fields, actor_of(principal))
        if outcome[0] in ("invalid", "failed"):
            kind, detail = outcome
            return partner_page(request, principal, partner, status=400 if kind == "invalid" else 409,
                                editing=dataset, fields=fields,
                                problems=detail if kind == "invalid" else None,
                                failure=detail if kind == "failed" else None)
        message = {"dataset": dataset, "digest": outcome[1][:12],
                   "outcome": "revoked" if fields is None else outcome[0]}
        query = urlencode({"done": flash.put(principal.name, message), "outcome": message["outcome"]})
        return RedirectResponse(f"{BASE}/{partner}?{query}#grant-{dataset}", status_code=303)

    @app.post(BASE + "/{partner}/{dataset}", include_in_schema=False)
    async def save_grant(request: Request, partner: str, dataset: str, principal: Principal = Depends(admin)):
        return await edit(request, principal, partner, dataset, grant_form.submitted(await request.form()))

    @app.post(BASE + "/{partner}/{dataset}/revoke", include_in_schema=False)
    async def revoke_grant(request: Request, partner: str, dataset: str, principal: Principal = Depends(admin)):
        return await edit(request, principal, partner, dataset, None)


_one_edit = threading.Lock()  # an edit and its reload, then the next (one request file at a time)


def _apply_grant(ctx: NodeContext, partner: str, dataset: str, fields: dict | None, actor: str):
    """Write the grant of the form (`fields`; None: revoke it) and put it in force.

    Returns ("applied"|"unchanged", policy digest), ("invalid", [(field, message)]) or
    ("failed", (word key, message))."""
    with _one_edit:
        return _edit_and_reload(ctx, partner, dataset, fields, actor)


def _edit_and_reload(ctx: NodeContext, partner: str, dataset: str, fields: dict | None, actor: str):
    from node.runtime import config_file, live_config
    if ctx.config_path is None:
        return "failed", ("gr.not_applied", "this node was not started from a config file")
    try:
        if fields is None:
            config_file.remove_grant(ctx.config_path, ctx.config, dataset, partner)
        else:
            kept = config_file.raw_grant(ctx.config_path, dataset, partner)
            grant, problems = grant_form.to_grant(partner, fields, kept)
            if problems:
                return "invalid", problems
            config_file.write_grant(ctx.config_path, ctx.config, dataset, grant)
    except config_file.GrantInvalid as exc:
        return "invalid", exc.problems
    except ConfigError as exc:
        return "failed", ("gr.not_applied", str(exc))
    try:
        status = live_config.request_reload(ctx.config, ctx.config_path, timeout=60, actor=actor)
    except live_config.ReloadError as exc:
        config_file.restore_backup(ctx.config_path)
        return "failed", ("gr.not_applied", str(exc))
    if not status.get("ok"):
        config_file.restore_backup(ctx.config_path)
        return "failed", ("gr.refused", str(status.get("message", "")))
    return str(status.get("outcome")), str(status.get("policy_digest", ""))
