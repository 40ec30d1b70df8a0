"""Operating a real node: one process per data directory, probes for load balancers, the
listeners it reports, its version.

Real `shuqiao serve` processes and the CLI in subprocesses.
"""
from __future__ import annotations

import importlib.metadata
import os
import signal
import ssl
import subprocess
import sys
import time

import httpx
import pytest

from node.ledger.http import new_token
from node.runtime.data_lock import LOCK_NAME

from . import fixtures as fx

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("ops")
    s = fx.build(root, registry_size=200, applicants=20)
    token, digest = new_token()
    s.fed.add_node("hrss", partners=[{"id": "fund"}], datasets=[{
        "name": "flexible_workers", "grants": [{"partner": "fund", "purposes": [fx.PURPOSE]}]}],
        extra={"http": {"listen": "127.0.0.1:0", "auditor_tokens": [digest]}})
    s.auditor_token = token
    fx.start(s)
    yield s
    s.fed.close()


def serve_again(s, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", "serve", "--config", s.cfg("hrss")],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "100"})


def one_line(r: subprocess.CompletedProcess) -> str:
    text = (r.stdout + r.stderr).strip()
    assert r.returncode != 0, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text


def https(s) -> httpx.Client:
    return httpx.Client(base_url=f"https://127.0.0.1:{s.fed.nodes['hrss'].http_port}",
                        verify=ssl.create_default_context(cafile=str(s.fed.pki / "ca.pem")))


def test_version_comes_from_the_package_metadata(node):
    r = node.fed.cli("--version")
    assert r.stdout.strip() == f"shuqiao {importlib.metadata.version('shuqiao')}"


def test_serve_prints_every_listener_it_opened(node):
    n = node.fed.nodes["hrss"]
    log = (n.directory / "serve.log").read_text()
    listening = [line.split("listening: ", 1)[1] for line in log.splitlines() if "listening: " in line]
    assert len(listening) == 2, log
    assert listening[0].startswith("gRPC (mutual TLS") and listening[0].endswith(f"127.0.0.1:{n.port}")
    assert listening[1].startswith(f"HTTPS API on 127.0.0.1:{n.http_port}:")
    assert "/metrics" in listening[1] and "/readyz" in listening[1]


def test_probes_answer_without_a_token_and_say_nothing_else(node):
    version = importlib.metadata.version("shuqiao")
    with https(node) as client:
        for path in ("/healthz", "/readyz"):
            r = client.get(path)
            assert (r.status_code, r.text) == (200, "ok"), path
            assert "server" not in r.headers
            for value in r.headers.values():
                for secret in ("hrss", version, "uvicorn", "python", "shuqiao"):
                    assert secret not in value.lower(), (path, value)
            assert client.head(path).status_code == 200
        # the probes open nothing else: the ledger and metrics still want the auditor's token
        for path in ("/v1/ledger/head", "/metrics"):
            assert client.get(path).status_code == 401, path
        auth = {"Authorization": f"Bearer {node.auditor_token}"}
        assert client.get("/metrics", headers=auth).status_code == 200


def test_a_second_serve_of_the_same_node_is_refused(node):
    n = node.fed.nodes["hrss"]
    text = one_line(serve_again(node))
    assert str(n.directory) in text and f"pid {n.process.pid}" in text and "shuqiao serve" in text
    assert n.process.poll() is None  # the running node is untouched
    with https(node) as client:
        assert client.get("/readyz").text == "ok"


def test_ledger_key_rotation_is_refused_beside_the_running_node(node):
    n = node.fed.nodes["hrss"]
    r = node.fed.cli("ledger", "rotate-key", "--config", node.cfg("hrss"), check=False)
    text = one_line(r)
    assert f"pid {n.process.pid}" in text and "node stopped" in text


def test_a_killed_node_leaves_no_lock_behind(node):
    """SIGKILL to the serve process alone: the kernel drops its lock, and the crypto workers
    it spawned (which may outlive it for a moment) never held it."""
    n = node.fed.nodes["hrss"]
    old = n.process
    try:
        os.kill(old.pid, signal.SIGKILL)
        old.wait(20)
        assert (n.directory / LOCK_NAME).read_text().startswith(f"{old.pid} ")  # stale, harmless
        n.process = None
        node.fed.start("hrss")
        assert n.process.pid != old.pid
        assert (n.directory / LOCK_NAME).read_text() == f"{n.process.pid} shuqiao serve\n"
        deadline = time.monotonic() + 10
        with https(node) as client:
            while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert client.get("/readyz").text == "ok"
    finally:
        try:
            os.killpg(old.pid, signal.SIGKILL)  # the orphaned workers of the killed node
        except ProcessLookupError:
            pass
