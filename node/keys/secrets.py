"""Secrets at rest, sealed under the node's key-encryption key (KEK).

Each node holds one KEK: 32 random bytes in a file only its owner may read
(``shuqiao init`` creates it), or, in containers, the hex in ``SHUQIAO_KEK_HEX``.
Every other secret the node keeps on disk (OPRF keys, the TLS private key, ...)
is stored sealed under it, so a copied database or backup alone reveals nothing.

Sealed blob, version 1::

    0x01 || nonce (12 bytes) || AES-256-GCM ciphertext || tag (16 bytes)

The AES key is HKDF-SHA256(KEK, info="shuqiao seal v1"), never the KEK itself,
so the KEK can also feed other derivations (see :meth:`KeyEncryptionKey.derive_key`)
without two uses ever sharing a key. The version byte and the caller's
``purpose`` (for example ``"oprf-key/hrss/flexible_workers/fund/epoch-3"``) are
the associated data: a blob sealed for one purpose does not open as another.
Nonces are random; at the volumes a node seals (keys, not records) the 2**32
messages-per-key bound of random-nonce GCM is far away.

Opening fails with one opaque :class:`SealError`, whatever went wrong, so an
error message cannot tell a tamperer which part of the blob they got right.

Python cannot promise to wipe memory; :class:`SecretBytes` and the KEK only keep
secrets out of logs, reprs, pickles and accidental comparisons.
"""

from __future__ import annotations

import hmac
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from node.core.errors import StorageError

__all__ = [
    "KEK_ENV_VAR",
    "KEK_SIZE",
    "KekError",
    "KeyEncryptionKey",
    "SealError",
    "Sealer",
    "SecretBytes",
    "Unpicklable",
    "read_private_file",
    "write_new_file",
]

KEK_SIZE = 32
KEK_ENV_VAR = "SHUQIAO_KEK_HEX"

_SEAL_VERSION = 1
_NONCE_SIZE = 12
_TAG_SIZE = 16
_SEAL_INFO = b"shuqiao seal v1"
_SEAL_AD_PREFIX = b"shuqiao sealed secret\x00"


class SealError(StorageError):
    """A sealed blob could not be opened (tampered, wrong purpose, wrong KEK, bad format)."""


class KekError(StorageError):
    """The key-encryption key could not be created or loaded; the message says how to fix it."""


def _refuse_pickle(obj: object) -> NoReturn:
    raise TypeError(f"{type(obj).__name__} holds secret material and cannot be pickled")


class Unpicklable:
    """Refuses every pickling path (``__reduce__``, ``__reduce_ex__``, ``__getstate__``)."""

    __slots__ = ()

    def __reduce__(self) -> NoReturn:
        _refuse_pickle(self)

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        _refuse_pickle(self)

    def __getstate__(self) -> NoReturn:
        _refuse_pickle(self)


class _Secret(Unpicklable):
    """An immutable secret: redacted when printed, never hashed, compared in constant time,
    copied by sharing the object (copy() would otherwise hit ``__reduce_ex__``)."""

    __slots__ = ()

    def _material(self) -> bytes:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            return NotImplemented
        return hmac.compare_digest(self._material(), other._material())

    # A hash of the secret would be a stable fingerprint of it.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: redacted>"

    __str__ = __repr__

    def __copy__(self) -> _Secret:
        return self

    def __deepcopy__(self, memo: object) -> _Secret:
        return self


class SecretBytes(_Secret):
    """Secret bytes that do not print, pickle or compare in variable time.

    Getting the bytes out is an explicit, greppable call: :meth:`expose`.
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes | bytearray | memoryview) -> None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"SecretBytes wraps bytes, not {type(value).__name__}")
        self._value = bytes(value)

    def expose(self) -> bytes:
        """Return the secret itself. Every caller is a place the secret leaves this wrapper."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def _material(self) -> bytes:
        return self._value


class KeyEncryptionKey(_Secret):
    """The node's key-encryption key. Create with :meth:`create`, load with :meth:`load_from`."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        # Private seam: production code goes through create/load/load_from.
        if not isinstance(key, bytes) or len(key) != KEK_SIZE:
            raise KekError(f"a key-encryption key is exactly {KEK_SIZE} bytes")
        self._key = key

    # -- construction ------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> KeyEncryptionKey:
        """Generate a new KEK and write it to ``path`` with mode 0600.

        Raises:
            FileExistsError: ``path`` already exists; a KEK is never overwritten,
                since every secret sealed under the old one would be lost.
        """
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = os.urandom(KEK_SIZE)
        write_new_file(path, key, mode=0o600)
        return cls(key)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyEncryptionKey:
        """Load the KEK from ``path``.

        Raises:
            KekError: missing, not a regular file, readable by group/other, or not 32 bytes.
        """
        path = Path(path)
        try:
            key = read_private_file(path)
        except FileNotFoundError:
            raise KekError(f"no key-encryption key at {path}; create one with `shuqiao init`") from None
        except PermissionError as exc:
            raise KekError(str(exc)) from None
        if len(key) != KEK_SIZE:
            raise KekError(
                f"key-encryption key file {path} holds {len(key)} bytes, expected {KEK_SIZE}; "
                "it is damaged or not a KEK"
            )
        return cls(key)

    @classmethod
    def from_hex(cls, text: str) -> KeyEncryptionKey:
        """Parse a KEK given as 64 hex digits (the ``SHUQIAO_KEK_HEX`` form)."""
        try:
            key = bytes.fromhex(text.strip())
        except ValueError:
            # Never echo the value: it is (close to) the secret.
            raise KekError(f"{KEK_ENV_VAR} is not hex; expected {2 * KEK_SIZE} hex digits") from None
        if len(key) != KEK_SIZE:
            raise KekError(f"{KEK_ENV_VAR} has {2 * len(key)} hex digits, expected {2 * KEK_SIZE}")
        return cls(key)

    @classmethod
    def load_from(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> KeyEncryptionKey:
        """Load the KEK from ``SHUQIAO_KEK_HEX`` if set (containers), else from ``path``.

        The environment wins when both are available, so a container can inject
        its KEK without editing the configuration that names a file.

        Raises:
            KekError: neither source is available, or the chosen one is invalid.
        """
        env = os.environ if environ is None else environ
        text = env.get(KEK_ENV_VAR)
        if text:
            return cls.from_hex(text)
        if path is None:
            raise KekError(f"no key-encryption key: set {KEK_ENV_VAR} or configure a KEK file")
        return cls.load(path)

    # -- use ----------------------------------------------------------------

    def seal(self, plaintext: bytes, *, purpose: str) -> bytes:
        """Encrypt and authenticate ``plaintext``, bound to ``purpose``.

        Returns:
            ``version || nonce || ciphertext || tag``.
        """
        return self._seal_with_nonce(plaintext, purpose=purpose, nonce=os.urandom(_NONCE_SIZE))

    def _seal_with_nonce(self, plaintext: bytes, *, purpose: str, nonce: bytes) -> bytes:
        # Seam for known-answer tests; seal() is the only production caller.
        if isinstance(plaintext, SecretBytes):
            plaintext = plaintext.expose()
        header = bytes([_SEAL_VERSION])
        ciphertext = self._aead().encrypt(nonce, bytes(plaintext), _associated_data(header, purpose))
        return header + nonce + ciphertext

    def unseal(self, blob: bytes, *, purpose: str) -> bytes:
        """Open a blob made by :meth:`seal` with the same ``purpose``.

        Raises:
            SealError: for every failure, without saying which.
        """
        ad_check = _associated_data(bytes([_SEAL_VERSION]), purpose)  # bad purpose is a caller bug
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise SealError("sealed blob could not be opened")
        blob = bytes(blob)
        if len(blob) < 1 + _NONCE_SIZE + _TAG_SIZE or blob[0] != _SEAL_VERSION:
            raise SealError("sealed blob could not be opened")
        nonce, ciphertext = blob[1 : 1 + _NONCE_SIZE], blob[1 + _NONCE_SIZE :]
        try:
            return self._aead().decrypt(nonce, ciphertext, ad_check)
        except InvalidTag:
            raise SealError("sealed blob could not be opened") from None

    def sealer(self, *, info: bytes) -> "Sealer":
        """A :class:`Sealer` under HKDF-SHA256(KEK, info), for records rather than keys.

        Bulk data (a dataset's stored rows, say) is sealed under its own derived key,
        so it never shares a key -- or a random-nonce budget -- with the sealed keys.
        """
        return Sealer(self.derive_key(info=info))

    def derive_key(self, *, info: bytes, length: int = 32) -> SecretBytes:
        """Derive an independent key for another use: HKDF-SHA256(KEK, info).

        ``info`` names the use (for example ``b"shuqiao tls key"``) and must
        differ from every other use of the KEK.
        """
        if not isinstance(info, bytes) or not info:
            raise ValueError("info must be non-empty bytes naming the use of the derived key")
        if info == _SEAL_INFO:
            raise ValueError("that info is reserved for sealing")
        return SecretBytes(_hkdf(self._key, info, length))

    def _aead(self) -> AESGCM:
        return AESGCM(_hkdf(self._key, _SEAL_INFO, 32))

    # No printing, no pickling, no hashing: _Secret.

    def _material(self) -> bytes:
        return self._key


class Sealer(Unpicklable):
    """Seals and opens blobs in the format above, under a key derived from the KEK.

    Made by :meth:`KeyEncryptionKey.sealer`; the AEAD is set up once, so sealing many
    records costs one AES-GCM pass each. Like the KEK, it neither prints nor pickles.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: SecretBytes) -> None:
        if not isinstance(key, SecretBytes) or len(key) != 32:
            raise TypeError("a Sealer takes a 32-byte derived key (KeyEncryptionKey.sealer)")
        self._aead = AESGCM(key.expose())

    def seal(self, plaintext: bytes, *, purpose: str) -> bytes:
        """``version || nonce || ciphertext || tag``, bound to ``purpose``."""
        header = bytes([_SEAL_VERSION])
        nonce = os.urandom(_NONCE_SIZE)
        return header + nonce + self._aead.encrypt(nonce, bytes(plaintext),
                                                   _associated_data(header, purpose))

    def unseal(self, blob: bytes, *, purpose: str) -> bytes:
        """Open a blob sealed with the same ``purpose``.

        Raises:
            SealError: for every failure, without saying which.
        """
        ad = _associated_data(bytes([_SEAL_VERSION]), purpose)
        if (not isinstance(blob, (bytes, bytearray, memoryview))
                or len(blob) < 1 + _NONCE_SIZE + _TAG_SIZE or blob[0] != _SEAL_VERSION):
            raise SealError("sealed blob could not be opened")
        blob = bytes(blob)
        try:
            return self._aead.decrypt(blob[1:1 + _NONCE_SIZE], blob[1 + _NONCE_SIZE:], ad)
        except InvalidTag:
            raise SealError("sealed blob could not be opened") from None

    def __repr__(self) -> str:
        return "<Sealer: redacted>"

    __str__ = __repr__


def _hkdf(key: bytes, info: bytes, length: int) -> bytes:
    # No salt: the KEK is already uniformly random (RFC 5869, section 3.1).
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


def _associated_data(header: bytes, purpose: str) -> bytes:
    if not isinstance(purpose, str) or not purpose:
        raise ValueError("purpose must be a non-empty string naming what the secret is for")
    return _SEAL_AD_PREFIX + header + purpose.encode("utf-8")


# -- files holding secrets ------------------------------------------------------


def write_new_file(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Create ``path`` holding ``data`` with ``mode``; never overwrite or follow a symlink.

    Raises:
        FileExistsError: ``path`` already exists.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, mode)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)  # the umask may have narrowed (or a weird one widened) the mode
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def read_private_file(path: str | os.PathLike[str]) -> bytes:
    """Read a secret file, refusing one that group or others could read or write.

    Symlinks are followed (Kubernetes mounts secrets through them); the checks
    apply to the file actually opened.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        PermissionError: not a regular file, or mode allows group/other access.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PermissionError(f"{path} is not a regular file")
        if os.name == "posix" and st.st_mode & 0o077:
            raise PermissionError(
                f"{path} is accessible to group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"it holds a secret: run `chmod 600 {path}`"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
