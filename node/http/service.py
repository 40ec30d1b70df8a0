"""The service API's real-time check: `POST /v1/checks` (operator role).

A business system asks about one applicant while they wait: by a rule of the node's rule
file, or by a single partner query (node/rules/realtime.py). What the token may do is
checked before anything leaves the node: the rule must be among the token's rules, and
every purpose the check would state to a partner among its purposes (403 otherwise, and
no partner hears of it). Every POST carries an `Idempotency-Key`: a retry gets the first
answer and its query ids, without asking any partner again. Answers and errors never
repeat the identifier.
"""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from adapters import IdType

from node.core.config import DATASET_NAME, NODE_ID, PURPOSE
from node.core.errors import ConfigError, InvalidInput, PartnerError
from node.core.service_config import Role
from node.http.auth import Authenticator, Principal
from node.http.idempotency import HEADER, idempotent, request_digest
from node.runtime.context import NodeContext

MAX_CHECK_BYTES = 64 * 1024  # a check's JSON body (node/http/limits.py refuses more with 413)

_Text = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")]
_Column = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]

_RULE_EXAMPLE = {"identifier": "320402199001011234", "columns": {"age": "34", "申请编号": "A2026-00017"},
                 "rule": "flexible_worker_subsidy", "lang": "zh"}
_QUERY_EXAMPLE = {"identifier": "320402199001011234", "lang": "en",
                  "query": {"partner": "hrss", "dataset": "flexible_workers", "kind": "predicate",
                            "predicate": "缴费月数 >= 6", "purpose": "flexible-worker-deposit"}}


class PartnerQueryIn(BaseModel):
    """One question to one partner: is the applicant in `dataset` (among the rows
    satisfying `predicate`)?"""
    model_config = ConfigDict(extra="forbid")
    partner: Annotated[str, Field(pattern=NODE_ID, description="The partner's node id.")]
    dataset: Annotated[str, Field(pattern=DATASET_NAME, description="The partner's dataset name.")]
    kind: Literal["membership", "predicate"] = "membership"
    predicate: Annotated[str | None, Field(max_length=512, description=(
        "Kind predicate only: the condition on the partner's rows, e.g. `缴费月数 >= 6`."))] = None
    purpose: Annotated[str, Field(pattern=PURPOSE, description="The purpose code stated to the partner.")]

    @model_validator(mode="after")
    def _kind_and_predicate(self):
        if (self.kind == "predicate") != (self.predicate is not None):
            raise ValueError("kind 'predicate' takes a predicate; kind 'membership' takes none")
        return self


class CheckIn(BaseModel):
    """One applicant and what to decide: a rule of the node's rule file, or one partner query."""
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_RULE_EXAMPLE, _QUERY_EXAMPLE]})
    identifier: Annotated[str, StringConstraints(min_length=1, max_length=64), Field(
        description="The applicant's identifier (normalised like a file's: spaces, full-width "
                    "digits and a lowercase x are accepted).")]
    id_type: IdType = IdType.CN_RESIDENT_ID
    columns: Annotated[dict[_Column, _Text], Field(max_length=64, description=(
        "The applicant row's other columns, by name: what the rule's local terms compare "
        "(`age < 35`). A column the rule needs and the row lacks leaves the decision undetermined."))] = {}
    rule: Annotated[str | None, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$",
                                      description="A rule of `[service] rules_file`.")] = None
    query: PartnerQueryIn | None = None
    lang: Literal["zh", "en"] = Field("zh", description="The language of the decision and its explanation.")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.rule is None) == (self.query is None):
            raise ValueError("give exactly one of 'rule' or 'query'")
        return self


class ReceiptOut(BaseModel):
    """The partner's signed receipt: where its own ledger holds the query."""
    partner: str
    ledger_index: int
    tree_size: int
    root: str
    signature: str


class CheckQueryOut(BaseModel):
    source: str = Field(description="The rule's term this query answered, e.g. `hrss.flexible_workers`.")
    partner: str
    query_id: str
    ledger_node: str = Field(description="The node whose ledger `ledger_index` refers to (this one).")
    ledger_index: int | None
    receipt: ReceiptOut | None = Field(description="None for this node's own datasets, or a missing receipt.")
    cited: bool = Field(description="Whether the decision rests on this query.")


class CheckOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "rule": "flexible_worker_subsidy",
        "rule_text": "hrss.flexible_workers[缴费月数 >= 6] and age < 35",
        "eligible": True, "decision": "符合",
        "explanation": "符合条件：在 hrss.flexible_workers[缴费月数 >= 6] 中（查询 6b1f…）；申请人数据 age < 35 成立",
        "query_ids": ["6b1f0c52-3f7e-4a57-9f38-0d6f4b1e2a11"],
        "queries": [{"source": "hrss.flexible_workers[缴费月数 >= 6]", "partner": "hrss",
                     "query_id": "6b1f0c52-3f7e-4a57-9f38-0d6f4b1e2a11", "ledger_node": "fund",
                     "ledger_index": 418, "cited": True,
                     "receipt": {"partner": "hrss", "ledger_index": 977, "tree_size": 978,
                                 "root": "9c2e…", "signature": "51ab…"}}]}]})
    rule: str | None = Field(description="The rule decided by; null for a single partner query.")
    rule_text: str
    eligible: bool | None = Field(description="null: undetermined (the explanation says why).")
    decision: str = Field(description="符合 / 不符合 / 无法判定 (en: eligible / not_eligible / undetermined).")
    explanation: str
    query_ids: list[str] = Field(description="The queries the decision rests on.")
    queries: list[CheckQueryOut] = Field(description="Every query the check made.")


_ERRORS = {
    401: {"description": "No or invalid credentials"},
    403: {"description": "Not the operator role, or the token's scopes do not allow the rule or a purpose"},
    404: {"description": "Unknown rule, partner or partner dataset"},
    413: {"description": "Body larger than 64 KiB"},
    422: {"description": "Invalid body or identifier, or the partner refused the query"},
    428: {"description": "No Idempotency-Key"},
    429: {"description": "This token's rate, or the partner's quota for this node, is used up"},
    502: {"description": "The partner answered wrongly or failed"},
    503: {"description": "The partner cannot be reached, or the node's rule file is missing or invalid"},
}


def service_router(ctx: NodeContext, auth: Authenticator) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["checks"])
    operator = Depends(auth.require(Role.OPERATOR))

    @router.post("/checks", response_model=CheckOut, responses=_ERRORS, summary="Check one applicant now")
    async def create_check(request: Request, body: Annotated[CheckIn, Body()],
                           key: Annotated[str | None, Header(alias=HEADER)] = None,
                           principal: Principal = operator):
        """Decide one applicant by a rule or a single partner query, with the explanation
        and the queries behind the decision (their ids, this node's ledger positions and
        the partners' receipts)."""
        from node.rules.realtime import QUERY_RULE, query_rule, rule_purposes, service_rules
        from node.rules.language import RuleError
        try:
            if body.rule is not None:
                rule_file = service_rules(ctx)
                purposes = rule_purposes(ctx, rule_file, body.rule)
                if not principal.may_run(body.rule):
                    raise HTTPException(403, f"this token may not run rule {body.rule!r}")
                name = body.rule
            else:
                q = body.query
                _known_partner(ctx, q.partner)
                rule_file = query_rule(q.partner, q.dataset, q.purpose, predicate=q.predicate)
                purposes, name = {q.partner: q.purpose}, QUERY_RULE
        except (RuleError, InvalidInput) as exc:
            raise HTTPException(_status(exc), str(exc)) from None
        refused = sorted({p for p in purposes.values() if not principal.may_state(p)})
        if refused:
            raise HTTPException(403, f"this token may not state the purpose {', '.join(map(repr, refused))}")
        digest = request_digest("POST /v1/checks", await request.body())
        return await run_in_threadpool(idempotent, ctx, principal, key, digest,
                                       lambda: _run(ctx, rule_file, name, body))

    return router


def _known_partner(ctx: NodeContext, partner: str) -> None:
    if partner != ctx.config.node.id and partner not in {p.id for p in ctx.config.partners}:
        known = ", ".join(sorted(p.id for p in ctx.config.partners)) or "none"
        raise HTTPException(404, f"no partner {partner!r} in this node's config (partners: {known})")


def _status(exc: Exception) -> int:
    from node.rules.realtime import RulesNotConfigured, UnknownRule
    if isinstance(exc, UnknownRule):
        return 404
    return 503 if isinstance(exc, RulesNotConfigured) else 422  # the node's rule file: not the request


def _run(ctx: NodeContext, rule_file, name: str, body: CheckIn) -> tuple[int, dict]:
    """The check itself (on a worker thread): (status, JSON body) for the idempotency store."""
    from node.jobs.results import Words
    from node.rules.realtime import QUERY_RULE, check
    try:
        result = check(ctx, rule_file, name, body.identifier, dict(body.columns),
                       id_type=body.id_type, lang=body.lang)
    except PartnerError as exc:
        return _partner_status(exc), {"detail": str(exc)}
    except ConfigError as exc:  # a partner without an address: the node's config, not the request
        return 503, {"detail": str(exc)}
    except InvalidInput as exc:
        return _status(exc), {"detail": str(exc)}
    words = Words(body.lang)
    word = {True: "eligible", False: "not_eligible", None: "undetermined"}[result.eligible]
    out = CheckOut(
        rule=None if result.rule == QUERY_RULE else result.rule, rule_text=result.text,
        eligible=result.eligible, decision=words[word], explanation=result.explanation,
        query_ids=result.query_ids,
        queries=[CheckQueryOut(source=q.source, partner=q.partner, query_id=q.query_id,
                               ledger_node=ctx.config.node.id, ledger_index=q.ledger_index,
                               receipt=_receipt(q.receipt), cited=q.cited) for q in result.queries])
    return 200, out.model_dump(mode="json")


def _receipt(receipt) -> ReceiptOut | None:
    if receipt is None:
        return None
    return ReceiptOut(partner=receipt.query.answerer, ledger_index=receipt.index, tree_size=receipt.tree_size,
                      root=receipt.root.hex(), signature=receipt.signature.hex())


def _partner_status(exc: PartnerError) -> int:
    """What a partner's failure means to the business system: its refusal is the
    request's (4xx, with the partner's reason), its absence or breakage is a gateway's."""
    import grpc
    code = exc.code
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return 503
    if code == grpc.StatusCode.NOT_FOUND:
        return 404
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return 429
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS):
        return 422
    return 502
