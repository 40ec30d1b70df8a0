"""A node's runtime context: validated config, clock, database, KEK, crypto pool, ledger and caches.

The database is opened with every table of every layer created and the append-only
triggers installed: the schema of each layer lives with it (node/storage/schema.py,
node/ledger/tables.py); creating it needs both, so it happens here, above them.

What a node keeps in memory between queries: named, bounded caches, one set per context.
Nothing is cached per process. A dataset version id or a table id is a row id in *one*
node's database; tests run several nodes in one process and a tool may open two stores,
so a cache shared by the process would hand one node's rows to another that happens to
hold the same id. Each :class:`NodeContext` owns a :class:`NodeCaches`; closing the
context drops them all, unsealed private keys included.

Each cache holds its own lock and a bound on its entries; the least recently used entry
goes first. A value is built under the cache's lock, so two threads asking for the same
version build it once (the second waits for the first).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Generic, Hashable, TypeVar

from sqlalchemy import Engine, text

from node.core.errors import NotInitialised
from node.core.clock import SYSTEM_CLOCK, Clock
from node.core.config import NodeConfig
from node.keys.workers import CryptoPool
from node.ledger.tables import install_ledger_triggers
from node.storage.schema import private_dir, private_sqlite
from node.storage.schema import _APPEND_ONLY, _append_only_ddl, make_engine, metadata
from node.keys.secrets import KeyEncryptionKey

V = TypeVar("V")


# -- the database ---------------------------------------------------------------------

def create_schema(engine: Engine) -> None:
    """Create missing tables and the append-only triggers (idempotent)."""
    metadata.create_all(engine)  # missing tables, with their indexes
    for table in metadata.sorted_tables:  # and indexes added since a table was created
        for index in table.indexes:
            index.create(engine, checkfirst=True)
    with engine.begin() as conn:
        for table in _APPEND_ONLY:
            for stmt in _append_only_ddl(engine.dialect.name, table):
                conn.execute(text(stmt))
    if engine.dialect.name in ("sqlite", "postgresql"):
        install_ledger_triggers(engine)


def open_store(url: str) -> Engine:
    engine = make_engine(url)
    create_schema(engine)
    return engine


# -- in-memory caches --------------------------------------------------------------

class BoundedCache(Generic[V]):
    """A thread-safe map of at most ``keep`` entries, least recently used out first."""

    def __init__(self, name: str, keep: int) -> None:
        if keep < 1:
            raise ValueError("a cache keeps at least one entry")
        self.name, self.keep = name, keep
        self.lock = threading.RLock()
        self._items: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        with self.lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: Hashable, value: V) -> V:
        with self.lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.keep:
                self._items.popitem(last=False)
            return value

    def get_or_build(self, key: Hashable, build: Callable[[], V]) -> V:
        """The cached value of ``key``, built (under the lock) and kept if absent."""
        with self.lock:
            found = self.get(key)
            return found if found is not None else self.put(key, build())

    def clear(self) -> None:
        with self.lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:  # names and sizes only: entries hold rows and keys
        return f"<BoundedCache {self.name}: {len(self._items)}/{self.keep}>"


class Claims:
    """Jobs under way: a job is claimed once until it is released."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[Hashable] = set()

    def claim(self, job: Hashable) -> bool:
        """True if ``job`` was free and is now this caller's."""
        with self._lock:
            if job in self._held:
                return False
            self._held.add(job)
            return True

    def release(self, job: Hashable) -> None:
        with self._lock:
            self._held.discard(job)

    def __len__(self) -> int:
        return len(self._held)


def _cache(name: str, keep: int):
    return field(default_factory=lambda: BoundedCache(name, keep))


@dataclass(repr=False)
class NodeCaches:
    """The node's in-memory caches (see the module doc); keyed by this node's row ids."""

    # Statistics kinds: a version's identifiers and attribute columns, and H(y) per row.
    version_columns: BoundedCache = _cache("version columns", 4)
    shuffle_hashes: BoundedCache = _cache("shuffle-match row hashes", 4)
    # Cardinality: H(y) of every row of the version last asked about.
    cardinality_hashes: BoundedCache = _cache("cardinality row hashes", 1)
    # Bulk: the encoded identifiers of the version last asked about (~50 bytes a row).
    bulk_elements: BoundedCache = _cache("bulk elements", 1)
    # The asking side: partners' tag tables read from the database.
    peer_tables: BoundedCache = _cache("partners' tag tables", 4)
    # ... which of them were checked against which description, and recent descriptions.
    peer_synced: BoundedCache = _cache("partners' checked tables", 16)
    peer_listings: BoundedCache = _cache("partners' dataset descriptions", 16)
    # Rules: the identifiers of a local dataset version's rows (under a predicate).
    local_members: BoundedCache = _cache("local rule sources", 2)
    # The service's rule file, parsed, by (path, modification time, size).
    rule_files: BoundedCache = _cache("rule files", 2)
    # Threshold keys' private halves, unsealed once per context (like the KEK).
    paillier_secrets: BoundedCache = _cache("Paillier private keys", 16)
    # Threshold tables being prepared in the background.
    preparing: Claims = field(default_factory=Claims)
    # HTTP requests under way, by (token name, Idempotency-Key) (node/http/idempotency.py).
    requests_under_way: Claims = field(default_factory=Claims)

    def clear(self) -> None:
        for value in vars(self).values():
            if isinstance(value, BoundedCache):
                value.clear()

    def __repr__(self) -> str:
        return "<NodeCaches>"


# -- the context --------------------------------------------------------------------

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
