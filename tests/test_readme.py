"""Every command the README shows parses against the CLI as written, and every config it
names is one of configs/ (checked with the CLI's own parser: nothing is run).

A line `shuqiao query membership ... --kind labeled` stands for the full command shown
before it with those options added, and is checked so.
"""
from __future__ import annotations

import functools
import glob
import re
import shlex
from pathlib import Path

import pytest
import typer

from node.cli.main import app, register_commands

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def shell_lines(text: str) -> list[tuple[int, list[str]]]:
    """(line number, words) of every command in the README's ```sh blocks, continuations joined."""
    commands, block, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            block = line.strip() == "```sh"
            continue
        if not block:
            continue
        start = start or number
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        words = shlex.split(pending, comments=True)
        if words:
            commands.append((start, words))
        pending, start = "", 0
    return commands


def shuqiao_commands() -> list[tuple[int, list[str]]]:
    found, last = [], {}
    for number, words in shell_lines(README.read_text(encoding="utf-8")):
        if words[0] != "shuqiao":
            continue
        args = words[1:]
        if "..." in args:  # "the command above, plus these options"
            at = args.index("...")
            path = tuple(args[:at])
            assert path in last, f"README line {number}: '...' follows no full `shuqiao {' '.join(path)}`"
            args = last[path] + args[at + 1:]
        else:
            for depth in (1, 2):
                last[tuple(args[:depth])] = args
        found.append((number, args))
    return found


@functools.cache
def root_command():
    register_commands()
    return typer.main.get_command(app)


def parse(args: list[str]):
    """Parse like `shuqiao ARGS` would, down to the command's own context; nothing runs."""
    cmd, name, parent = root_command(), "shuqiao", None
    while True:
        ctx = cmd.make_context(name, list(args), parent=parent)
        if not hasattr(cmd, "resolve_command"):
            return ctx
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, cmd, args = cmd.resolve_command(ctx, rest)
        parent = ctx


COMMANDS = shuqiao_commands()


def test_the_readme_shows_commands():
    assert len(COMMANDS) > 40


@pytest.mark.parametrize("number,args", COMMANDS, ids=[f"line{n}" for n, _ in COMMANDS])
def test_each_command_parses_as_written(number, args):
    try:
        parse(args)
    except typer.Exit:
        pass  # --version, --help: eager options that end parsing
    except typer.TyperException as exc:
        pytest.fail(f"README line {number}: `shuqiao {' '.join(args)}`: {exc}")


@pytest.mark.parametrize("number,args", COMMANDS, ids=[f"line{n}" for n, _ in COMMANDS])
def test_the_configs_it_names_are_examples_in_the_repository(number, args):
    for word in args:
        for name in re.findall(r"configs/[\w./*-]+\.toml", word):
            assert glob.glob(str(ROOT / name)), f"README line {number} names {name}, which is not in configs/"


def test_the_make_targets_it_names_exist():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    for number, words in shell_lines(README.read_text(encoding="utf-8")):
        if words[0] == "make":
            assert words[1] in targets, f"README line {number}: no make target {words[1]!r}"


def test_the_parser_check_catches_a_wrong_command():
    for wrong in (["dataset", "add", "-c", "x.toml", "--name", "g", "--xlsx", "roll.xlsx"],  # no --id-column
                  ["query", "membership", "--bogus"], ["no-such-command"],
                  ["token", "new", "--role", "root"]):
        with pytest.raises(typer.TyperException):
            parse(wrong)


# -- the commands against the example configs -----------------------------------------------

@functools.cache
def example_configs() -> dict:
    from node.core.config import load_config
    nodes = [p for p in sorted((ROOT / "configs").glob("*.toml")) if p.name != "rules.toml"]
    return {c.node.id: c for c in (load_config(p) for p in nodes)}


def test_the_example_configs_load_and_grant_every_kind():
    from node.core.config import QueryKindName
    configs = example_configs()
    assert set(configs) == {"fund", "hrss", "edu"}
    granted = {k.value for c in configs.values() for d in c.datasets for g in d.grants for k in g.kinds}
    assert granted == {k.value for k in QueryKindName}
    grants = [g for c in configs.values() for d in c.datasets for g in d.grants]
    assert any(g.predicate_columns for g in grants) and any(g.label_attributes for g in grants)
    assert any(g.dp_epsilon and g.dp_budget for g in grants)
    assert any(c.http.listen for c in configs.values()) and any(c.auditors for c in configs.values())


def _columns(predicate: str) -> set[str]:
    from node.language.predicate import parse
    from node.language.render import columns
    return set(columns(parse(predicate)))


def _grant(configs, asker: str, partner: str, dataset: str, purpose: str, kind: str):
    declared = configs[partner].dataset(dataset)
    assert declared is not None, f"{partner} declares no dataset {dataset!r}"
    grant = next((g for g in declared.grants if g.partner == asker), None)
    assert grant is not None, f"{partner}.{dataset} grants nothing to {asker}"
    assert purpose in grant.purpose_codes, f"{partner}.{dataset} does not grant purpose {purpose!r}"
    assert kind in {k.value for k in grant.kinds}, f"{partner}.{dataset} does not grant {kind}"
    return grant


QUERIES = [(n, a) for n, a in COMMANDS
           if a[0] == "query" and a[1] in ("membership", "cardinality", "aggregate", "threshold")]


@pytest.mark.parametrize("number,args", QUERIES, ids=[f"line{n}" for n, _ in QUERIES])
def test_each_query_is_granted_by_the_example_configs(number, args):
    from node.core.config import load_config
    configs, p = example_configs(), parse(args).params
    asker = load_config(ROOT / p["config"]).node.id
    kind = p["kind"].value if args[1] == "membership" else args[1]
    grant = _grant(configs, asker, p["partner"], p["dataset"], p["purpose"], kind)
    if p.get("predicate"):
        assert _columns(p["predicate"]) <= set(grant.predicate_columns), f"line {number}"
    if kind == "labeled":
        assert grant.label_attributes, f"line {number}"
    if kind == "aggregate":
        wanted = {p["value"], p["group_by"]} - {None}
        assert wanted <= set(grant.aggregate_columns), f"line {number}"
    if kind == "threshold":
        assert grant.threshold_column, f"line {number}"


REGISTRATIONS = [(n, a) for n, a in COMMANDS if a[:2] == ["dataset", "add"]]


@pytest.mark.parametrize("number,args", REGISTRATIONS, ids=[f"line{n}" for n, _ in REGISTRATIONS])
def test_each_registration_keeps_the_columns_its_grants_name(number, args):
    from node.core.config import load_config
    p = parse(args).params
    declared = load_config(ROOT / p["config"]).dataset(p["name"])
    assert declared is not None, f"line {number}: {p['name']} is not declared in {p['config']}"
    named = {c for g in declared.grants for c in (*g.predicate_columns, *g.label_attributes,
                                                  *g.aggregate_columns, g.threshold_column) if c}
    if p["sql"] is None:  # a SQL table's columns are whatever it holds; the examples show files
        assert named <= set(p["attribute"]), f"line {number}: register {named - set(p['attribute'])}"


def test_the_rule_file_names_what_the_configs_declare_and_grant():
    import tomllib

    from node.rules.language import plan
    from node.rules.rulefile import load_rule_file
    configs = example_configs()
    path = ROOT / "configs" / "rules.toml"
    rule_file = load_rule_file(path)
    for name, rule in rule_file.rules.items():
        for q in plan(rule):
            if q.is_local("fund"):
                assert configs["fund"].dataset(q.dataset) is not None, (name, q.text)
                continue
            grant = _grant(configs, "fund", q.partner, q.dataset, rule_file.purpose(name, q.partner),
                           "predicate" if q.predicate else "membership")
            if q.predicate:
                assert _columns(q.predicate) <= set(grant.predicate_columns), (name, q.text)
    # the README's example is the shipped file's (its rules and purposes, as TOML)
    text = README.read_text(encoding="utf-8")
    shown = tomllib.loads(text.split("A rule file", 1)[1].split("```toml", 1)[1].split("```", 1)[0])
    shipped = tomllib.loads(path.read_text(encoding="utf-8"))
    for table in ("rules", "purposes"):
        assert all(shipped[table].get(k) == v for k, v in shown[table].items()), table
