"""The overview page: what every role sees first — partners and whether they answer, datasets,
versions and key epochs, the ledger head and its cosignatures, and the alerts to act on."""
from __future__ import annotations

from fastapi import Depends, FastAPI, Request

from node.console import overview_data as data
from node.console.pages import render
from node.console.partner_status import partner_probes
from node.core.service_config import Role
from node.http.auth import Authenticator, Principal
from node.runtime.context import NodeContext

WORDS = {
    "zh": {"overview.node": "本节点", "overview.asks_only": "仅向本节点查询", "overview.no_address": "未配置地址", "overview.partners": "合作节点", "overview.datasets": "数据集", "overview.datasets_registered": "已登记数据集",
           "overview.ledger": "可验证账本", "overview.ledger_size": "账本条目数", "overview.dataset": "名称",
           "overview.version": "当前版本", "overview.rows": "有效行数", "overview.partner": "节点",
           "overview.address": "地址", "overview.no_version": "未登记", "overview.versions": "版本数",
           "overview.epochs": "密钥轮次", "overview.epoch": "第 {n} 轮，{date} 起", "overview.rotation_due": "应轮换",
           "overview.no_epoch": "尚无密钥", "overview.status": "状态", "overview.answers": "正常应答",
           "overview.down": "无应答", "overview.checking": "检测中", "overview.latency": "响应时间",
           "overview.offered": "可查询数据集", "overview.cert": "证书到期", "overview.online": "合作节点在线",
           "overview.alerts": "告警", "overview.no_alerts": "当前没有需要处理的告警。",
           "overview.bad": "严重", "overview.warn": "注意", "overview.head": "最新签名树头",
           "overview.head_size": "树头大小", "overview.head_time": "签名时间", "overview.root": "根哈希",
           "overview.signature": "签名", "overview.verified": "已验证", "overview.unverified": "验证失败",
           "overview.no_head": "尚未签名", "overview.cosigners": "见证联署", "overview.witnesses": "联署见证节点", "overview.cosigned_latest": "已联署最新树头",
           "overview.no_cosigners": "尚无合作节点联署本节点的树头", "overview.cosigned_up_to": "已联署至大小 {n} 的树头",
           "overview.certs": "证书", "overview.cert_kind": "证书", "overview.cert_subject": "对象",
           "overview.not_after": "有效期至", "overview.days_left": "剩余天数", "overview.jobs_failed": "失败任务（7 天内）",
           "overview.bad_alerts": "严重告警", "overview.warn_alerts": "注意事项",
           "overview.error": "原因", "overview.ms": "{n} 毫秒",
           "cert.node_tls": "本节点 TLS 证书", "cert.ca": "联盟根证书", "cert.ledger_key": "账本签名密钥认证",
           "cert.partner_tls": "合作节点 TLS 证书",
           "alert.cert_expired": "{what}（{name}）已于 {date} 过期，请立即更换。",
           "alert.cert_expiring": "{what}（{name}）将于 {date} 到期（剩余 {days} 天），请及时续期。",
           "alert.quota_theirs": "{partner} 对数据集 {dataset} 的{window}配额已用 {used} / {limit}。",
           "alert.budget_theirs": "{partner} 对数据集 {dataset} 的差分隐私预算已用 {spent} / {budget}。",
           "alert.quota_ours": "本节点在 {partner} 的数据集 {dataset} 上的{window}配额已用 {used} / {limit}。",
           "alert.budget_ours": "本节点在 {partner} 的数据集 {dataset} 上的差分隐私预算已用 {spent} / {budget}。",
           "alert.conflict": "账本冲突：{partner} 的账本出现 {kind}，请核实真实历史后处理。",
           "alert.head_unverified": "本节点大小为 {size} 的树头未通过验证，请检查数据库完整性。",
           "alert.partner_down": "合作节点 {partner} 未在规定时间内应答。",
           "alert.job_failed": "核验任务 {job}（{owner}）失败：{error}",
           "window.day": "日", "window.month": "30 日", "window.epoch": "本轮密钥",
           "window.daily": "日", "window.monthly": "30 日"},
    "en": {"overview.node": "This node", "overview.asks_only": "asks us only", "overview.no_address": "no address here", "overview.partners": "Partners", "overview.datasets": "Datasets", "overview.datasets_registered": "Datasets registered",
           "overview.ledger": "Verifiable ledger", "overview.ledger_size": "Ledger entries", "overview.dataset": "Name",
           "overview.version": "Current version", "overview.rows": "Valid rows", "overview.partner": "Node",
           "overview.address": "Address", "overview.no_version": "not registered", "overview.versions": "Versions",
           "overview.epochs": "Key epochs", "overview.epoch": "epoch {n}, since {date}",
           "overview.rotation_due": "rotation due", "overview.no_epoch": "no key yet", "overview.status": "Status",
           "overview.answers": "answers", "overview.down": "not answering", "overview.checking": "checking",
           "overview.latency": "Response time", "overview.offered": "Datasets offered", "overview.cert": "Certificate ends",
           "overview.online": "Partners answering", "overview.alerts": "Alerts",
           "overview.no_alerts": "Nothing needs attention now.", "overview.bad": "critical", "overview.warn": "notice",
           "overview.head": "Latest signed tree head", "overview.head_size": "Head size", "overview.head_time": "Signed at",
           "overview.root": "Root hash", "overview.signature": "Signature", "overview.verified": "verified",
           "overview.unverified": "does not verify", "overview.no_head": "not signed yet",
           "overview.cosigners": "Witness cosignatures", "overview.witnesses": "Witnesses cosigning",
           "overview.cosigned_latest": "cosigned the latest head",
           "overview.no_cosigners": "No partner has cosigned this node's heads yet",
           "overview.cosigned_up_to": "cosigned heads up to size {n}", "overview.certs": "Certificates",
           "overview.cert_kind": "Certificate", "overview.cert_subject": "Of", "overview.not_after": "Valid until",
           "overview.days_left": "Days left", "overview.jobs_failed": "Failed jobs (7 days)",
           "overview.bad_alerts": "Critical alerts", "overview.warn_alerts": "Notices",
           "overview.error": "Reason", "overview.ms": "{n} ms",
           "cert.node_tls": "This node's TLS certificate", "cert.ca": "Federation CA",
           "cert.ledger_key": "Ledger key certification", "cert.partner_tls": "Partner's TLS certificate",
           "alert.cert_expired": "{what} ({name}) expired on {date}: replace it now.",
           "alert.cert_expiring": "{what} ({name}) expires on {date} ({days} days left): renew it.",
           "alert.quota_theirs": "{partner} has used {used} of {limit} of its {window} quota on {dataset}.",
           "alert.budget_theirs": "{partner} has spent {spent} of its DP budget {budget} on {dataset}.",
           "alert.quota_ours": "This node has used {used} of {limit} of its {window} quota on {partner}'s {dataset}.",
           "alert.budget_ours": "This node has spent {spent} of its DP budget {budget} on {partner}'s {dataset}.",
           "alert.conflict": "Ledger conflict: a {kind} of {partner}'s ledger; establish the true history and resolve it.",
           "alert.head_unverified": "This node's tree head of size {size} does not verify: check the database.",
           "alert.partner_down": "Partner {partner} did not answer in time.",
           "alert.job_failed": "Job {job} ({owner}) failed: {error}",
           "window.day": "daily", "window.month": "30-day", "window.epoch": "per-epoch",
           "window.daily": "daily", "window.monthly": "30-day"},
}


def install(app: FastAPI, ctx: NodeContext, auth: Authenticator) -> None:
    anyone = auth.require(Role.OPERATOR, Role.ADMIN, Role.AUDITOR)

    @app.get("/console/", include_in_schema=False)
    def overview(request: Request, principal: Principal = Depends(anyone)):
        from node.console.pages import language
        cfg = ctx.config
        now = ctx.clock.now()
        probes = partner_probes(ctx)
        ledger = data.ledger(ctx)
        certs, cert_alerts = data.certificates(ctx, probes, now)
        failed, job_alerts = data.failed_jobs(ctx, now)
        alerts = [*data.partner_alerts(probes), *data.ledger_alerts(ctx, ledger), *cert_alerts,
                  *data.budgets(ctx, probes, now), *job_alerts]
        alerts.sort(key=lambda a: a.level != "bad")
        lang = language(request)
        words = WORDS[lang]
        texts = [(a.level, _alert_text(words, a)) for a in alerts]
        return render(request, "overview.html", principal, words=WORDS, node=cfg.node, partners=cfg.partners,
                      probes=probes, datasets=data.datasets(ctx, now), ledger=ledger, certs=certs,
                      alerts=texts, bad_alerts=sum(1 for a in alerts if a.level == "bad"),
                      failed_jobs=failed, now=now,
                      answering=sum(1 for p in probes.values() if p and p.answers))


def _alert_text(words: dict[str, str], alert: data.Alert) -> str:
    values = dict(alert.values)
    if "what" in values:
        values["what"] = words.get(values["what"], values["what"])
    if "window" in values:
        values["window"] = words.get("window." + values["window"], values["window"])
    return words[alert.key].format(**values)
