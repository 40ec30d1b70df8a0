"""Editing one grant in the config file: validated first, written atomically with a backup,
nothing written on a refusal; the console's form fields to a grant; the acting console user."""
from __future__ import annotations

import os
import stat
import tomllib

import pytest

from node.console import grant_form
from node.core.config import ConfigError, load_config
from node.runtime import admin_log, config_file

BASE = """# the agency's node
[node]
id = "hrss"
data_dir = "var"

[tls]
ca = "pki/ca.pem"
cert = "pki/hrss.pem"
key = "pki/hrss.key"

[[partners]]
id = "fund"

[[partners]]
id = "edu"

[[datasets]]
name = "flexible_workers"
grants = [{ partner = "fund", purposes = ["flexible-worker-deposit"], label_pad_to = 128 }]

[[datasets]]
name = "graduates"
"""


@pytest.fixture()
def path(tmp_path):
    p = tmp_path / "node.toml"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, BASE.encode())
    os.close(fd)
    return p


def test_a_grant_is_replaced_keeping_the_rest_and_a_backup(path):
    in_force = load_config(path)
    kept = config_file.raw_grant(path, "flexible_workers", "fund")
    fields = {**grant_form.shown(in_force.dataset("flexible_workers").grants[0]), "daily_elements": "5,000"}
    grant, problems = grant_form.to_grant("fund", fields, kept)
    assert not problems
    edited = config_file.write_grant(path, in_force, "flexible_workers", grant)
    g = edited.dataset("flexible_workers").grants[0]
    assert g.daily_elements == 5000 and g.label_pad_to == 128  # a key the form does not show stays
    assert load_config(path) == edited
    assert path.with_name("node.toml.bak").read_text() == BASE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_a_grant_is_added_for_a_dataset_without_one(path):
    in_force = load_config(path)
    fields = {**grant_form.shown(None), "purposes": "graduate-check | 《高校毕业生就业促进办法》",
              "kinds": ["membership", "cardinality"], "dp_epsilon": "0.5", "dp_budget": "5",
              "predicate_columns": "毕业年份，学历、专业"}
    grant, problems = grant_form.to_grant("edu", fields, None)
    assert not problems
    edited = config_file.write_grant(path, in_force, "graduates", grant)
    g = edited.dataset("graduates").grants[0]
    assert g.purposes[0].legal_basis == "《高校毕业生就业促进办法》" and g.dp_budget == 5.0
    assert g.predicate_columns == ["毕业年份", "学历", "专业"]


@pytest.mark.parametrize("change, expected", [
    ({"min_elements": "10", "max_elements": "5"}, "min_elements must not exceed max_elements"),
    ({"purposes": ""}, "purposes"),
    ({"kinds": ["bulk"]}, "bulk_trusts_partner_software"),
    ({"purposes": "Not A Code"}, "purposes.0"),
])
def test_an_invalid_grant_writes_nothing(path, change, expected):
    in_force = load_config(path)
    fields = {**grant_form.shown(in_force.dataset("flexible_workers").grants[0]), **change}
    grant, problems = grant_form.to_grant("fund", fields, config_file.raw_grant(path, "flexible_workers", "fund"))
    with pytest.raises(config_file.GrantInvalid) as exc:
        config_file.write_grant(path, in_force, "flexible_workers", grant)
    assert expected in str(exc.value) and path.read_text() == BASE
    assert not path.with_name("node.toml.bak").exists()


def test_a_grant_to_an_unknown_partner_fails_the_whole_config(path):
    grant, _ = grant_form.to_grant("health", {**grant_form.shown(None), "purposes": "x-check"}, None)
    with pytest.raises(config_file.GrantInvalid, match="not in \\[\\[partners\\]\\]"):
        config_file.write_grant(path, load_config(path), "graduates", grant)
    assert path.read_text() == BASE


def test_fields_that_do_not_parse_are_named(path):
    fields = {**grant_form.shown(None), "purposes": "x-check", "daily_elements": "lots", "dp_epsilon": "½"}
    _, problems = grant_form.to_grant("fund", fields, None)
    assert problems == [("daily_elements", "must be a whole number"), ("dp_epsilon", "must be a number")]


def test_an_edit_is_refused_while_the_file_differs_from_the_config_in_force(path):
    in_force = load_config(path)
    path.write_text(BASE.replace('id = "edu"', 'id = "edu"\ndisplay_name = "教育局"'))
    grant, _ = grant_form.to_grant("fund", {**grant_form.shown(None), "purposes": "x-check"}, None)
    with pytest.raises(ConfigError, match="not in force"):
        config_file.write_grant(path, in_force, "flexible_workers", grant)
    assert "教育局" in path.read_text() and "x-check" not in path.read_text()


def test_restore_backup_puts_the_previous_file_back(path):
    in_force = load_config(path)
    grant, _ = grant_form.to_grant("fund", {**grant_form.shown(None), "purposes": "x-check"}, None)
    config_file.write_grant(path, in_force, "flexible_workers", grant)
    assert tomllib.loads(path.read_text())["datasets"][0]["grants"][0]["purposes"] == ["x-check"]
    config_file.restore_backup(path)
    assert path.read_text() == BASE


def test_a_grant_is_removed_and_a_missing_one_refused(path):
    edited = config_file.remove_grant(path, load_config(path), "flexible_workers", "fund")
    assert edited.dataset("flexible_workers").grants == [] and load_config(path) == edited
    with pytest.raises(ConfigError, match="grants nothing"):
        config_file.remove_grant(path, edited, "flexible_workers", "fund")


def test_admin_actions_name_the_console_user_acting_in_this_thread():
    default = admin_log.actor()
    with admin_log.acting_as("console:admin-desk"):
        assert admin_log.actor() == "console:admin-desk"
        with admin_log.acting_as("console:张三 desk"):
            assert admin_log.actor() == "console:___desk"  # ledger tokens are ASCII
    with admin_log.acting_as(None):
        assert admin_log.actor() == default
    assert admin_log.actor() == default and ":" not in default
