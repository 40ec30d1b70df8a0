"""Where an auditor reads a ledger from: the `LogSource` interface, a local ledger, an export.

Auditing logic (audit.py) sees only this interface, so one verifier checks a node over
gRPC (grpc_service.GrpcLogSource), over HTTP (http.HttpLogSource), in-process
(`LedgerSource`) or offline from an export file (`ExportSource`).

Export format: JSON lines, UTF-8. The first line is the header

    {"format":"shuqiao-ledger-export","v":1,"node":..,"public_key":"ed25519:..",
     "head":{signed tree head}, "witnessing":{witness record, witness_evidence.py}
     [,"certification":{the key's certification, anchor.py}]}

("witnessing" is absent from older exports.)

then one line per entry in index order, up to the head's size:

    {"i":<index>,"e":"<base64 of the canonical entry bytes>","h":"<hex stored leaf hash>"}

"h" is the leaf hash the node had stored; the verifier never trusts it for the verdict
(it recomputes every leaf from "e") but uses it to name the entry whose bytes changed.

An export is an archive: its head is what the node had signed when it was written, not
what the node presents now (`archived = True`), so a verifier that has seen a larger
head treats it as an older view to check for consistency, not as a rollback.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from protocols.merkle import hash_leaf

from node.core.errors import EvidenceError
from node.ledger.anchor import KeyCertification, current_certification, current_head
from node.ledger.log import Ledger
from node.ledger.signing import LedgerPublicKey, SignedTreeHead

__all__ = ["LogSource", "LedgerSource", "ExportSource", "SourceError", "export_lines",
           "write_export", "EXPORT_FORMAT"]

EXPORT_FORMAT = "shuqiao-ledger-export"


class SourceError(EvidenceError):
    """The source could not be read, or sent something malformed."""


@runtime_checkable
class LogSource(Protocol):
    """Read access to one node's ledger, whatever the transport."""

    name: str

    def public_key(self) -> LedgerPublicKey: ...

    def tree_head(self) -> SignedTreeHead: ...

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]: ...

    def inclusion_proof(self, index: int, size: int) -> list[bytes]: ...

    def consistency_proof(self, first: int, second: int) -> list[bytes]: ...

    # Optional: `key_certification() -> KeyCertification | None` (the key's certification
    # in the federation PKI, anchor.py) and `archived` (True: not the node's current head).


class LedgerSource:
    """A ledger in this process (the node itself, tests)."""

    def __init__(self, ledger: Ledger, name: str | None = None) -> None:
        self.ledger = ledger
        self.name = name or ledger.node_id

    def public_key(self) -> LedgerPublicKey:
        return self.ledger.public_key

    def key_certification(self) -> KeyCertification | None:
        return current_certification(self.ledger.engine, self.ledger.public_key)

    def tree_head(self) -> SignedTreeHead:
        return current_head(self.ledger)  # a fresh head only if entries were appended since

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        return self.ledger.entries(start, end)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self.ledger.inclusion_proof(index, size)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        return self.ledger.consistency_proof(first, second)

    def witnessing(self) -> dict:
        from node.ledger.witness import Witness
        from node.ledger.witness_evidence import evidence
        return evidence(Witness(self.ledger))


def export_lines(ledger: Ledger, head: SignedTreeHead) -> Iterator[bytes]:
    """The export of `ledger` up to `head`, line by line (for files and HTTP streaming)."""
    from node.ledger.witness import Witness
    from node.ledger.witness_evidence import evidence
    header = {"format": EXPORT_FORMAT, "v": 1, "node": head.node,
              "public_key": ledger.public_key.text, "head": head.to_dict(),
              "witnessing": evidence(Witness(ledger))}
    certification = current_certification(ledger.engine, ledger.public_key)
    if certification is not None:
        header["certification"] = certification.to_dict()
    yield json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    b64 = base64.b64encode
    for idx, data, leaf in ledger.entries_with_hashes(0, head.size):
        yield b'{"i":%d,"e":"%s","h":"%s"}\n' % (idx, b64(data), leaf.hex().encode())


def write_export(ledger: Ledger, out: IO[bytes], head: SignedTreeHead | None = None) -> SignedTreeHead:
    """Write an export of everything under `head` (default: a fresh head)."""
    head = head or current_head(ledger)
    buffer: list[bytes] = []
    for line in export_lines(ledger, head):
        buffer.append(line)
        if len(buffer) >= 4096:
            out.write(b"".join(buffer))
            buffer.clear()
    out.write(b"".join(buffer))
    return head


class ExportSource:
    """An export file, read offline. It serves no proofs; the verifier recomputes roots."""

    supports_proofs = False
    archived = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        try:
            with self.path.open("rb") as f:
                first = f.readline()
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            header = json.loads(first)
            if header.get("format") != EXPORT_FORMAT or header.get("v") != 1:
                raise SourceError(f"{self.path} is not a Shuqiao ledger export")
            self._key = LedgerPublicKey.from_text(header["public_key"])
            self._head = SignedTreeHead.from_dict(header["head"])
            self._witnessing = header.get("witnessing")
            certification = header.get("certification")
            self._certification = None if certification is None else \
                KeyCertification.from_dict(certification)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SourceError(f"{self.path}: malformed export header ({exc})") from None

    def public_key(self) -> LedgerPublicKey:
        return self._key

    def tree_head(self) -> SignedTreeHead:
        return self._head

    def key_certification(self) -> KeyCertification | None:
        return self._certification

    def witnessing(self) -> dict | None:
        """The node's witness record at export time (witness_evidence.py), if the file has one."""
        return self._witnessing

    def _lines(self, start: int, end: int) -> Iterator[tuple[int, bytes, str | None]]:
        b64decode = base64.b64decode
        with self.path.open("rb") as f:
            f.readline()
            for number, line in enumerate(f, start=2):
                try:
                    d = json.loads(line)
                    idx = d["i"]
                    if idx >= end:
                        return
                    if idx < start:
                        continue
                    data = b64decode(d["e"], validate=True)
                except (ValueError, KeyError, TypeError, binascii.Error):
                    raise SourceError(f"{self.path}: line {number} is not an export entry") from None
                yield idx, data, d.get("h")

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        for idx, data, _ in self._lines(start, end):
            yield idx, data

    def first_altered_entry(self) -> int | None:
        """The first entry whose bytes do not hash to the leaf hash the node had stored."""
        for idx, data, claimed in self._lines(0, self._head.size):
            if claimed is not None and hash_leaf(data).hex() != claimed:
                return idx
        return None

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        raise SourceError("an export file serves no proofs")

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        raise SourceError("an export file serves no proofs")
