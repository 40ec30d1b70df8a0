"""The operator's 实时核验 page: one applicant decided while they wait, by a rule or one
partner query, with the same engine as POST /v1/checks (node/rules/realtime.py).

The identifier is never shown back: the answer names the decision, its explanation and
the queries (ids, ledger positions, the partner's receipt) behind it. The token's scope
is enforced here as on the API: a rule it may not run, or a purpose it may not state
(the rule's, to each partner it asks), is refused whatever the form posted.
"""
from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from adapters import IdType

from node.console.operator_forms import choices
from node.console.operator_results import QUERY_REF
from node.console.operator_words import WORDS as JOB_WORDS
from node.console.pages import language, menu_item, render
from node.core.errors import ConfigError, InvalidInput, NotFound, NotPermitted, PartnerError
from node.core.service_config import Role
from node.http.auth import Authenticator, Principal
from node.runtime.context import NodeContext

WORDS = {
    "zh": {**JOB_WORDS["zh"], "check.title": "实时核验",
           "check.hint": "核验一位申请人：身份证号只用于本次核验，页面不会回显。",
           "check.identifier": "申请人身份证号", "check.applicant": "申请人", "check.new": "核验一位申请人", "check.columns": "其他列（每行一项，格式：列名=值）",
           "check.columns_hint": "规则用到的本地列，例如 age=30。", "check.submit": "立即核验",
           "check.result": "核验结论", "check.eligible": "符合", "check.not_eligible": "不符合",
           "check.undetermined": "无法判定", "check.queries": "本次查询", "check.query_id": "查询编号",
           "check.ledger_index": "本节点账本位置", "check.receipt": "对方回执", "check.receipt_ok": "已验证",
           "check.no_receipt": "无（本节点数据）", "check.source": "查询项", "check.cited": "判定依据",
           "check.rule_columns": "规则 {rule} 用到的本地列：{columns}", "check.partner_failed": "合作节点未能作答：{error}",
           "check.bad_columns": "第 {n} 行应写成 列名=值"},
    "en": {**JOB_WORDS["en"], "check.title": "Real-time check",
           "check.hint": "Check one applicant: the identifier is used for this check only and is not shown back.",
           "check.identifier": "Applicant's identifier", "check.applicant": "Applicant",
           "check.new": "Check one applicant", "check.columns": "Other columns (one per line: name=value)",
           "check.columns_hint": "Local columns the rule reads, e.g. age=30.", "check.submit": "Check now",
           "check.result": "Decision", "check.eligible": "eligible", "check.not_eligible": "not eligible",
           "check.undetermined": "undetermined", "check.queries": "Queries made", "check.query_id": "Query id",
           "check.ledger_index": "Ledger position here", "check.receipt": "Partner's receipt",
           "check.receipt_ok": "verified", "check.no_receipt": "none (this node's data)", "check.source": "Term",
           "check.cited": "decided on", "check.rule_columns": "Rule {rule} reads the local columns: {columns}",
           "check.partner_failed": "A partner could not answer: {error}",
           "check.bad_columns": "line {n} should read name=value"},
}


def _columns(text: str, t) -> dict[str, str]:
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise InvalidInput(t("check.bad_columns", n=n))
        out[name.strip()] = value.strip()
    return out


def install(app: FastAPI, ctx: NodeContext, auth: Authenticator) -> None:
    # Long by design: the routes below are short closures over the context and the roles;
    # this function is their list, in the order a reader meets them on the page.
    operator = auth.require(Role.OPERATOR)
    menu_item("/console/ops/check", {"zh": "实时核验", "en": "Real-time check"}, Role.OPERATOR)

    def page(request: Request, principal: Principal, *, form: dict | None = None, result=None,
             error: str | None = None, status: int = 200) -> Response:
        from node.rules.realtime import service_rules
        rule_columns = []
        try:
            rules = service_rules(ctx)
            rule_columns = [(n, sorted(r.local_columns)) for n, r in rules.rules.items()
                            if r.local_columns and principal.may_run(n)]
        except InvalidInput:
            pass
        explanation = QUERY_REF.sub("", result.explanation) if result else ""  # the table lists each query
        return render(request, "ops_check.html", principal, words=WORDS, status_code=status,
                      choices=choices(ctx, principal), form=form or {"mode": "rule"}, result=result,
                      explanation=explanation,
                      error=error, rule_columns=rule_columns)

    @app.get("/console/ops/check", include_in_schema=False)
    def check_page(request: Request, principal: Principal = Depends(operator)):
        return page(request, principal)

    @app.post("/console/ops/check", include_in_schema=False)
    async def check(request: Request, principal: Principal = Depends(operator)):
        from node.rules.realtime import QUERY_RULE, check as decide, query_rule, rule_purposes, service_rules
        data = await request.form()
        form = {k: (v.strip() if isinstance(v, str) else "") for k, v in data.items()
                if k not in ("csrf", "identifier")}  # the identifier is never kept for the page
        lang = language(request)

        def t(key: str, **values) -> str:
            return WORDS[lang][key].format(**values)
        try:
            if form.get("mode") == "query":
                partner, _, dataset = form.get("source", "").partition("/")
                purpose = form.get("purpose", "")
                if not partner or not dataset or not purpose:
                    raise InvalidInput("choose the partner's dataset and the purpose")
                if not principal.may_state(purpose):
                    raise NotPermitted(f"this token may not state purpose {purpose!r}")
                ctx.config.partner(partner)
                predicate = form.get("predicate") or None if form.get("kind") == "predicate" else None
                rules, name = query_rule(partner, dataset, purpose, predicate=predicate), QUERY_RULE
            else:
                name = form.get("rule", "")
                if not principal.may_run(name):
                    raise NotPermitted(f"this token may not run rule {name!r}")
                rules = service_rules(ctx)
                for partner, purpose in rule_purposes(ctx, rules, name).items():
                    if not principal.may_state(purpose):
                        raise NotPermitted(f"rule {name!r} states purpose {purpose!r} to {partner}, "
                                           "which this token may not state")
            identifier = data.get("identifier")
            if not isinstance(identifier, str) or not identifier.strip():
                raise InvalidInput(t("check.identifier"))
            result = decide(ctx, rules, name, identifier.strip(), _columns(form.get("columns", ""), t),
                            id_type=IdType.CN_RESIDENT_ID, lang=lang)
        except NotPermitted as exc:
            return page(request, principal, form=form, error=str(exc), status=403)
        except PartnerError as exc:
            return page(request, principal, form=form, error=t("check.partner_failed", error=str(exc)), status=502)
        except (InvalidInput, NotFound, ConfigError, ValueError) as exc:  # a rule, identifier or partner
            return page(request, principal, form=form, error=str(exc), status=400)
        return page(request, principal, form=form, result=result)
