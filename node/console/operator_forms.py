"""The operator's job form: what it offers the token (its rules, its purposes, what partners
offer this node) and what a submitted form asks for, checked against the same scope."""
from __future__ import annotations

from dataclasses import dataclass, field

from node.console.partner_status import partner_probes
from node.core.errors import InvalidInput, NotPermitted
from node.http.auth import Principal
from node.jobs.targets import QUERY_KINDS, QueryTarget, RuleTarget, check_target, rule_file
from node.runtime.context import NodeContext

ENCODINGS = ("auto", "utf-8", "gb18030")
SELECTIONS = ("all", "intersection", "difference")


@dataclass
class Choices:
    rules: list[tuple[str, str]] = field(default_factory=list)       # (name, text)
    rules_error: str | None = None
    sources: list[dict] = field(default_factory=list)  # partner, dataset, version, kinds, purposes
    purposes: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)


def choices(ctx: NodeContext, principal: Principal) -> Choices:
    """What this token may pick: rules it may run (and whose purposes it may state), and
    the partners' datasets with the purposes it may state there."""
    out = Choices()
    try:
        rules = rule_file(ctx)
        for name, rule in rules.rules.items():
            try:
                check_target(ctx, RuleTarget(name), principal)
            except (NotPermitted, InvalidInput):
                continue
            out.rules.append((name, rule.text))
    except InvalidInput as exc:
        out.rules_error = str(exc)
    for partner, found in partner_probes(ctx).items():
        if found is None or not found.answers:
            out.unreachable.append(partner)
            continue
        for o in found.offers:
            granted = [p["code"] for p in (o.get("grant") or {}).get("purposes", [])]
            purposes = [p for p in granted if principal.may_state(p)]
            kinds = [k for k in o["kinds"] if k in QUERY_KINDS]
            if purposes and kinds:
                out.sources.append({"partner": partner, "dataset": o["dataset"], "version": o["version"],
                                    "rows": o["rows"], "kinds": kinds, "purposes": purposes,
                                    "predicate_columns": (o.get("grant") or {}).get("predicate_columns", [])})
    out.purposes = sorted({p for s in out.sources for p in s["purposes"]})
    out.kinds = [k for k in QUERY_KINDS if any(k in s["kinds"] for s in out.sources)]
    return out


@dataclass
class JobForm:
    """A submitted (or blank) job form; every field a string as posted."""
    mode: str = "rule"
    rule: str = ""
    source: str = ""        # "partner/dataset"
    purpose: str = ""
    kind: str = "membership"
    predicate: str = ""
    select: str = "all"
    id_column: str = "身份证号"
    encoding: str = "auto"
    sheet: str = ""
    auth_column: str = ""
    list_source: str = ""   # a named SQL source of the node instead of an uploaded file

    @classmethod
    def parse(cls, data) -> "JobForm":
        def text(name: str, default: str = "") -> str:
            value = data.get(name, default)
            return value.strip() if isinstance(value, str) else default
        blank = cls()
        return cls(**{name: text(name, getattr(blank, name)) for name in cls.__dataclass_fields__})

    def target(self, principal: Principal) -> RuleTarget | QueryTarget:
        """The job's target, refused if the token's scope does not allow it.

        Raises:
            NotPermitted: a rule or a purpose outside the token's scope.
            InvalidInput: a form that names no target, or an unknown encoding or selection.
        """
        if self.encoding not in ENCODINGS:
            raise InvalidInput(f"encoding is one of {', '.join(ENCODINGS)}")
        if not self.id_column:
            raise InvalidInput("name the column that holds the identifier (身份证号)")
        if self.mode == "rule":
            if not self.rule:
                raise InvalidInput("choose a rule")
            if not principal.may_run(self.rule):
                raise NotPermitted(f"this token may not run rule {self.rule!r}")
            return RuleTarget(self.rule)
        if self.mode != "query":
            raise InvalidInput("choose a rule or a partner query")
        partner, _, dataset = self.source.partition("/")
        if not partner or not dataset:
            raise InvalidInput("choose the partner's dataset to ask")
        if not self.purpose:
            raise InvalidInput("choose the purpose stated to the partner")
        if not principal.may_state(self.purpose):
            raise NotPermitted(f"this token may not state purpose {self.purpose!r}")
        if self.select not in SELECTIONS:
            raise InvalidInput(f"select is one of {', '.join(SELECTIONS)}")
        return QueryTarget(partner, dataset, self.purpose, query_kind=self.kind,
                           predicate=self.predicate or None, select=self.select)
