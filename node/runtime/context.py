"""A node's runtime context: validated config, clock, database, KEK, crypto pool, ledger and caches."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine

from node.core.errors import NotInitialised
from node.core.clock import SYSTEM_CLOCK, Clock
from node.core.config import NodeConfig
from node.keys.workers import CryptoPool
from node.storage.private_files import private_dir, private_sqlite
from node.keys.secrets import KeyEncryptionKey
from node.runtime.caches import NodeCaches
from node.runtime.database import open_store


class NodeNotInitialised(NotInitialised):
    """`shuqiao init` has not been run for this config."""


@dataclass
class NodeContext:
    # The config in force. A running node's reload (node/runtime/live_config.py) replaces
    # it by one assignment, so whoever reads it at query time gets the old or the new
    # one whole; a query admitted under the old grant finishes under it.
    config: NodeConfig
    _pool: CryptoPool | None = field(default=None, repr=False)
    # Every wall-clock time the node stores, signs or compares comes from here.
    clock: Clock = field(default=SYSTEM_CLOCK, repr=False)
    # Open gRPC channels to partners, reused across queries of this process.
    channels: dict = field(default_factory=dict, repr=False)
    # The file the config was read from: what a reload reads again (None: not from a file).
    config_path: Path | None = None
    # What this node keeps in memory between queries: never shared with another context.
    caches: NodeCaches = field(default_factory=NodeCaches, repr=False)

    @cached_property
    def engine(self) -> Engine:
        # Personal data lives here: owner-only, the database and its journals too.
        private_dir(self.config.data_dir)
        private_sqlite(self.config.storage_url)
        return open_store(self.config.storage_url)

    @cached_property
    def kek(self) -> KeyEncryptionKey:
        path = self.config.kek_path
        if not path.exists():
            raise NodeNotInitialised(
                f"node key file {path} does not exist; run `shuqiao init --config ...` first")
        return KeyEncryptionKey.load(path)

    @cached_property
    def ledger(self):
        """This node's verifiable ledger (RFC 9162 tree, heads signed with its Ed25519 key)."""
        from node.ledger import HeadPolicy, Ledger, load_or_create_signer
        signer = load_or_create_signer(self.engine, self.kek, self.config.node.id, now=self.clock.now())
        return Ledger(self.engine, signer,
                      policy=HeadPolicy(every_entries=100, every_seconds=60), clock=self.clock.now)

    @property
    def pool(self) -> CryptoPool:
        """Worker processes for OPRF batches; they unseal keys only if the node has a KEK."""
        if self._pool is None:
            has_kek = self.config.kek_path.exists()
            self._pool = CryptoPool(self.kek if has_kek else None,
                                    self.config.kek_path if has_kek else None,
                                    self.config.grpc.workers)
        return self._pool

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self.channels.clear()
        self.caches.clear()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if "engine" in self.__dict__:
            self.engine.dispose()

    def __enter__(self) -> "NodeContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
