"""A dataset grant as the console's form shows it, and the form's fields back to a grant.

The form shows the fields an agency admin sets day to day; the grant's other keys
(label padding, DP delta, preparations per day, …) are kept as the config file has them.
An empty field means the schema's default (no quota, no DP); a field that does not parse
is reported by name, like a schema violation, and nothing is written.
"""
from __future__ import annotations

from node.core.config import DatasetGrant, QueryKindName

LISTS = ("predicate_columns", "label_attributes", "aggregate_columns")
INTS = ("min_elements", "max_elements", "min_counting_elements", "daily_elements", "monthly_elements",
        "epoch_elements", "min_group_size")
FLOATS = ("dp_epsilon", "dp_budget")
TEXTS = ("threshold_column",)
FLAGS = ("exact_small_counts", "bulk_trusts_partner_software")
KINDS = tuple(k.value for k in QueryKindName)


def shown(grant: DatasetGrant | None) -> dict:
    """The form's field values (text) for `grant` (None: a new grant, defaults shown)."""
    if grant is None:
        defaults = DatasetGrant.model_fields
        fields = {n: _text(defaults[n].get_default(call_default_factory=True)) for n in (*INTS, *FLOATS, *TEXTS)}
        fields.update({n: "" for n in LISTS}, purposes="", kinds=["membership"])
        fields.update({n: False for n in FLAGS})
        return fields
    fields = {n: _text(getattr(grant, n)) for n in (*INTS, *FLOATS, *TEXTS)}
    fields.update({n: ", ".join(getattr(grant, n)) for n in LISTS})
    fields.update({n: getattr(grant, n) for n in FLAGS})
    fields["purposes"] = "\n".join(f"{p.code} | {p.legal_basis}" if p.legal_basis else p.code
                                   for p in grant.purposes)
    fields["kinds"] = [k.value for k in grant.kinds]
    return fields


def submitted(form) -> dict:
    """The form's field values as posted (a Starlette FormData), for showing them again."""
    fields = {n: str(form.get(n, "")).strip() for n in (*INTS, *FLOATS, *TEXTS, *LISTS)}
    fields["purposes"] = str(form.get("purposes", "")).strip()
    fields["kinds"] = [k for k in form.getlist("kinds") if k in KINDS]
    fields.update({n: form.get(n) in ("on", "true", "1") for n in FLAGS})
    return fields


def to_grant(partner: str, fields: dict, kept: dict | None) -> tuple[dict, list[tuple[str, str]]]:
    """The grant's TOML table from the form (over the file's table `kept`), and the fields
    that did not parse as (field, message)."""
    grant = dict(kept or {})
    grant["partner"] = partner
    problems: list[tuple[str, str]] = []
    grant["purposes"] = [_purpose(line) for line in fields["purposes"].splitlines() if line.strip()]
    grant["kinds"] = list(fields["kinds"])
    for name in LISTS:
        _set(grant, name, _list(fields[name]))
    for name in TEXTS:
        _set(grant, name, fields[name] or None)
    for name, kind, what in ((n, int, "a whole number") for n in INTS):
        _number(grant, name, fields[name], kind, what, problems)
    for name in FLOATS:
        _number(grant, name, fields[name], float, "a number", problems)
    for name in FLAGS:
        _set(grant, name, True if fields[name] else None)
    return grant, problems


def _purpose(line: str):
    code, _, basis = line.replace("｜", "|").partition("|")
    code, basis = code.strip(), basis.strip()
    return {"code": code, "legal_basis": basis} if basis else code


def _list(text: str) -> list[str]:
    parts = text.replace("，", ",").replace("、", ",").split(",")
    return [p.strip() for p in parts if p.strip()]


def _set(grant: dict, name: str, value) -> None:
    if value in (None, []):
        grant.pop(name, None)  # the schema's default
    else:
        grant[name] = value


def _number(grant: dict, name: str, text: str, kind, what: str, problems: list) -> None:
    if not text:
        grant.pop(name, None)
        return
    try:
        grant[name] = kind(text.replace(",", "").replace("，", ""))
    except ValueError:
        problems.append((name, f"must be {what}"))


def _text(value) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
