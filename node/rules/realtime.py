"""Real-time checks: one applicant, decided while they wait, by a rule or one partner query.

A business system sends one applicant (the identifier and the row's other columns) and
either the name of a rule in the service's rule file (`[service] rules_file`) or a
single partner query (partner, dataset, membership or a predicate, purpose). The
applicant goes through the same path as a file of applicants (`runner.decide`): local
terms first, each partner asked only if the decision still depends on it, the decision
in three-valued logic with the query ids that decided it. A single partner query is the
one-term rule ``partner.dataset[predicate]``, so it is decided, explained and recorded
the same way.

What makes one applicant fast is what the asking side keeps between queries: the
partner's tag table is synced once per dataset version and key epoch and held in memory
(node/asker/streams.py, `ctx.caches.peer_tables`), the channel to the partner stays
open (`ctx.channels`), the partner's description of the dataset is reused for
`[service] listing_cache_seconds` (`ctx.caches.peer_listings`; a version no longer served
is asked again under a fresh one), a local source's members are read once per version
(`ctx.caches.local_members`) and the rule file is parsed once per change on disk
(`ctx.caches.rule_files`). A check then costs one Evaluate stream per partner asked,
and a ledger entry per query.

Nothing here echoes the identifier: an invalid one is refused with the reason only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from adapters import Applicant, IdType, InvalidIdentifier, encode, normalise

from node.core.errors import InvalidInput
from node.language import predicate as pred
from node.rules.language import RuleError, SourceQuery, parse_rule, plan
from node.rules.rulefile import RuleFile, load_rule_file
from node.rules.runner import decide, rule_of, stated_purposes
from node.runtime.context import NodeContext

# The applicant row's identifier column: a name no caller's column can have (callers'
# names hold no control character), so a rule's local columns never meet it.
_ID_COLUMN = "\x00identifier"
QUERY_RULE = "partner_query"  # the name a single partner query is decided under


class InvalidApplicant(InvalidInput):
    """The applicant's identifier does not validate; `reason` never quotes it."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the identifier is not valid: {reason}")
        self.reason = reason


class RulesNotConfigured(InvalidInput):
    """The node has no usable rule file: `[service] rules_file` is unset, unreadable or
    invalid (the node's configuration to fix, not the request)."""


class UnknownRule(RuleError):
    """No rule of that name in the service's rule file."""


@dataclass(frozen=True)
class CheckQuery:
    """One query a check made: its source term, id, this node's ledger position and the
    partner's verified receipt (None for this node's own datasets, or a missing receipt)."""
    source: str
    partner: str
    query_id: str
    ledger_index: int | None
    receipt: object
    cited: bool  # among the queries the decision rests on


@dataclass(frozen=True)
class CheckResult:
    rule: str               # the rule's name, or QUERY_RULE
    text: str               # the rule's (or query's) text
    eligible: bool | None   # None: undetermined (the explanation says why)
    explanation: str        # in the language asked for
    query_ids: list[str]    # the queries the decision rests on, in the rule's written order
    queries: list[CheckQuery]


def service_rules(ctx: NodeContext) -> RuleFile:
    """The rule file of `[service] rules_file`, parsed once per change on disk.

    Raises:
        RulesNotConfigured: no rule file configured, or it cannot be read or is invalid
            (the message names the file and, for an invalid one, where).
    """
    configured = ctx.config.service.rules_file
    if configured is None:
        raise RulesNotConfigured("this node has no rule file: set [service] rules_file in its config")
    path = ctx.config.path(configured)
    try:
        stat = path.stat()
        return ctx.caches.rule_files.get_or_build((str(path), stat.st_mtime_ns, stat.st_size),
                                                  lambda: load_rule_file(Path(path)))
    except OSError:
        raise RulesNotConfigured("the node's rule file cannot be read; check [service] rules_file") from None
    except RuleError as exc:
        raise RulesNotConfigured(f"the node's rule file is not valid: {exc}") from None


def rule_purposes(ctx: NodeContext, rule_file: RuleFile, name: str) -> dict[str, str]:
    """partner -> the purpose rule `name` states there (for scope checks, before asking).

    Raises:
        UnknownRule: no such rule. RuleError: a partner it asks has no purpose.
    """
    if name not in rule_file.rules:
        raise UnknownRule(f"no rule {name!r} in the rule file (rules: {', '.join(sorted(rule_file.rules))})")
    return stated_purposes(rule_file, name, ctx.config.node.id)


def query_rule(partner: str, dataset: str, purpose: str, *, predicate: str | None = None) -> RuleFile:
    """A single partner query as the one-term rule ``partner.dataset[predicate]``.

    Raises:
        RuleError: the predicate does not parse (with its position).
    """
    canonical = None
    if predicate is not None:
        try:
            canonical = pred.to_canonical(pred.parse(predicate))
        except pred.ParseError as exc:
            raise RuleError(f"the predicate is not valid: {exc.message}", position=exc.position) from None
    text = SourceQuery(partner, dataset, canonical).text
    return RuleFile({QUERY_RULE: parse_rule(QUERY_RULE, text)}, {QUERY_RULE: purpose})


def applicant(identifier: str, columns: dict[str, str], id_type: IdType) -> Applicant:
    """The one row of a check, its identifier normalised.

    Raises:
        InvalidApplicant: the identifier does not validate (the reason, never the value).
    """
    try:
        normalised = normalise(id_type, identifier)
    except InvalidIdentifier as exc:
        raise InvalidApplicant(exc.reason) from None
    return Applicant(1, {**columns, _ID_COLUMN: identifier}, normalised, encode(id_type, normalised))


def check(ctx: NodeContext, rule_file: RuleFile, name: str, identifier: str, columns: dict[str, str],
          *, id_type: IdType = IdType.CN_RESIDENT_ID, lang: Literal["zh", "en"] = "zh") -> CheckResult:
    """Decide one applicant by rule `name` of `rule_file` (or a `query_rule`).

    Raises:
        InvalidApplicant, UnknownRule, RuleError: before anything is asked.
        PartnerError: a partner refused, failed or could not be reached (the query is
            in the query log and the ledger either way).
    """
    rule_of(rule_file, name)  # an unknown rule fails before the identifier is looked at
    row = applicant(identifier, columns, id_type)
    run = decide(ctx, rule_file, name, [row], list(row.values), id_column=_ID_COLUMN,
                 id_type=id_type, lang=lang, listing_max_age=ctx.config.service.listing_cache_seconds)
    ((_, _, eligible, explanation, cited),) = run.decisions
    sources = {q.text: q for q in plan(rule_file.rules[name])}
    queries = [CheckQuery(text, sources[text].partner, qid, _ledger_index(ctx, qid),
                          run.receipts.get(qid), qid in cited)
               for text, qid in run.queries.items()]
    return CheckResult(name, run.text, eligible, explanation, cited, queries)


def _ledger_index(ctx: NodeContext, query_id: str) -> int | None:
    """The query's last entry in this node's ledger (its completed entry)."""
    found = ctx.ledger.find_query(query_id)
    return found[-1][0] if found else None
