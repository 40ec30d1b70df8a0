"""The auditor: is a node's ledger append-only, signed, and the same one it showed before?

`verify(source, known)` checks one node, through any `LogSource`:

1. the node's public key, pinned on first use in the auditor's state directory; a
   different key later is reported (it may be a legitimate rotation, but the auditor
   must learn of it out of band);
2. the latest signed tree head, against that key;
3. every head this auditor saw before: the log may only have grown (a smaller size is
   a rollback; the same size with another root, or a prefix that no longer hashes to
   the old root, is a fork);
4. the entries: all of them (default) are fetched and their Merkle root recomputed
   (merkle.verify_log, fast), or a range, each checked by an inclusion proof.

Where something breaks the verdict names the entry index or tree size: a recomputed
root that misses the head is narrowed to the first diverging entry by bisection with
consistency proofs (or, for an export, with the leaf hashes the node had stored).
The head is added to the known heads only when everything held.

`cross_check` lives in crosscheck.py.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols import merkle

from . import canonical
from .signing import LedgerPublicKey, SignatureError, SignedTreeHead, check_node_id
from .sources import LogSource, SourceError

__all__ = ["Finding", "Verdict", "KnownHeads", "verify", "locate_divergence"]

_KEEP_HEADS = 64


@dataclass(frozen=True)
class Finding:
    kind: str  # key_changed | head_signature | rollback | fork | entries | inclusion | source
    where: str  # "entry 17", "tree size 100", "public key"
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.detail}"


@dataclass
class Verdict:
    node: str = ""
    size: int = 0
    head: SignedTreeHead | None = None
    checked_entries: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings and self.head is not None

    def fail(self, kind: str, where: str, detail: str) -> None:
        self.findings.append(Finding(kind, where, detail))

    def __str__(self) -> str:
        if self.ok:
            return (f"OK: {self.node} ledger of {self.size} entries, {self.checked_entries} "
                    "checked, consistent with every head seen before")
        return "FAILED:\n" + "\n".join(f"  {f}" for f in self.findings)


class KnownHeads:
    """The auditor's memory: per node, the pinned key and every head it accepted.

    One small JSON file per node in `state_dir`, replaced atomically.
    """

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)

    def _path(self, node: str) -> Path:
        return self.dir / f"{check_node_id(node, 'node')}.json"

    def _load(self, node: str) -> dict[str, Any]:
        path = self._path(node)
        if not path.exists():
            return {"node": node, "public_key": None, "heads": []}
        return json.loads(path.read_text(encoding="utf-8"))

    def _save(self, node: str, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(node)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, sort_keys=True, indent=1), encoding="utf-8")
        os.replace(tmp, path)

    def key(self, node: str) -> LedgerPublicKey | None:
        text = self._load(node)["public_key"]
        return None if text is None else LedgerPublicKey.from_text(text)

    def heads(self, node: str) -> list[SignedTreeHead]:
        return [SignedTreeHead.from_dict(h) for h in self._load(node)["heads"]]

    def accept(self, node: str, key: LedgerPublicKey, head: SignedTreeHead) -> None:
        state = self._load(node)
        state["public_key"] = state["public_key"] or key.text
        if head.to_dict() not in state["heads"]:
            state["heads"].append(head.to_dict())
        # Consistency is transitive and every accepted head extended all before it, so
        # the latest alone would do; a few more are kept as evidence.
        state["heads"] = sorted(state["heads"], key=lambda h: h["size"])[-_KEEP_HEADS:]
        self._save(node, state)


def _prefix_roots(leaves: list[bytes], sizes: list[int]) -> dict[int, bytes]:
    """MTH of the first s leaves for every s in `sizes`, in one pass."""
    out: dict[int, bytes] = {}
    compact = merkle.CompactRange()
    for s in sorted(set(s for s in sizes if 0 < s <= len(leaves))):
        for h in leaves[compact.size:s]:
            compact.append(h)
        out[s] = compact.root()
    return out


def locate_divergence(source: LogSource, leaves: list[bytes], head: SignedTreeHead) -> int | None:
    """The first index where `leaves` (recomputed) leave the tree `head` commits to.

    Bisection on m: "the first m recomputed leaves are the first m leaves of the
    committed tree" holds up to the first diverging entry and fails after it; each step
    checks one consistency proof from the source. O(log^2 n) hashes fetched.
    """
    if getattr(source, "supports_proofs", True) is False:
        first = getattr(source, "first_altered_entry", None)
        return first() if first else None
    levels = [leaves]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([merkle.hash_children(below[i], below[i + 1])
                       for i in range(0, len(below) - 1, 2)])

    def holds(m: int) -> bool:
        root = merkle.CompactRange.from_store(m, lambda lv, ix: levels[lv][ix]).root()
        try:
            merkle.verify_consistency(m, head.size, root, head.root,
                                      source.consistency_proof(m, head.size))
            return True
        except (merkle.ProofError, SourceError):
            return False

    lo, hi = 0, head.size  # holds(lo) (vacuously for 0); find the largest m that holds
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if holds(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo if lo < head.size else None


def verify(source: LogSource, known: KnownHeads, *, start: int | None = None,
           end: int | None = None) -> Verdict:
    """Check `source` against its key and every head seen before; see the module doc.

    With `start`/`end`, only entries in that range are fetched, each with an inclusion
    proof; without, every entry is fetched and the root recomputed.
    """
    verdict = Verdict()
    try:
        _verify(source, known, verdict, start, end)
    except (SourceError, canonical.CanonicalError, merkle.ProofShapeError) as exc:
        verdict.fail("source", source.name, f"could not be read: {exc}")
    return verdict


def _verify(source: LogSource, known: KnownHeads, verdict: Verdict,
            start: int | None, end: int | None) -> None:
    key = source.public_key()
    head = source.tree_head()
    verdict.node, verdict.size, verdict.head = head.node, head.size, head
    pinned = known.key(head.node)
    if pinned is not None and pinned != key:
        verdict.fail("key_changed", "public key", f"the node now presents {key.text}, "
                     f"but {pinned.text} was pinned; confirm a rotation out of band")
        key = pinned  # judge the head by the key the auditor trusts
    try:
        head.verify(key)
    except SignatureError:
        verdict.fail("head_signature", f"tree size {head.size}",
                     "the signed tree head does not verify with the node's key")
        return
    earlier = known.heads(head.node)
    for old in earlier:
        if old.size > head.size:
            verdict.fail("rollback", f"tree size {head.size}",
                         f"the log shrank: a head of size {old.size} was seen before")
        elif old.size == head.size and old.root != head.root:
            verdict.fail("fork", f"tree size {head.size}",
                         "same size as a head seen before, different root")
    full = start is None and end is None
    if full:
        _check_all(source, head, earlier, verdict)
    else:
        _check_range(source, head, earlier, verdict, start or 0, min(end or head.size, head.size))
    if verdict.ok:
        known.accept(head.node, key, head)


def _check_all(source: LogSource, head: SignedTreeHead, earlier: list[SignedTreeHead],
               verdict: Verdict) -> None:
    leaves: list[bytes] = []
    hash_leaf = merkle.hash_leaf
    for expected, (idx, data) in enumerate(source.entries(0, head.size)):
        if idx != expected:
            verdict.fail("entries", f"entry {expected}", f"missing (the source sent {idx} next)")
            return
        leaves.append(hash_leaf(data))
    verdict.checked_entries = len(leaves)
    if len(leaves) != head.size:
        verdict.fail("entries", f"entry {len(leaves)}",
                     f"the source sent {len(leaves)} entries under a head of size {head.size}")
        return
    roots = _prefix_roots(leaves, [old.size for old in earlier])
    for old in earlier:
        if old.size < head.size and roots.get(old.size) != old.root:
            verdict.fail("fork", f"tree size {old.size}", "the first entries no longer hash "
                         "to the root of the head seen before at this size")
    try:
        merkle.verify_log(iter(leaves), head.size, head.root)
    except merkle.RootMismatchError:
        where = locate_divergence(source, leaves, head)
        verdict.fail("entries", f"entry {where}" if where is not None else f"tree size {head.size}",
                     "the entry does not match what the signed tree head commits to"
                     if where is not None else "the entries do not hash to the signed root")


def _check_range(source: LogSource, head: SignedTreeHead, earlier: list[SignedTreeHead],
                 verdict: Verdict, start: int, end: int) -> None:
    for old in earlier:
        if 0 < old.size < head.size:
            try:
                merkle.verify_consistency(old.size, head.size, old.root, head.root,
                                          source.consistency_proof(old.size, head.size))
            except merkle.ProofError:
                verdict.fail("fork", f"tree size {old.size}", "no valid consistency proof "
                             "from the head seen before to the current head")
    if start > end:
        verdict.fail("entries", f"entry {start}", f"beyond the signed tree size {head.size}")
        return
    expected = start
    for idx, data in source.entries(start, end):
        if idx != expected:
            verdict.fail("entries", f"entry {expected}", f"missing (the source sent {idx} next)")
            return
        try:
            merkle.verify_inclusion(merkle.hash_leaf(data), idx, head.size,
                                    source.inclusion_proof(idx, head.size), head.root)
        except merkle.ProofError:
            verdict.fail("inclusion", f"entry {idx}",
                         "not included under the signed tree head (entry or proof altered)")
        expected += 1
    verdict.checked_entries = expected - start
    if expected != end:
        verdict.fail("entries", f"entry {expected}", f"the source stopped before entry {end}")
