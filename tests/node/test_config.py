"""The node config schema is strict: unknown keys, bad ids and inconsistent grants fail."""
from __future__ import annotations

import pytest

from node.core.config import ConfigError, load_config

BASE = """
[node]
id = "hrss"
data_dir = "var"

[tls]
ca = "pki/ca.pem"
cert = "pki/hrss.pem"
key = "pki/hrss.key"

[[partners]]
id = "fund"
address = "127.0.0.1:50051"

[[datasets]]
name = "flexible_workers"
grants = [{ partner = "fund", purposes = ["flexible-worker-deposit"] }]
"""


def write(tmp_path, text):
    p = tmp_path / "node.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_valid_config_resolves_paths_relative_to_the_file(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.node.id == "hrss"
    assert cfg.data_dir == tmp_path / "var"
    assert cfg.storage_url == f"sqlite:///{tmp_path / 'var' / 'node.db'}"
    assert cfg.kek_path == tmp_path / "var" / "keys" / "node.kek"
    assert cfg.path(cfg.tls.ca) == tmp_path / "pki" / "ca.pem"
    assert cfg.dataset("flexible_workers").grants[0].partner == "fund"


@pytest.mark.parametrize("mutation, message", [
    (lambda t: t.replace('data_dir = "var"', 'data_dir = "var"\ncolour = "red"'), "node.colour"),
    (lambda t: t.replace('id = "hrss"', 'id = "HRSS bureau"'), "node.id"),
    (lambda t: t.replace('partner = "fund"', 'partner = "edu"'), "not in [[partners]]"),
    (lambda t: t.replace('purposes = ["flexible-worker-deposit"]', "purposes = []"), "purposes"),
    (lambda t: t + '\n[grpc]\nlisten = "everywhere"\n', "HOST:PORT"),
    (lambda t: t + '\n[grpc]\nmax_message_bytes = 1\n', "max_message_bytes"),
    (lambda t: t.replace('data_dir = "var"', 'data_dir = "var"\nmode = "production"'), "key_sealed"),
    (lambda t: t.replace('id = "fund"', 'id = "hrss"'), "itself"),
    (lambda t: t + "\n[[datasets]]\nname = \"flexible_workers\"\n", "unique"),
], ids=["unknown-key", "bad-node-id", "grant-to-unknown-partner", "no-purpose", "bad-listen",
        "tiny-message-cap", "production-needs-sealed-key", "self-partner", "duplicate-dataset"])
def test_invalid_configs_are_refused_with_their_location(tmp_path, mutation, message):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, mutation(BASE)))
    assert message in str(exc.value)


HTTP = '\n[http]\nlisten = "{listen}"\ntls = false\n'


@pytest.mark.parametrize("listen", ["0.0.0.0:8443", "[::]:8443", "10.1.2.3:8443", "node.example:80"])
@pytest.mark.parametrize("mode", ["pilot", "production"])
def test_plain_http_on_a_non_loopback_address_refused(tmp_path, listen, mode):
    text = BASE.replace('data_dir = "var"', f'data_dir = "var"\nmode = "{mode}"')
    text = text.replace('key = "pki/hrss.key"', 'key = "pki/hrss.key"\nkey_sealed = true')
    with pytest.raises(ConfigError, match="plain HTTP"):
        load_config(write(tmp_path, text + HTTP.format(listen=listen)))


def test_plain_http_allowed_on_loopback_or_when_marked_for_development(tmp_path):
    assert not load_config(write(tmp_path, BASE + HTTP.format(listen="127.0.0.1:8443"))).http.tls
    marked = BASE + HTTP.format(listen="0.0.0.0:8443") + "plain_http_for_development = true\n"
    assert load_config(write(tmp_path, marked)).http.plain_http_for_development
    production = marked.replace('data_dir = "var"', 'data_dir = "var"\nmode = "production"')
    production = production.replace('key = "pki/hrss.key"', 'key = "pki/hrss.key"\nkey_sealed = true')
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, production))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[node\nid="))


def test_example_configs_in_the_repository_are_valid():
    from pathlib import Path
    configs = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.toml")
                     if p.name != "rules.toml")  # a rule file, not a node's config
    assert {p.stem for p in configs} >= {"fund", "edu", "hrss"}
    for path in configs:
        assert load_config(path).node.id == path.stem


COUNTING = 'grants = [{ partner = "fund", purposes = ["flexible-worker-deposit"], kinds = ["cardinality"]%s }]'


def _counting(extra: str) -> str:
    return BASE.replace('grants = [{ partner = "fund", purposes = ["flexible-worker-deposit"] }]',
                        COUNTING % extra)


def test_counting_kinds_have_a_floor_of_ten_by_default(tmp_path):
    from node.policy import checks as policy
    grant = load_config(write(tmp_path, _counting(""))).dataset("flexible_workers").grants[0]
    assert policy.min_elements(grant, "cardinality") == 10
    assert policy.min_elements(grant, "aggregate") == 10
    assert policy.min_elements(grant, "membership") == 1


def test_exact_counts_without_a_floor_are_refused_unless_said_so(tmp_path):
    with pytest.raises(ConfigError, match="exact_small_counts"):
        load_config(write(tmp_path, _counting(", min_counting_elements = 1")))
    ok = ", min_counting_elements = 1, exact_small_counts = true"
    assert load_config(write(tmp_path, _counting(ok))).dataset("flexible_workers").grants[0].exact_small_counts
    noised = ", min_counting_elements = 1, dp_epsilon = 0.5, dp_budget = 2.0"
    assert load_config(write(tmp_path, _counting(noised)))
    with pytest.raises(ConfigError, match="min_counting_elements must not exceed max_elements"):
        load_config(write(tmp_path, _counting(", max_elements = 5")))


def test_a_grant_of_bulk_must_say_it_trusts_the_partners_software(tmp_path):
    """Bulk (KKRT16) is semi-honest only: granting it is a deliberate, named choice."""
    from pydantic import ValidationError

    from node.core.config import DatasetGrant
    with pytest.raises(ValidationError, match="bulk_trusts_partner_software"):
        DatasetGrant(partner="fund", purposes=["deposit"], kinds=["membership", "bulk"])
    grant = DatasetGrant(partner="fund", purposes=["deposit"], kinds=["bulk"], bulk_trusts_partner_software=True)
    assert [k.value for k in grant.kinds] == ["bulk"]
