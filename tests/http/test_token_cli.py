"""`shuqiao token new`: the printed entry is valid config, and holds only the token's digest."""
from __future__ import annotations

import subprocess
import sys
import tomllib

from node.core.config import NodeConfig
from node.ledger.http import hash_token as digest_of


def token_new(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", "token", "new", *args], capture_output=True,
                          text=True, timeout=60)


def test_a_scoped_operator_token_is_a_config_entry_holding_its_digest():
    r = token_new("--role", "operator", "--name", "business-system", "--purpose", "housing-loan",
                  "--rule", "graduate")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    snippet = r.stderr.split("add to the config:", 1)[1]
    assert token not in r.stderr
    doc = tomllib.loads(snippet.replace("[[http.tokens]]", "[[tokens]]"))
    (entry,) = doc["tokens"]
    assert entry["digest"] == digest_of(token)
    cfg = NodeConfig.model_validate({"node": {"id": "gjj"}, "tls": {"ca": "a", "cert": "b", "key": "c"},
                                     "http": {"tokens": [entry]}})
    (t,) = cfg.http.tokens
    assert (t.name, t.role.value, t.purposes, t.rules) == ("business-system", "operator", ["housing-loan"], ["graduate"])


def test_operator_tokens_need_a_name_and_names_are_checked():
    for args in (("--role", "operator"), ("--role", "auditor", "--name", "Bad Name")):
        r = token_new(*args)
        assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("error:")
