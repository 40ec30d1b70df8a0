"""The auditor's memory of the logs it watches (`--state-dir`), as a CT monitor keeps it.

Per node, in `state_dir`:

* `<node>.json`: the pinned ledger key, the node's earlier keys the auditor followed
  through ledgered rotations, and every head it accepted (the newest 64 are kept;
  consistency is transitive, the rest is evidence);
* `<node>.leaves`: the leaf hashes (32 bytes each) of the longest log it verified in
  full. With them an older export of the same log is checked offline: the first n
  leaves must hash to the older head's root, which proves that head is a prefix of
  every newer head accepted since (each of those was checked consistent with it).

Files are replaced atomically; a failing verification never changes them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from protocols import merkle

from node.ledger.signing import LedgerPublicKey, SignedTreeHead, check_node_id

__all__ = ["KnownHeads"]

_KEEP_HEADS = 64


class KnownHeads:
    """Per node: the pinned key, earlier keys, accepted heads and the longest verified leaves."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)

    def _path(self, node: str, suffix: str = ".json") -> Path:
        return self.dir / f"{check_node_id(node, 'node')}{suffix}"

    def _load(self, node: str) -> dict[str, Any]:
        path = self._path(node)
        if not path.exists():
            return {"node": node, "public_key": None, "heads": []}
        return json.loads(path.read_text(encoding="utf-8"))

    def _write(self, path: Path, data: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def key(self, node: str) -> LedgerPublicKey | None:
        text = self._load(node)["public_key"]
        return None if text is None else LedgerPublicKey.from_text(text)

    def earlier_keys(self, node: str) -> list[LedgerPublicKey]:
        """Keys this node signed with before a rotation the auditor followed."""
        return [LedgerPublicKey.from_text(k) for k in self._load(node).get("earlier_keys", [])]

    def heads(self, node: str) -> list[SignedTreeHead]:
        return [SignedTreeHead.from_dict(h) for h in self._load(node)["heads"]]

    def leaves(self, node: str) -> list[bytes]:
        """Leaf hashes of the longest log of `node` verified in full; none if absent or if
        they no longer hash to the root recorded with them."""
        path = self._path(node, ".leaves")
        state = self._load(node)
        if not path.exists() or "leaves_root" not in state:
            return []
        data = path.read_bytes()
        leaves = [data[i:i + 32] for i in range(0, len(data) - len(data) % 32, 32)]
        if len(leaves) != state["leaves_size"] or merkle.root(leaves).hex() != state["leaves_root"]:
            return []
        return leaves

    def accept(self, node: str, key: LedgerPublicKey, head: SignedTreeHead, *,
               leaves: list[bytes] | None = None, repin: bool = False,
               handed_over: list[LedgerPublicKey] = ()) -> None:
        """Remember `head` (checked); with `repin`, `key` replaces the pinned key, which
        joins the earlier keys, as do the `handed_over` keys of the log's rotations; with
        `leaves` (the head's whole log), keep them if no longer log was verified in full
        before."""
        state = self._load(node)
        pinned = state["public_key"]
        earlier = state.get("earlier_keys", [])
        if pinned is None:
            state["public_key"] = key.text
        elif repin and pinned != key.text:
            earlier.append(pinned)
            state["public_key"] = key.text
        earlier += [k.text for k in handed_over if k.text != state["public_key"]]
        state["earlier_keys"] = list(dict.fromkeys(earlier))
        if head.to_dict() not in state["heads"]:
            state["heads"].append(head.to_dict())
        state["heads"] = sorted(state["heads"], key=lambda h: h["size"])[-_KEEP_HEADS:]
        if leaves is not None and len(leaves) == head.size \
                and head.size > state.get("leaves_size", 0):
            self._write(self._path(node, ".leaves"), b"".join(leaves))
            state["leaves_size"], state["leaves_root"] = head.size, head.root.hex()
        self._write(self._path(node), json.dumps(state, sort_keys=True, indent=1).encode())
