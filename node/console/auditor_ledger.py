"""The auditor's ledger pages: browse and filter entries, open one with its inclusion proof
verified, compare two heads by a consistency proof, and check a pasted proof.

The ledger is read in-process (ctx.ledger, as node/ledger/http.py serves it to the API);
every proof is computed by the ledger and then verified here by protocols/merkle against a
head whose signature and key certification are checked too (audit_checks.py). The head a
page showed is remembered in this browser's session (a cookie holding the signed head), so
"the last head I saw" can later be compared with the current one: if the node had rewritten
its history in between, the consistency proof would fail against the remembered root.
Bad input (an index beyond the ledger, sizes the wrong way round, garbage hex) is answered
with a page that says what is wrong, never a server error.
"""
from __future__ import annotations

import json
from datetime import datetime, time, timezone
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from sqlalchemy import select

from node.core.errors import InvalidInput
from node.console.audit_checks import check_consistency, check_given_inclusion, check_head, check_inclusion, \
    parse_hashes
from node.console.audit_words import WORDS
from node.console.pages import language, menu_item, render, translator
from node.core.service_config import Role
from node.http.auth import Authenticator, Principal
from node.ledger import canonical
from node.ledger.anchor import current_head
from node.ledger.entries import WITNESS_VERDICTS, decode
from node.ledger.log import EntryFilter, LedgerError
from node.ledger.signing import SignedTreeHead
from node.ledger.tables import ledger_entries, ledger_heads
from node.policy.querylog import OUTCOMES
from node.runtime.context import NodeContext

PAGE = 50
SEEN_COOKIE = "sq_audit_head"
FILTERS = ("type", "partner", "dataset", "purpose", "outcome", "since", "until")
TYPES = ("query", "admin", "witness")
ENTRY_OUTCOMES = (*OUTCOMES, "admitted", *WITNESS_VERDICTS)


class BadInput(InvalidInput, ValueError):
    """A parameter the page cannot use; the message is shown to the auditor."""


def local_time(value: str, zone: str) -> str:
    """An RFC 3339 UTC time as the console's local wall-clock time."""
    try:
        return canonical.parse_time(value).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, canonical.CanonicalError):
        return value


def whole(value: str | None, name: str, *, least: int = 0) -> int | None:
    """A whole-number parameter ('' or None: absent)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 18 or int(text) < least:
        raise BadInput(f"{name}: a whole number from {least} is expected")
    return int(text)


def day_bound(value: str, zone: str, *, end: bool) -> str | None:
    """A YYYY-MM-DD date as the first (or last) second of that day in `zone`, in UTC."""
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise BadInput(f"{value[:20]!r} is not a date (YYYY-MM-DD)") from None
    moment = datetime.combine(day, time(23, 59, 59) if end else time(), ZoneInfo(zone))
    return canonical.rfc3339(moment.astimezone(timezone.utc))


def remembered_head(request: Request, node: str) -> SignedTreeHead | None:
    """The signed head this browser session was last shown (None if absent or unreadable)."""
    try:
        size, root, moment, signature = request.cookies.get(SEEN_COOKIE, "").split(".")
        return SignedTreeHead(node, int(size), bytes.fromhex(root), moment, bytes.fromhex(signature))
    except (ValueError, TypeError, canonical.CanonicalError):
        return None


def remember(response: Response, head: SignedTreeHead, secure: bool) -> Response:
    value = f"{head.size}.{head.root.hex()}.{head.time}.{head.signature.hex()}"
    response.set_cookie(SEEN_COOKIE, value, httponly=True, secure=secure, samesite="strict", path="/console/audit")
    return response


def summary(entry, t) -> str:
    if entry.type == "query":
        return t("s.query", role=t("role." + entry.role), phase=t("phase." + entry.phase), dataset=entry.dataset,
                 version=entry.version, elements=f"{entry.elements:,}", purpose=entry.purpose)
    if entry.type == "witness":
        return t("s.witness", size=f"{entry.head.size:,}")
    action = t("a." + entry.action)  # an action without a translation shows its code
    return f"{entry.action if action.startswith('a.') else action} · {entry.subject}"


def signed_head_at(ctx: NodeContext, size: int) -> SignedTreeHead | None:
    h = ledger_heads.c
    with ctx.engine.connect() as conn:
        row = conn.execute(select(ledger_heads).where(h.size == size).order_by(h.id.desc()).limit(1)).first()
    return None if row is None else SignedTreeHead(row.node, row.size, row.root, row.time, row.signature)


def recent_head_sizes(ctx: NodeContext, count: int = 60) -> list[int]:
    """Sizes of the latest signed heads, largest first (choices for a consistency check)."""
    h = ledger_heads.c
    with ctx.engine.connect() as conn:
        return list(conn.execute(select(h.size).distinct().order_by(h.size.desc()).limit(count)).scalars())


def install(app: FastAPI, ctx: NodeContext, auth: Authenticator) -> None:
    # Long by design: the routes below are short closures over the context and the roles;
    # this function is their list, in the order a reader meets them on the page.
    auditor = auth.require(Role.AUDITOR)
    for path, zh, en in (("/console/audit/ledger", "账本查阅", "Ledger"),
                         ("/console/audit/consistency", "一致性证明", "Consistency proof"),
                         ("/console/audit/check", "核验证明", "Check a proof")):
        menu_item(path, {"zh": zh, "en": en}, Role.AUDITOR)

    def zone() -> str:
        return ctx.config.service.console_timezone

    def page(request: Request, principal: Principal, template: str, status: int = 200, **context) -> Response:
        return render(request, template, principal, words=WORDS, status_code=status, zone=zone(),
                      when=lambda v: local_time(v, zone()), **context)

    @app.get("/console/audit/ledger", include_in_schema=False)
    def ledger_page(request: Request, principal: Principal = Depends(auditor), before: str = ""):
        chosen = {name: request.query_params.get(name, "").strip()[:64] for name in FILTERS}
        context = {"chosen": chosen, "types": TYPES, "outcomes": ENTRY_OUTCOMES,
                   "partners": [ctx.config.node.id] + [p.id for p in ctx.config.partners],
                   "datasets": [d.name for d in ctx.config.datasets],
                   "purposes": sorted({c for d in ctx.config.datasets for g in d.grants for c in g.purpose_codes}),
                   "size": ctx.ledger.size(), "rows": [], "older": None, "error": None}
        try:
            where = EntryFilter(*(chosen[n] or None for n in FILTERS[:5]),
                                day_bound(chosen["since"], zone(), end=False),
                                day_bound(chosen["until"], zone(), end=True))
            if where.type is not None and where.type not in TYPES:
                raise BadInput(f"type: one of {', '.join(TYPES)}")
            c = ledger_entries.c
            query = select(c.idx, c.entry).where(*where.clauses()).order_by(c.idx.desc()).limit(PAGE + 1)
            last = whole(before, "before", least=1)
            if last is not None:
                query = query.where(c.idx < last)
            with ctx.engine.connect() as conn:
                found = conn.execute(query).all()
        except (BadInput, canonical.CanonicalError) as exc:
            context["error"] = {"text": _t(request)("f.bad"), "detail": str(exc)}
            return page(request, principal, "audit_ledger.html", 400, **context)
        t = _t(request)
        for idx, data in found[:PAGE]:
            try:
                entry = decode(data)
                context["rows"].append({"index": idx, "entry": entry, "summary": summary(entry, t),
                                        "outcome": _outcome(entry), "partner": _partner(entry)})
            except canonical.CanonicalError as exc:  # a damaged row is shown, not hidden
                context["rows"].append({"index": idx, "entry": None, "summary": str(exc), "outcome": "",
                                        "partner": ""})
        if len(found) > PAGE:
            context["older"] = found[PAGE - 1][0]
        context["query"] = {k: v for k, v in chosen.items() if v}
        return page(request, principal, "audit_ledger.html", **context)

    @app.get("/console/audit/ledger/{index}", include_in_schema=False)
    def entry_page(request: Request, index: str, principal: Principal = Depends(auditor)):
        try:
            idx = whole(index, "index")
        except BadInput:
            return page(request, principal, "audit_entry.html", 400, problem=_t(request)("e.bad_index"))
        found = list(ctx.ledger.entries(idx, idx + 1))
        if not found:
            return page(request, principal, "audit_entry.html", 404,
                        problem=_t(request)("e.missing", index=f"{idx:,}"))
        data = found[0][1]
        head = current_head(ctx.ledger)
        try:
            entry = decode(data)
            fields = [(k, v) for k, v in entry.to_dict().items() if k not in ("v",)]
        except canonical.CanonicalError as exc:
            entry, fields = None, [("damaged", str(exc))]
        check = check_inclusion(ctx, idx, data, head)
        query_id = getattr(entry, "query_id", None)
        related = [i for i, _ in ctx.ledger.find_query(query_id) if i != idx] if query_id else []
        response = page(request, principal, "audit_entry.html", index=idx, entry=entry, fields=fields,
                        related=related,
                        raw=data.decode("utf-8", "replace"), check=check, head=check_head(ctx, head),
                        shown=_shown, check_link=_check_link(idx, head, check))
        return remember(response, head, ctx.config.http.tls)

    @app.get("/console/audit/consistency", include_in_schema=False)
    def consistency_page(request: Request, principal: Principal = Depends(auditor), first: str = "",
                         second: str = ""):
        current = current_head(ctx.ledger)
        seen = remembered_head(request, current.node)
        context = {"current": check_head(ctx, current), "seen": seen, "result": None, "problem": None,
                   "sides": [], "first": first, "second": second,
                   "heads": recent_head_sizes(ctx)}
        try:
            size1 = whole(first, _t(request)("c.first"), least=1)
            size2 = whole(second, _t(request)("c.second"), least=1)
        except BadInput as exc:
            context["problem"] = {"text": _t(request)("c.bad_input"), "detail": str(exc)}
            return remember(page(request, principal, "audit_consistency.html", 400, **context), current,
                            ctx.config.http.tls)
        if size2 is None:
            size2 = current.size
        if size1 is None and seen is not None and 1 <= seen.size <= size2:
            size1 = seen.size
        if size1 is None:  # nothing seen in this session yet: the signed head before the last one
            size1 = next((s for s in context["heads"] if 1 <= s < size2), None)
        context["first"], context["second"] = size1 or "", size2
        if size1 is not None and size2 >= 1:
            sides = [_side(ctx, size1, seen, current), _side(ctx, size2, None, current)]
            context["sides"] = sides
            if any(s["problem"] for s in sides):
                detail = next(s["problem"] for s in sides if s["problem"])
                context["problem"] = {"text": _t(request)("c.bad", why=_t(request)("why.range")), "detail": detail}
            else:
                context["result"] = check_consistency(ctx, (size1, sides[0]["root"]), (size2, sides[1]["root"]))
        status = 400 if context["problem"] else 200
        return remember(page(request, principal, "audit_consistency.html", status, **context), current,
                        ctx.config.http.tls)

    @app.get("/console/audit/check", include_in_schema=False)
    def check_page(request: Request, principal: Principal = Depends(auditor), index: str = "", size: str = "",
                   leaf: str = "", root: str = "", proof: str = ""):
        given = {"index": index, "size": size, "leaf": leaf, "root": root, "proof": proof[:20_000]}
        if not any(v.strip() for v in given.values()):
            return page(request, principal, "audit_check.html", given=given, result=None, problem=None)
        try:
            idx, n = whole(index, "index"), whole(size, "size", least=1)
            leaf_hash, root_hash = _one_hash(leaf, "leaf"), _one_hash(root, "root")
            if idx is None or n is None:
                raise BadInput("index and size are both needed")
            result = check_given_inclusion(leaf_hash, idx, n, _hashes(proof, "proof"), root_hash)
        except BadInput as exc:
            problem = {"text": _t(request)("k2.input"), "detail": str(exc)}
            return page(request, principal, "audit_check.html", 400, given=given, result=None, problem=problem)
        return page(request, principal, "audit_check.html", given=given, result=result, problem=None)


def _hashes(text: str, name: str) -> list[bytes]:
    try:
        return parse_hashes(text)
    except ValueError as exc:
        raise BadInput(f"{name}: {exc}") from None


def _one_hash(text: str, name: str) -> bytes:
    found = _hashes(text, name)
    if len(found) != 1:
        raise BadInput(f"{name}: exactly one hash (64 hexadecimal digits) is expected")
    return found[0]


def _t(request: Request):
    return translator(language(request), WORDS)


def _outcome(entry) -> str:
    return getattr(entry, "outcome", None) or getattr(entry, "verdict", None) or ""


def _partner(entry) -> str:
    return getattr(entry, "partner", None) or ""


def _shown(value) -> str:
    """A field value as text: nested objects as canonical-looking JSON."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True)
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _check_link(index: int, head: SignedTreeHead, check) -> str:
    from urllib.parse import urlencode
    return "/console/audit/check?" + urlencode({
        "index": index, "size": head.size, "leaf": (check.leaf or b"").hex(), "root": head.root.hex(),
        "proof": "\n".join(p.hex() for p in check.proof)})


def _side(ctx: NodeContext, size: int, seen: SignedTreeHead | None, current: SignedTreeHead) -> dict:
    """The root to compare at `size`: the head this browser saw, a signed head, or a computed root."""
    if size > current.size:
        return {"size": size, "root": None, "source": None, "head": None,
                "problem": f"tree size {size:,} is beyond the ledger's size {current.size:,}"}
    if seen is not None and seen.size == size:
        return {"size": size, "root": seen.root, "source": "seen", "head": check_head(ctx, seen), "problem": None}
    head = current if current.size == size else signed_head_at(ctx, size)
    if head is not None:
        return {"size": size, "root": head.root, "source": "signed", "head": check_head(ctx, head), "problem": None}
    try:
        return {"size": size, "root": ctx.ledger.root(size), "source": "computed", "head": None, "problem": None}
    except LedgerError as exc:
        return {"size": size, "root": None, "source": None, "head": None, "problem": str(exc)}


