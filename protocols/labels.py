"""Sealed per-row labels for the labeled query kind.

Round (one-way, published with the tag table). For each of its rows y the agency holds
F = F_k(y), the 64-byte RFC 9497 output it computes with Evaluate when it builds the
tag table for (dataset version, partner, epoch). Next to the tag F[:16] it publishes::

    key   = HKDF-SHA256(IKM = F, salt = none, info = "shuqiao label key v1", L = 32)
    label = nonce || AES-256-GCM(key, nonce, padded attributes,
                                 aad = F[:16] || context)

with a fresh random 12-byte nonce per label, the row's allow-listed attributes as
canonical JSON (sorted keys, no spaces, UTF-8), padded ISO/IEC 7816-4 style (0x80 then
zeros) to a bucket: the next power of two from 32 to 4096 bytes, or one fixed ``pad_to``
for the whole table. The fund centre, after an OPRF query, holds F_k(x) for each of its
own x; where the tag matches it opens that row's label with ``open_label``.

Who learns what. The fund centre opens exactly the labels of rows it asked about and
matched: F_k(y) for any other y is a PRF output it cannot compute without the agency
answering an OPRF query on y, so other labels are AES-GCM ciphertexts under keys it
does not know, and reveal only their bucket (``pad_to`` hides even that). The ``context``
(see ``label_context``) and the tag are authenticated, so a label cannot be replayed
under another dataset, version, epoch or partner, or moved to another row. The agency
learns nothing from this step: it sends and receives nothing more. Every failure to
open is one opaque :class:`LabelError`.

References: RFC 9497 (OPRF), RFC 5869 (HKDF), NIST SP 800-38D (GCM). Primitives come
from pyca/cryptography; randomness is ``os.urandom`` unless a test passes ``nonces``.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "KEY_INFO", "OUTPUT_LEN", "TAG_LEN", "NONCE_LEN", "OVERHEAD", "MIN_BUCKET", "MAX_BUCKET",
    "LabelError", "bucket_size", "sealed_size", "encode_attributes", "label_context",
    "seal_labels", "open_label",
]

KEY_INFO = b"shuqiao label key v1"
BLOB_KEY_INFO = b"shuqiao blob key v1"  # fixed-size binary values (seal_blobs): another key
OUTPUT_LEN = 64  # RFC 9497 ristretto255-SHA512 Finalize output
TAG_LEN = 16
NONCE_LEN = 12
OVERHEAD = NONCE_LEN + 16  # nonce and GCM tag
MIN_BUCKET = 32
MAX_BUCKET = 4096
_SHA256 = hashes.SHA256()
_SCALARS = frozenset((str, int, float, bool, type(None)))
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                            allow_nan=False)


class LabelError(Exception):
    """A label could not be opened. Deliberately says nothing more."""

    def __init__(self) -> None:
        super().__init__("label cannot be opened")

    def __reduce__(self) -> tuple[type[LabelError], tuple[()]]:
        return (LabelError, ())


def bucket_size(length: int) -> int:
    """The padded plaintext size for an encoding of ``length`` bytes (marker included)."""
    size = MIN_BUCKET
    while size < length + 1:
        size *= 2
    if size > MAX_BUCKET:
        raise ValueError(f"label attributes exceed {MAX_BUCKET - 1} bytes once encoded")
    return size


def sealed_size(bucket: int) -> int:
    """Length of a sealed label whose plaintext was padded to ``bucket`` bytes."""
    return bucket + OVERHEAD


def encode_attributes(attrs: Mapping[str, object]) -> bytes:
    """Canonical JSON of a flat attribute mapping (str keys; str/number/bool/null values)."""
    if not isinstance(attrs, Mapping):
        raise ValueError("label attributes must be a mapping")
    for name, value in attrs.items():
        if type(name) is not str or type(value) not in _SCALARS:
            raise ValueError("label attributes must map names to str, number, bool or None")
    return _ENCODER.encode(attrs if type(attrs) is dict else dict(attrs)).encode("utf-8")


def label_context(*, owner: str, partner: str, dataset: str, version: int,
                  epoch: int) -> bytes:
    """The context both sides bind into every label of one tag table."""
    parts = [b"shuqiao/label/v1"] + [s.encode("utf-8") for s in (owner, partner, dataset)]
    return b"".join(struct.pack(">H", len(p)) + p for p in parts) + struct.pack(
        ">QQ", version, epoch)


def _key(output: bytes, info: bytes = KEY_INFO) -> bytes:
    return HKDF(_SHA256, 32, None, info).derive(output)


def seal_labels(outputs: Sequence[bytes], attrs: Sequence[Mapping[str, object]],
                context: bytes, *, pad_to: int | None = None,
                nonces: bytes | None = None) -> list[bytes]:
    """Seal each row's attributes under a key only the holder of its OPRF output has.

    Args:
        outputs: F_k(y) per row, 64 bytes each.
        attrs: the allow-listed attributes per row, same order.
        context: ``label_context(...)`` of the tag table.
        pad_to: pad every plaintext to this many bytes (hides the bucket too); by default
            each row goes to its own power-of-two bucket.
        nonces: 12 bytes per row, concatenated; for known-answer tests only.

    Raises:
        ValueError: mismatched lengths, a malformed output, or attributes that do not
            encode or do not fit.
    """
    n = len(outputs)
    if len(attrs) != n:
        raise ValueError("outputs and attrs differ in length")
    if pad_to is not None and pad_to != bucket_size(pad_to - 1):
        raise ValueError(f"pad_to must be a power of two from {MIN_BUCKET} to {MAX_BUCKET}")
    if nonces is None:
        nonces = os.urandom(NONCE_LEN * n)
    elif len(nonces) != NONCE_LEN * n:
        raise ValueError("nonces must be 12 bytes per row")
    context = bytes(context)
    sealed = []
    for i in range(n):
        output = outputs[i]
        if len(output) != OUTPUT_LEN:
            raise ValueError(f"output {i} is not {OUTPUT_LEN} bytes")
        plaintext = encode_attributes(attrs[i])
        size = bucket_size(len(plaintext)) if pad_to is None else pad_to
        if len(plaintext) >= size:
            raise ValueError(f"attributes of row {i} do not fit in pad_to={pad_to}")
        nonce = nonces[NONCE_LEN * i:NONCE_LEN * (i + 1)]
        padded = plaintext + b"\x80".ljust(size - len(plaintext), b"\x00")
        sealed.append(nonce + AESGCM(_key(output)).encrypt(
            nonce, padded, output[:TAG_LEN] + context))
    return sealed


def open_label(output: bytes, sealed: bytes, context: bytes) -> dict:
    """Open one label with the OPRF output of the row it belongs to.

    Raises:
        LabelError: for a wrong output, a tampered label or context, or bad padding.
    """
    try:
        if len(output) != OUTPUT_LEN or len(sealed) < sealed_size(MIN_BUCKET):
            raise ValueError
        padded = AESGCM(_key(bytes(output))).decrypt(
            bytes(sealed[:NONCE_LEN]), bytes(sealed[NONCE_LEN:]),
            bytes(output[:TAG_LEN]) + bytes(context))
        body = padded.rstrip(b"\x00")
        if not body.endswith(b"\x80"):
            raise ValueError
        attrs = json.loads(body[:-1].decode("utf-8"))
        if not isinstance(attrs, dict):
            raise ValueError
        return attrs
    except (InvalidTag, ValueError, TypeError):  # JSON and UTF-8 errors are ValueErrors
        raise LabelError() from None


def seal_blobs(outputs: Sequence[bytes], blobs: Sequence[bytes], context: bytes) -> list[bytes]:
    """Seal one fixed-size binary value per row (e.g. a ciphertext) like a label.

    The same construction as :func:`seal_labels` under a key derived with another HKDF
    info, with the bytes themselves as the plaintext: every value has the same length,
    so there is nothing to encode or pad. Each sealed blob is ``OVERHEAD`` bytes longer.

    Raises:
        ValueError: mismatched lengths, a malformed output, or values of unequal size.
    """
    if len(blobs) != len(outputs):
        raise ValueError("outputs and blobs differ in length")
    if len({len(b) for b in blobs}) > 1:
        raise ValueError("blobs must all have the same size")
    context, nonces = bytes(context), os.urandom(NONCE_LEN * len(outputs))
    sealed = []
    for i, (output, blob) in enumerate(zip(outputs, blobs)):
        if len(output) != OUTPUT_LEN:
            raise ValueError(f"output {i} is not {OUTPUT_LEN} bytes")
        nonce = nonces[NONCE_LEN * i:NONCE_LEN * (i + 1)]
        sealed.append(nonce + AESGCM(_key(output, BLOB_KEY_INFO)).encrypt(
            nonce, bytes(blob), output[:TAG_LEN] + context))
    return sealed


def open_blob(output: bytes, sealed: bytes, context: bytes, size: int) -> bytes:
    """Open one :func:`seal_blobs` value of ``size`` bytes.

    Raises:
        LabelError: for a wrong output, a tampered value or context, or another size.
    """
    try:
        if len(output) != OUTPUT_LEN or len(sealed) != size + OVERHEAD:
            raise ValueError
        return AESGCM(_key(bytes(output), BLOB_KEY_INFO)).decrypt(
            bytes(sealed[:NONCE_LEN]), bytes(sealed[NONCE_LEN:]),
            bytes(output[:TAG_LEN]) + bytes(context))
    except (InvalidTag, ValueError, TypeError):
        raise LabelError() from None
