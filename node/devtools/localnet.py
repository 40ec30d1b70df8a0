"""A federation on one machine: CA, node configs, keys and real `shuqiao serve` processes.

Used by `shuqiao demo`, the end-to-end tests and the benchmarks, so that all three run
the same processes an agency would: each node is its own OS process listening on an
ephemeral loopback port with mutual TLS. Processes are started in their own process
group and always stopped (SIGTERM, then SIGKILL) when the federation closes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from node.keys.pki import init_ca, issue_node_cert
from node.storage.schema import open_private, private_dir, write_private
from node.keys.secrets import KeyEncryptionKey


@dataclass
class LocalNode:
    id: str
    config_path: Path
    directory: Path
    process: subprocess.Popen | None = None
    port: int | None = None
    http_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Federation:
    root: Path
    nodes: dict[str, LocalNode] = field(default_factory=dict)
    storage_urls: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.pki = self.root / "pki"
        if not (self.pki / "ca.pem").exists():
            init_ca(self.pki)

    def add_node(self, node_id: str, *, partners: list[dict], datasets: list[dict] | None = None,
                 grpc: dict | None = None, storage_url: str | None = None,
                 seal_tls_key: bool = True, extra: dict | None = None) -> LocalNode:
        """Write the node's config, create its KEK and certificate."""
        d = private_dir(self.root / node_id)  # the node's data directory
        kek_path = d / "keys" / "node.kek"
        kek = KeyEncryptionKey.load(kek_path) if kek_path.exists() else KeyEncryptionKey.create(kek_path)
        if not (d / "tls" / f"{node_id}.pem").exists():
            issue_node_cert(self.pki, node_id, d / "tls", kek=kek if seal_tls_key else None)
        config = {
            "node": {"id": node_id, "data_dir": "."},
            "grpc": {"listen": "127.0.0.1:0", **(grpc or {})},
            "tls": {"ca": str(self.pki / "ca.pem"), "cert": f"tls/{node_id}.pem",
                    "key": f"tls/{node_id}.key", "key_sealed": seal_tls_key},
            "partners": partners,
            "datasets": datasets or [],
        }
        if storage_url:
            config["storage"] = {"url": storage_url}
        config.update(extra or {})
        path = d / "node.toml"
        write_private(path, tomli_w.dumps(config).encode())
        node = LocalNode(node_id, path, d)
        self.nodes[node_id] = node
        return node

    def set_partner_address(self, node_id: str, partner_id: str, address: str) -> None:
        """Point `node_id`'s config at a partner's (ephemeral) address."""
        import tomllib
        path = self.nodes[node_id].config_path
        config = tomllib.loads(path.read_text())
        for p in config["partners"]:
            if p["id"] == partner_id:
                p["address"] = address
        write_private(path, tomli_w.dumps(config).encode())

    def cli(self, *args: str, check: bool = True, timeout: float = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
        """Run the `shuqiao` CLI in a subprocess."""
        return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True,
                              check=check, timeout=timeout,
                              env={**os.environ, "COLUMNS": "200", **(env or {})})

    def start(self, node_id: str, timeout: float = 60, args: tuple[str, ...] = ()) -> LocalNode:
        """Start `shuqiao serve` for the node (with `args` added) and wait for its ports."""
        node = self.nodes[node_id]
        port_file = node.directory / "serve.port"
        port_file.unlink(missing_ok=True)
        log = open_private(node.directory / "serve.log", "ab")
        node.process = subprocess.Popen(
            [sys.executable, "-m", "node", "serve", "--config", str(node.config_path),
             "--port-file", str(port_file), *args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if node.process.poll() is not None:
                raise RuntimeError(f"node {node_id} exited with {node.process.returncode}; "
                                   f"see {node.directory / 'serve.log'}")
            if time.monotonic() > deadline:
                self.stop(node_id)
                raise TimeoutError(f"node {node_id} did not start within {timeout} s")
            time.sleep(0.05)
        ports = port_file.read_text().split()
        node.port = int(ports[0])
        node.http_port = int(ports[1]) if len(ports) > 1 else None
        return node

    def stop(self, node_id: str, *, kill: bool = False, timeout: float = 20) -> None:
        node = self.nodes[node_id]
        p = node.process
        if p is None or p.poll() is not None:
            node.process = None
            return
        try:
            os.killpg(p.pid, signal.SIGKILL if kill else signal.SIGTERM)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        except ProcessLookupError:
            pass
        finally:
            # the node's worker processes share its process group
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.process = None

    def close(self) -> None:
        for node_id in list(self.nodes):
            self.stop(node_id)

    def __enter__(self) -> "Federation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
