"""Sealing under the KEK, KEK files, and secret wrappers that do not leak."""

from __future__ import annotations

import copy
import os
import pickle
import stat

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from node.keys.secrets import (KEK_ENV_VAR,
    KEK_SIZE,
    KekError,
    KeyEncryptionKey,
    SealError,
    SecretBytes,
    read_private_file,
    write_new_file)

PURPOSE = "oprf-key/hrss/flexible_workers/fund/epoch-3"


@pytest.fixture
def kek(tmp_path):
    return KeyEncryptionKey.create(tmp_path / "keys" / "kek")


# -- seal / unseal ------------------------------------------------------------------


def test_seal_round_trip(kek):
    blob = kek.seal(b"oprf secret scalar", purpose=PURPOSE)
    assert blob[0] == 1
    assert len(blob) == 1 + 12 + len(b"oprf secret scalar") + 16
    assert kek.unseal(blob, purpose=PURPOSE) == b"oprf secret scalar"


def test_seal_empty_plaintext_round_trips(kek):
    assert kek.unseal(kek.seal(b"", purpose=PURPOSE), purpose=PURPOSE) == b""


def test_seal_is_randomised(kek):
    assert kek.seal(b"x", purpose=PURPOSE) != kek.seal(b"x", purpose=PURPOSE)


def test_seal_accepts_secret_bytes(kek):
    blob = kek.seal(SecretBytes(b"k" * 32), purpose=PURPOSE)
    assert kek.unseal(blob, purpose=PURPOSE) == b"k" * 32


# Pinned: a change to the blob format or key derivation would strand every
# secret already sealed on disk. KEK = 00..1f, nonce = 12 zero bytes.
KNOWN_BLOB_HEX = "01" "000000000000000000000000" "660b9e233dd1175bebb40ee586325b544dd14b4b51"


def test_known_answer_is_stable():
    kek = KeyEncryptionKey(bytes(range(32)))
    blob = kek._seal_with_nonce(b"hello", purpose="test/purpose", nonce=bytes(12))
    assert blob.hex() == KNOWN_BLOB_HEX
    assert kek.unseal(blob, purpose="test/purpose") == b"hello"


def test_known_answer_matches_the_documented_recipe():
    # Reference written out from the module docstring, independent of its code.
    aes_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"shuqiao seal v1").derive(bytes(range(32)))
    ad = b"shuqiao sealed secret\x00" + b"\x01" + b"test/purpose"
    expected = b"\x01" + bytes(12) + AESGCM(aes_key).encrypt(bytes(12), b"hello", ad)
    assert expected.hex() == KNOWN_BLOB_HEX


@pytest.mark.parametrize(
    "other_purpose",
    [
        "oprf-key/hrss/flexible_workers/fund/epoch-4",
        "oprf-key/mohrss/flexible_workers/fund/epoch-3",
        PURPOSE + "\x00",
        PURPOSE.upper(),
    ],
)
def test_wrong_purpose_fails(kek, other_purpose):
    blob = kek.seal(b"secret", purpose=PURPOSE)
    with pytest.raises(SealError):
        kek.unseal(blob, purpose=other_purpose)


def _flip(blob: bytes, index: int) -> bytes:
    b = bytearray(blob)
    b[index] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b: _flip(b, 0), id="version"),
        pytest.param(lambda b: _flip(b, 1), id="nonce"),
        pytest.param(lambda b: _flip(b, 13), id="ciphertext"),
        pytest.param(lambda b: _flip(b, len(b) - 1), id="tag"),
        pytest.param(lambda b: b[:-1], id="truncated"),
        pytest.param(lambda b: b + b"\x00", id="trailing-garbage"),
        pytest.param(lambda b: b[:12], id="too-short"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"\x02" + b[1:], id="unknown-version"),
    ],
)
def test_tampered_blob_fails(kek, tamper):
    blob = kek.seal(b"secret payload", purpose=PURPOSE)
    with pytest.raises(SealError) as info:
        kek.unseal(tamper(blob), purpose=PURPOSE)
    # One opaque message whatever went wrong, and no chained cause to inspect.
    assert str(info.value) == "sealed blob could not be opened"
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_wrong_kek_fails(kek, tmp_path):
    other = KeyEncryptionKey.create(tmp_path / "other-kek")
    with pytest.raises(SealError):
        other.unseal(kek.seal(b"secret", purpose=PURPOSE), purpose=PURPOSE)


def test_non_bytes_blob_is_a_seal_error(kek):
    with pytest.raises(SealError):
        kek.unseal("not bytes", purpose=PURPOSE)  # type: ignore[arg-type]


@pytest.mark.parametrize("purpose", ["", None, b"bytes"])
def test_purpose_must_be_a_non_empty_string(kek, purpose):
    with pytest.raises(ValueError):
        kek.seal(b"x", purpose=purpose)  # type: ignore[arg-type]


def test_derive_key_is_deterministic_and_separated(kek):
    a = kek.derive_key(info=b"shuqiao tls key")
    assert a == kek.derive_key(info=b"shuqiao tls key")
    assert a != kek.derive_key(info=b"something else")
    assert isinstance(a, SecretBytes) and len(a) == 32
    with pytest.raises(ValueError):
        kek.derive_key(info=b"shuqiao seal v1")


# -- KEK files ----------------------------------------------------------------------


def test_create_writes_owner_only_file_and_load_round_trips(tmp_path):
    path = tmp_path / "state" / "kek"
    kek = KeyEncryptionKey.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.stat().st_size == KEK_SIZE
    loaded = KeyEncryptionKey.load(path)
    assert loaded == kek
    assert loaded.unseal(kek.seal(b"s", purpose=PURPOSE), purpose=PURPOSE) == b"s"


def test_create_refuses_to_overwrite(tmp_path):
    path = tmp_path / "kek"
    KeyEncryptionKey.create(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        KeyEncryptionKey.create(path)
    assert path.read_bytes() == before


def test_create_refuses_a_symlink(tmp_path):
    target = tmp_path / "elsewhere"
    (tmp_path / "kek").symlink_to(target)
    with pytest.raises(FileExistsError):
        KeyEncryptionKey.create(tmp_path / "kek")
    assert not target.exists()


def test_create_ignores_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "kek"
        KeyEncryptionKey.create(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_load_refuses_group_or_other_access(tmp_path, mode):
    path = tmp_path / "kek"
    KeyEncryptionKey.create(path)
    path.chmod(mode)
    with pytest.raises(KekError) as info:
        KeyEncryptionKey.load(path)
    assert str(path) in str(info.value)
    assert "chmod 600" in str(info.value)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_load_refuses_wrong_length(tmp_path, size):
    path = tmp_path / "kek"
    write_new_file(path, b"\x01" * size)
    with pytest.raises(KekError, match="expected 32"):
        KeyEncryptionKey.load(path)


def test_load_missing_file_says_how_to_create_one(tmp_path):
    with pytest.raises(KekError, match="shuqiao init"):
        KeyEncryptionKey.load(tmp_path / "absent")


def test_load_refuses_a_directory(tmp_path):
    (tmp_path / "d").mkdir(mode=0o700)
    with pytest.raises(KekError, match="not a regular file"):
        KeyEncryptionKey.load(tmp_path / "d")


def test_load_from_prefers_environment(tmp_path):
    file_kek = KeyEncryptionKey.create(tmp_path / "kek")
    env_key = bytes(range(100, 132))
    kek = KeyEncryptionKey.load_from(tmp_path / "kek", environ={KEK_ENV_VAR: env_key.hex() + "\n"})
    assert kek == KeyEncryptionKey(env_key)
    assert kek != file_kek
    assert KeyEncryptionKey.load_from(tmp_path / "kek", environ={}) == file_kek


def test_load_from_reads_os_environ(monkeypatch):
    monkeypatch.setenv(KEK_ENV_VAR, "ab" * 32)
    assert KeyEncryptionKey.load_from() == KeyEncryptionKey(b"\xab" * 32)


@pytest.mark.parametrize("value", ["zz" * 32, "ab" * 31, "ab" * 33, "abc"])
def test_load_from_rejects_bad_env_without_echoing_it(value):
    with pytest.raises(KekError) as info:
        KeyEncryptionKey.load_from(environ={KEK_ENV_VAR: value})
    assert value not in str(info.value)


def test_load_from_without_any_source():
    with pytest.raises(KekError, match=KEK_ENV_VAR):
        KeyEncryptionKey.load_from(None, environ={})


def test_read_private_file_and_write_new_file(tmp_path):
    path = tmp_path / "secret"
    write_new_file(path, b"abc")
    assert read_private_file(path) == b"abc"
    with pytest.raises(FileExistsError):
        write_new_file(path, b"other")


# -- no printing, no pickling -------------------------------------------------------


SECRET = bytes.fromhex("8f3a9c21d4e5b6a7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f")


def _assert_no_leak(text: str) -> None:
    assert SECRET.hex() not in text.lower()
    assert SECRET.hex()[:8] not in text.lower()
    assert repr(SECRET) not in text


def test_secret_bytes_redacted():
    s = SecretBytes(SECRET)
    assert repr(s) == "<SecretBytes: redacted>"
    assert str(s) == "<SecretBytes: redacted>"
    for text in (repr(s), str(s), f"{s}", f"{s!r}", repr([s]), repr({"k": s})):
        _assert_no_leak(text)
    assert s.expose() == SECRET


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_bytes_cannot_be_pickled(protocol):
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(SecretBytes(SECRET), protocol=protocol)


def test_secret_bytes_pickle_hooks_all_refuse():
    s = SecretBytes(SECRET)
    for hook in (s.__reduce__, lambda: s.__reduce_ex__(4), s.__getstate__):
        with pytest.raises(TypeError, match="cannot be pickled"):
            hook()


def test_secret_bytes_comparison_and_hashing():
    assert SecretBytes(SECRET) == SecretBytes(SECRET)
    assert SecretBytes(SECRET) != SecretBytes(SECRET[:-1] + b"\x00")
    assert SecretBytes(SECRET) != SECRET  # no comparing against raw bytes
    with pytest.raises(TypeError):
        hash(SecretBytes(SECRET))
    assert copy.deepcopy(SecretBytes(SECRET)) == SecretBytes(SECRET)


def test_secret_bytes_rejects_non_bytes():
    with pytest.raises(TypeError):
        SecretBytes("a string")  # type: ignore[arg-type]


def test_kek_redacted_and_not_picklable():
    kek = KeyEncryptionKey(SECRET)
    assert repr(kek) == "<KeyEncryptionKey: redacted>"
    for text in (repr(kek), str(kek), f"{kek}", repr([kek])):
        _assert_no_leak(text)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(kek, protocol=protocol)
    with pytest.raises(TypeError):
        hash(kek)
    assert not hasattr(kek, "__dict__")


# -- sealers under derived keys (stored dataset rows) ------------------------------

def test_sealer_round_trips_bound_to_its_purpose(kek):
    sealer = kek.sealer(info=b"shuqiao test records")
    blob = sealer.seal(b"rows", purpose="dataset-rows/a/v1/id1/chunk0")
    assert kek.sealer(info=b"shuqiao test records").unseal(
        blob, purpose="dataset-rows/a/v1/id1/chunk0") == b"rows"
    for purpose in ("dataset-rows/a/v1/id1/chunk1", "dataset-rows/a/v2/id1/chunk0"):
        with pytest.raises(SealError):
            sealer.unseal(blob, purpose=purpose)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(SealError):
        sealer.unseal(bytes(tampered), purpose="dataset-rows/a/v1/id1/chunk0")


def test_sealer_key_is_separate_from_the_kek_seal_and_other_uses(kek):
    purpose = "same purpose"
    with pytest.raises(SealError):  # a key sealed under the KEK does not open as a record
        kek.sealer(info=b"shuqiao test records").unseal(kek.seal(b"x", purpose=purpose), purpose=purpose)
    with pytest.raises(SealError):
        kek.unseal(kek.sealer(info=b"shuqiao test records").seal(b"x", purpose=purpose), purpose=purpose)
    with pytest.raises(SealError):
        kek.sealer(info=b"other use").unseal(
            kek.sealer(info=b"shuqiao test records").seal(b"x", purpose=purpose), purpose=purpose)
    with pytest.raises(ValueError):
        kek.sealer(info=b"shuqiao seal v1")


def test_sealer_redacted_and_not_picklable(kek):
    sealer = kek.sealer(info=b"shuqiao test records")
    assert repr(sealer) == "<Sealer: redacted>"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(sealer)
