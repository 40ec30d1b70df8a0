"""What a node keeps in memory between queries: named, bounded caches, one set per context.

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
from typing import Callable, Generic, Hashable, TypeVar

__all__ = ["BoundedCache", "Claims", "NodeCaches"]

V = TypeVar("V")


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
    # The console: each partner's last probe (node/asker/probe.py), with when it was taken.
    partner_probes: BoundedCache = _cache("partners' probes", 256)
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
