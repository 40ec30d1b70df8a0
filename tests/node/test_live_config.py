"""node/runtime/live_config.py: what a running node may take over from an edited config,
and applying it (ledgered first, then swapped in whole) or keeping the old one."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from node.core.config import load_config
from node.runtime import live_config
from node.runtime.admin_log import enforced_policy, policy_digest
from node.runtime.context import NodeContext
from node.runtime.data_lock import DataDirLock, holder

BASE = """
[node]
id = "hrss"
data_dir = "var"

[grpc]
listen = "127.0.0.1:50052"

[tls]
ca = "pki/ca.pem"
cert = "pki/hrss.pem"
key = "pki/hrss.key"

[[partners]]
id = "fund"

[[datasets]]
name = "flexible_workers"
grants = [{ partner = "fund", purposes = ["flexible-worker-deposit"], kinds = ["membership", "cardinality"] }]
"""


def config(tmp_path, old: str = "", new: str = ""):
    path = tmp_path / "node.toml"
    path.write_text(BASE.replace(old, new) if old else BASE, encoding="utf-8")
    return load_config(path)


@pytest.mark.parametrize("old, new, named", [
    ('listen = "127.0.0.1:50052"', 'listen = "127.0.0.1:50053"', "grpc.listen"),
    ('cert = "pki/hrss.pem"', 'cert = "pki/hrss-2027.pem"', "tls.cert"),
    ('data_dir = "var"', 'data_dir = "elsewhere"', "node.data_dir"),
    ('[grpc]', '[storage]\nurl = "postgresql+psycopg://x@db/y"\n[grpc]', "storage.url"),
    ('[grpc]', '[http]\nlisten = "127.0.0.1:8443"\n[grpc]', "http.listen"),
    ('[grpc]', '[grpc]\nserver_threads = 64', "grpc.server_threads"),
    ('[grpc]', '[logging]\nformat = "json"\n[grpc]', "logging.format"),
])
def test_restart_only_settings_are_named(tmp_path, old, new, named):
    before = config(tmp_path)
    after = config(tmp_path, old, new)
    assert live_config.restart_needed(before, after) == [named]


@pytest.mark.parametrize("old, new, section", [
    ('kinds = ["membership", "cardinality"]', 'kinds = ["membership"]', "datasets"),
    ('[[partners]]\nid = "fund"', '[[partners]]\nid = "fund"\naddress = "10.0.0.1:1"', "partners"),
    ('[grpc]', '[query]\nproof_sample = 64\n[grpc]', "query"),
    ('[grpc]', '[http]\nadmin_tokens = ["sha256:' + "0" * 64 + '"]\n[grpc]', "http"),
    ('[grpc]', '[http]\nmetrics_tokens = ["sha256:' + "0" * 64 + '"]\n[grpc]', "http"),
])
def test_policy_and_settings_change_live(tmp_path, old, new, section):
    before, after = config(tmp_path), config(tmp_path, old, new)
    assert live_config.restart_needed(before, after) == []
    assert live_config.changed_sections(before, after) == [section]


def test_apply_ledgers_then_swaps_and_refuses_a_restart_only_change(tmp_path):
    from node.keys.secrets import KeyEncryptionKey
    ctx = NodeContext(config(tmp_path), config_path=tmp_path / "node.toml")
    KeyEncryptionKey.create(ctx.config.kek_path)
    try:
        first = ctx.config
        assert live_config.apply(ctx, config(tmp_path), "test").outcome == "unchanged"
        narrower = config(tmp_path, '"membership", "cardinality"', '"membership"')
        result = live_config.apply(ctx, narrower, "test")
        assert result.outcome == "applied" and ctx.config is narrower
        with ctx.engine.connect() as conn:
            digest, body = enforced_policy(conn)
        assert digest == result.policy_digest == policy_digest(narrower)
        assert body["datasets"][0]["grants"][0]["kinds"] == ["membership"]
        from node.ledger import decode
        entries = [decode(b) for _, b in ctx.ledger.entries()]
        (entry,) = [e for e in entries if getattr(e, "action", "") == "policy_changed"]
        assert entry.details["digest"] == digest and entry.details["trigger"] == "test"
        moved = config(tmp_path, 'listen = "127.0.0.1:50052"', 'listen = "127.0.0.1:1"')
        refused = live_config.apply(ctx, moved, "test")
        assert refused.outcome == "refused" and "grpc.listen" in refused.message
        assert ctx.config is narrower and first is not narrower
    finally:
        ctx.close()


def test_the_lock_probe_tells_a_holder_from_a_stale_file(tmp_path):
    assert holder(tmp_path) is None
    with DataDirLock(tmp_path, "shuqiao serve"):
        assert holder(tmp_path) == (os.getpid(), "shuqiao serve")
    assert holder(tmp_path) is None  # the file stays, the lock does not
    # a holder that was killed leaves its pid behind: no lock, so nobody to signal
    (tmp_path / "shuqiao.lock").write_text("999999 shuqiao serve\n")
    assert holder(tmp_path) is None
    code = ("import sys,time; from node.runtime.data_lock import DataDirLock; "
            "l=DataDirLock(sys.argv[1],'shuqiao restore').acquire(); print('ok',flush=True); time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ok"
        assert holder(tmp_path) == (child.pid, "shuqiao restore")
        with pytest.raises(live_config.ReloadError, match="held by shuqiao restore"):
            live_config.running_serve(config(tmp_path, 'data_dir = "var"', f'data_dir = "{tmp_path}"'))
    finally:
        child.kill()
        child.wait()
