"""The auditor: is a node's ledger append-only, signed by the node's key, and the same
one it showed before? What a Certificate Transparency monitor asks of a log it watches.

`verify(source, known, trust=Trust(...))` checks one node, through any `LogSource`:

1. the key (anchor.py): with `--ca`, the key's certification must chain to that CA, name
   the log's node, be valid at the head's time and certify exactly the key that signed
   the head; with `--expect-key`, the key must be that one. Without either, the key is
   trusted on first use, and the verdict says so;
2. the pin in the auditor's state directory: another key than the pinned one is
   accepted only when the log it verified records the rotation (a `ledger_key_rotated`
   entry whose handover the pinned key signed, chained to the new key), or when the
   auditor gave the new key with `--expect-key`;
3. the latest signed tree head, against that key;
4. every head this auditor saw before. A node presenting a smaller head as current
   (gRPC, HTTPS) rolled back; the same size with another root is a fork (both roots
   named). An export is an archive: an export smaller than a head seen before is an
   *older view*, verified in full and then checked to be a prefix of the newest head
   seen, against the leaf hashes of the longest log verified in full (known.py); an
   older view that is not a prefix is a fork, naming both roots;
5. the entries: all of them (default) are fetched and their Merkle root recomputed
   (merkle.verify_log, fast), or a range, each checked by an inclusion proof.

Where something breaks the verdict names the entry index or tree size: a recomputed
root that misses the head is narrowed to the first diverging entry by bisection with
consistency proofs (or, for an export, with the leaf hashes the node had stored).
The head (and the key) are remembered only when everything held.

Which key to trust (points 1 and 2) lives in trust.py, `cross_check` in crosscheck.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from protocols import merkle

from node.ledger import canonical
from node.ledger.anchor import CertificationError
from node.ledger.integrity import Problem
from node.ledger.known import KnownHeads
from node.ledger.signing import SignatureError, SignedTreeHead
from node.ledger.sources import LogSource, SourceError
from node.ledger.trust import (ROTATION_MARK,
    Trust,
    check_anchor,
    expected,
    follow_rotation,
    handed_over,
    key_changed,
    scan_rotations)

__all__ = ["Finding", "Verdict", "KnownHeads", "Trust", "verify", "locate_divergence"]


@dataclass(frozen=True)
class Finding(Problem):
    """What an auditor found, where: ``kind`` is one of wrong_node, key_not_certified,
    key_unexpected, key_changed, head_signature, rollback, fork, unchecked, entries,
    inclusion, source; ``where`` reads "entry 17", "tree size 100", "public key"."""


@dataclass
class Verdict:
    node: str = ""
    size: int = 0
    head: SignedTreeHead | None = None
    checked_entries: int = 0
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    older_than: SignedTreeHead | None = None  # set when the source is an older, consistent view

    @property
    def ok(self) -> bool:
        return not self.findings and self.head is not None

    def fail(self, kind: str, where: str, detail: str, *, at: int | None = None) -> None:
        """Record a finding (at position `at`: findings read in order of cause)."""
        finding = Finding(kind, where, detail)
        if at is None:
            self.findings.append(finding)
        else:
            self.findings.insert(at, finding)

    def __str__(self) -> str:
        if not self.ok:
            return "FAILED:\n" + "\n".join(f"  {f}" for f in self.findings)
        if self.older_than is not None:
            first = (f"OK: {self.node} ledger of {self.size} entries, {self.checked_entries} "
                     f"checked: an older, consistent view (a prefix of the newest head seen, "
                     f"size {self.older_than.size}, root {self.older_than.root.hex()[:16]}…)")
        else:
            first = (f"OK: {self.node} ledger of {self.size} entries, {self.checked_entries} "
                     "checked, consistent with every head seen before")
        return "\n".join([first, *(f"  {n}" for n in self.notes)])


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
           end: int | None = None, trust: Trust = Trust()) -> Verdict:
    """Check `source` against its key's anchor and every head seen before (module doc).

    With `start`/`end`, only entries in that range are fetched, each with an inclusion
    proof; without, every entry is fetched and the root recomputed.
    """
    verdict = Verdict()
    try:
        _verify(source, known, verdict, start, end, trust)
    except (SourceError, canonical.CanonicalError, merkle.ProofShapeError,
            CertificationError) as exc:
        verdict.fail("source", source.name, f"could not be read: {exc}")
    return verdict


def _verify(source: LogSource, known: KnownHeads, verdict: Verdict, start: int | None,
            end: int | None, trust: Trust) -> None:
    key = source.public_key()
    head = source.tree_head()
    node = head.node
    verdict.node, verdict.size, verdict.head = node, head.size, head
    archived = getattr(source, "archived", False) is True
    check_anchor(source, key, head, trust, verdict)
    pinned = known.key(node)
    changed = pinned is not None and pinned != key \
        and not (archived and key in known.earlier_keys(node))  # an archive from before a rotation
    confirmed = changed and expected(trust, key)
    try:
        head.verify(key)
    except SignatureError:
        if not changed or confirmed:
            verdict.fail("head_signature", f"tree size {head.size}",
                         "the signed tree head does not verify with the node's key")
            return
        key_changed(verdict, key, pinned, "")
        key, changed = pinned, False  # judge the head by the key the auditor trusts
        try:
            head.verify(key)
        except SignatureError:
            verdict.fail("head_signature", f"tree size {head.size}",
                         "the signed tree head does not verify with the pinned key")
            return
    earlier = known.heads(node)
    newest = max(earlier, key=lambda h: h.size, default=None)
    for old in earlier:
        if old.size > head.size and not archived:
            verdict.fail("rollback", f"tree size {head.size}", "the log shrank: the node "
                         f"presents this head as current, but a head of size {old.size} was "
                         "seen before")
        elif old.size == head.size and old.root != head.root:
            verdict.fail("fork", f"tree size {head.size}", "same size as a head seen before, "
                         f"different root: this head has root {head.root.hex()}, the head seen "
                         f"before {old.root.hex()}")
    watch = changed and not confirmed
    rotations: list[tuple[int, bytes]] = []
    leaves = None
    if start is None and end is None:
        leaves = _check_all(source, head, earlier, verdict, rotations)
    else:
        _check_range(source, head, earlier, verdict, start or 0, min(end or head.size, head.size))
        if watch:
            rotations = scan_rotations(source, head, verdict)
    if confirmed:
        verdict.notes.append(f"the pinned key {pinned.text} was replaced by the expected key")
    elif watch:
        follow_rotation(verdict, rotations, node, pinned, key, head)
    if archived and newest is not None and newest.size > head.size:
        _check_older_view(known, head, newest, verdict)
    if verdict.ok:
        known.accept(node, key, head, leaves=leaves, repin=changed,
                     handed_over=handed_over(rotations, node))


def _check_older_view(known: KnownHeads, head: SignedTreeHead, newest: SignedTreeHead,
                      verdict: Verdict) -> None:
    """An archive smaller than the newest head seen must be a prefix of it."""
    leaves = known.leaves(head.node)
    if len(leaves) < head.size:
        verdict.fail("unchecked", f"tree size {head.size}", "an older view than the newest head "
                     f"seen (size {newest.size}), which this auditor cannot check: it keeps the "
                     f"entries of only {len(leaves)}; verify the node, or its newest export, in "
                     "full first")
        return
    root = _prefix_roots(leaves, [head.size]).get(head.size, merkle.root([]))
    if root != head.root:
        verdict.fail("fork", f"tree size {head.size}", f"this head has root {head.root.hex()}, "
                     f"but the newest head seen (size {newest.size}, root {newest.root.hex()}) "
                     f"commits to root {root.hex()} at this size")
    elif verdict.ok:
        verdict.older_than = newest


def _check_all(source: LogSource, head: SignedTreeHead, earlier: list[SignedTreeHead],
               verdict: Verdict, rotations: list[tuple[int, bytes]] | None) -> list[bytes] | None:
    leaves: list[bytes] = []
    hash_leaf = merkle.hash_leaf
    for expected, (idx, data) in enumerate(source.entries(0, head.size)):
        if idx != expected:
            verdict.fail("entries", f"entry {expected}", f"missing (the source sent {idx} next)")
            return None
        leaves.append(hash_leaf(data))
        if rotations is not None and ROTATION_MARK in data:
            rotations.append((idx, data))
    verdict.checked_entries = len(leaves)
    if len(leaves) != head.size:
        verdict.fail("entries", f"entry {len(leaves)}",
                     f"the source sent {len(leaves)} entries under a head of size {head.size}")
        return None
    roots = _prefix_roots(leaves, [old.size for old in earlier])
    for old in earlier:
        if old.size < head.size and roots.get(old.size) != old.root:
            got = roots.get(old.size, merkle.root([]))
            verdict.fail("fork", f"tree size {old.size}", f"the first {old.size} entries hash to "
                         f"{got.hex()}, not to the root {old.root.hex()} of the head seen before "
                         "at this size")
    try:
        merkle.verify_log(iter(leaves), head.size, head.root)
    except merkle.RootMismatchError:
        where = locate_divergence(source, leaves, head)
        verdict.fail("entries", f"entry {where}" if where is not None else f"tree size {head.size}",
                     "the entry does not match what the signed tree head commits to"
                     if where is not None else "the entries do not hash to the signed root")
        return None
    return leaves


def _check_range(source: LogSource, head: SignedTreeHead, earlier: list[SignedTreeHead],
                 verdict: Verdict, start: int, end: int) -> None:
    for old in earlier:
        if 0 < old.size < head.size:
            try:
                merkle.verify_consistency(old.size, head.size, old.root, head.root,
                                          source.consistency_proof(old.size, head.size))
            except merkle.ProofError:
                verdict.fail("fork", f"tree size {old.size}", "no valid consistency proof "
                             f"from the head seen before (root {old.root.hex()}) to the current "
                             f"head (size {head.size}, root {head.root.hex()})")
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
