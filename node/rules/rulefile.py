"""The rule file: TOML, checked by a strict pydantic schema, then every rule parsed.

```toml
[rules]
flexible_worker_subsidy = 'hrss.flexible_workers[缴费月数 >= 6] and not fund.depositors and age < 35'
young_graduate_worker = 'edu.graduates and hrss.flexible_workers[缴费月数 >= 6] and age < 35'

[purposes]
# one purpose code stated to every partner the rule asks (the form of earlier files) ...
flexible_worker_subsidy = "flexible-worker-deposit"
# ... or one per partner: each agency grants its own purposes, so a rule over two
# agencies states to each the purpose that agency granted.
young_graduate_worker = { edu = "graduate-housing-support", hrss = "flexible-worker-deposit" }
```

`[rules]` (required, at least one) maps a rule name to its text (node/rules/language.py).
`[purposes]` maps a rule name to a purpose code, or to a table of partner id -> purpose
code. A rule that asks a partner needs a purpose for it (checked before anything is
asked); local sources (this node's own datasets) need none. Nothing else is allowed: an
unknown table, a purpose for a rule that does not exist, or a per-partner purpose for a
partner the rule never asks is refused with its location, so a typo cannot silently
leave a partner without its purpose.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from node.core.config import NodeId, PurposeCode, read_toml
from node.rules.language import Rule, RuleError, parse_rule, plan

RuleName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


class RuleFileSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    rules: dict[RuleName, str] = Field(min_length=1)
    purposes: dict[RuleName, PurposeCode | dict[NodeId, PurposeCode]] = Field(default_factory=dict)


@dataclass(frozen=True)
class RuleFile:
    rules: dict[str, Rule]
    purposes: dict[str, str | dict[str, str]]

    def purpose(self, rule: str, partner: str) -> str | None:
        """The purpose code `rule` states to `partner`, or None if the file gives none."""
        given = self.purposes.get(rule)
        return given.get(partner) if isinstance(given, dict) else given


_FRIENDLY = {  # pydantic error types whose own wording would puzzle an operator
    "extra_forbidden": "unknown table or key; a rule file has [rules] and [purposes] only",
    "dict_type": "must be a table",
}


def _message(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid rule file:"]
    for err in exc.errors():
        loc = [str(x) for x in err["loc"]]
        if loc == ["rules"]:
            msg = "the file needs a non-empty [rules] table"
        elif loc[-1:] == ["[key]"]:
            msg = "a rule name is lowercase letters, digits and '_', starting with a letter"
        elif len(loc) == 2 and loc[0] == "rules" and err["type"] == "string_type":
            msg = "the rule must be a string"
        elif loc[:1] == ["purposes"] and len(loc) > 2:
            # the union's two alternatives each report; say what a purpose may be once
            msg = "a purpose code, or a table of partner id = purpose code"
            loc = loc[:2]
        else:
            msg = _FRIENDLY.get(err["type"], err["msg"])
        line = f"  {'.'.join(x for x in loc if x != '[key]') or '(top level)'}: {msg}"
        if line not in lines:
            lines.append(line)
    return "\n".join(lines)


def parse_rule_file(doc: dict, source: str = "rule file") -> RuleFile:
    """Validate a parsed TOML document and parse its rules.

    Raises:
        RuleError: the schema (every violation with its location), a rule's syntax (with
            its position), or a purpose for a rule or partner that does not exist.
    """
    try:
        schema = RuleFileSchema.model_validate(doc)
    except ValidationError as exc:
        raise RuleError(_message(exc, source)) from None
    rules = {name: parse_rule(name, text) for name, text in schema.rules.items()}
    for name, given in schema.purposes.items():
        if name not in rules:
            raise RuleError(f"{source}: [purposes] names {name!r}, which is not in [rules]")
        if isinstance(given, dict):
            asked = {q.partner for q in plan(rules[name])}
            stray = sorted(set(given) - asked)
            if stray:
                raise RuleError(f"{source}: [purposes] gives {', '.join(map(repr, stray))} a purpose, "
                                f"but the rule never asks it (it asks {', '.join(sorted(asked))})",
                                rule=name)
    return RuleFile(rules, {k: (dict(v) if isinstance(v, dict) else v) for k, v in schema.purposes.items()})


def load_rules(toml_text: str) -> dict[str, Rule]:
    """The rules of a rule file's text (its purposes are checked, not returned)."""
    import tomllib
    try:
        doc = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"not valid TOML: {exc}") from None
    return parse_rule_file(doc).rules


def load_rule_file(path: Path) -> RuleFile:
    """Read and check a rule file (see the module's docstring for its format)."""
    return parse_rule_file(read_toml(path, "rule file", RuleError), str(path))
