"""Certificates for the nodes' mutual TLS: a pilot federation CA and node identities.

A node's identity is its node id (``hrss``, ``mohrss``, ...), carried in its
certificate's subjectAltName twice:

* URI ``urn:shuqiao:node:<node_id>`` -- what authorisation reads
  (:func:`node_id_from_san` over gRPC's ``auth_context()``);
* DNS ``<node_id>.node.shuqiao`` -- what a client checks the server against,
  passed to gRPC as ``grpc.ssl_target_name_override`` (:func:`target_name`),
  so nodes can be reached at any address without that address being the identity.

:func:`init_ca` and :func:`issue_node_cert` stand up a pilot federation. In
production the certificates come from the government PKI instead; the rest of
this module (:func:`load_tls_identity`, :func:`node_id_from_cert`,
:func:`node_id_from_san`) accepts externally issued PEM cert/key files as long
as the certificate carries the SAN entries above and both serverAuth and
clientAuth extended key usage.

Keys are ECDSA P-256: gRPC's BoringSSL and every other TLS stack accept it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.core.clock import SYSTEM_CLOCK
from node.core.errors import InvalidInput
from node.keys.secrets import KeyEncryptionKey, SecretBytes, read_private_file, write_new_file

__all__ = ["CaFiles", "NODE_ID_PATTERN", "NodeCertFiles", "TlsIdentityError", "init_ca",
           "issue_node_cert", "load_tls_identity", "node_id_from_cert", "node_id_from_san",
           "node_uri", "target_name", "validate_node_id"]

# -- node ids in certificates ------------------------------------------------------

NODE_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{1,62}$")
_URI_PREFIX = "urn:shuqiao:node:"
_DNS_SUFFIX = ".node.shuqiao"


def validate_node_id(node_id: str) -> str:
    """Return ``node_id`` if well formed, else raise ``ValueError`` saying what is allowed."""
    if not isinstance(node_id, str) or not NODE_ID_PATTERN.fullmatch(node_id):
        raise ValueError(f"invalid node id {node_id!r}: use 2-63 characters, lowercase letters, "
                         "digits, '_' or '-', starting with a letter (for example 'hrss')")
    return node_id


def target_name(node_id: str) -> str:
    """The DNS name a client verifies the server against: ``<node_id>.node.shuqiao``."""
    return validate_node_id(node_id) + _DNS_SUFFIX


def node_uri(node_id: str) -> str:
    """The SAN URI that names a node: ``urn:shuqiao:node:<node_id>``."""
    return _URI_PREFIX + validate_node_id(node_id)


def node_id_from_san(values: Iterable[str | bytes]) -> str | None:
    """The node id named by SAN values (str or bytes, as gRPC's ``auth_context()`` gives
    ``x509_subject_alternative_name``): from the ``urn:shuqiao:node:`` URI, else from the
    ``*.node.shuqiao`` DNS name; None if neither, or if more than one node is named
    (ambiguous identities are refused)."""
    uri_ids: set[str] = set()
    dns_ids: set[str] = set()
    for value in values:
        if isinstance(value, bytes):
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                continue
        if value.startswith(_URI_PREFIX):
            candidate = value[len(_URI_PREFIX) :]
            if NODE_ID_PATTERN.fullmatch(candidate):
                uri_ids.add(candidate)
        elif value.lower().endswith(_DNS_SUFFIX):
            candidate = value[: -len(_DNS_SUFFIX)].lower()
            if NODE_ID_PATTERN.fullmatch(candidate):
                dns_ids.add(candidate)
    if len(uri_ids) > 1 or len(dns_ids) > 1:
        return None
    if uri_ids:
        (node_id,) = uri_ids
        return node_id if not dns_ids or dns_ids == uri_ids else None
    if dns_ids:
        (node_id,) = dns_ids
        return node_id
    return None


def node_id_from_cert(cert: bytes | x509.Certificate) -> str | None:
    """The node id in a certificate (PEM bytes: the first certificate is used), or None."""
    if not isinstance(cert, x509.Certificate):
        cert = x509.load_pem_x509_certificate(cert)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return node_id_from_san(
        [*san.get_values_for_type(x509.UniformResourceIdentifier), *san.get_values_for_type(x509.DNSName)]
    )


# -- issuing and loading ------------------------------------------------------------

_TLS_KEY_INFO = b"shuqiao tls key"
_CLOCK_SKEW = datetime.timedelta(minutes=5)

CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca.key"


class TlsIdentityError(InvalidInput):
    """A TLS certificate or key could not be loaded or does not fit; the message says why."""


class CaFiles(NamedTuple):
    cert_path: Path
    key_path: Path


class NodeCertFiles(NamedTuple):
    cert_path: Path
    key_path: Path
    chain_path: Path | None  # leaf then issuing CA, for peers that want the full chain


# -- issuing ---------------------------------------------------------------------


def init_ca(
    out_dir: str | os.PathLike[str],
    *,
    name: str = "Shuqiao pilot federation CA",
    days: int = 3650,
    passphrase: bytes | None = None,
    now: datetime.datetime | None = None,
) -> CaFiles:
    """Create a pilot federation CA: ``out_dir/ca.pem`` and ``out_dir/ca.key`` (0600, PKCS8).

    The CA can sign node certificates only (path length 0). Give ``passphrase``
    to keep its key encrypted at rest. Validity starts at ``now`` (default: the system clock).

    Raises:
        FileExistsError: either file already exists.
    """
    out_dir = Path(out_dir)
    files = CaFiles(out_dir / CA_CERT_NAME, out_dir / CA_KEY_NAME)
    _refuse_existing(files)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = now or SYSTEM_CLOCK.now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    encryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    write_new_file(files.key_path, _pkcs8(key, encryption), mode=0o600)
    write_new_file(files.cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return files


def issue_node_cert(
    ca_dir: str | os.PathLike[str] | CaFiles,
    node_id: str,
    out_dir: str | os.PathLike[str],
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 825,
    kek: KeyEncryptionKey | None = None,
    ca_passphrase: bytes | None = None,
    now: datetime.datetime | None = None,
) -> NodeCertFiles:
    """Issue a node certificate and key, signed by the CA in ``ca_dir``.

    Writes ``out_dir/<node_id>.pem``, ``<node_id>.key`` (0600) and
    ``<node_id>.chain.pem`` (leaf then CA). With ``kek`` the key is encrypted
    PKCS8 under a passphrase derived from the KEK, so it is never plaintext at
    rest; :func:`load_tls_identity` with the same KEK opens it.

    Args:
        ca_dir: directory made by :func:`init_ca`, or explicit :class:`CaFiles`.
        hosts: extra DNS names / IP addresses the node is reached at.

    Raises:
        ValueError: bad ``node_id``.
        FileExistsError: an output file already exists.
        TlsIdentityError: the CA key cannot be opened or does not match its certificate.
    """
    validate_node_id(node_id)
    if not isinstance(ca_dir, CaFiles):
        ca_dir = CaFiles(Path(ca_dir) / CA_CERT_NAME, Path(ca_dir) / CA_KEY_NAME)
    ca_files = ca_dir
    out_dir = Path(out_dir)
    files = NodeCertFiles(
        out_dir / f"{node_id}.pem", out_dir / f"{node_id}.key", out_dir / f"{node_id}.chain.pem"
    )
    _refuse_existing(files)

    ca_cert = x509.load_pem_x509_certificate(Path(ca_files.cert_path).read_bytes())
    ca_key = _load_private_key(Path(ca_files.key_path), ca_passphrase)
    _check_key_matches(ca_cert, ca_key, ca_files.key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _node_certificate(node_id, key, ca_cert, ca_key, hosts, days, now or SYSTEM_CLOCK.now())
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if kek is None:
        encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    else:
        encryption = serialization.BestAvailableEncryption(tls_key_passphrase(kek).expose())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    write_new_file(files.key_path, _pkcs8(key, encryption), mode=0o600)
    # Public, but they sit in the node's data directory, where every file is owner-only.
    write_new_file(files.cert_path, cert_pem, mode=0o600)
    write_new_file(files.chain_path, cert_pem + ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o600)
    return files


def _node_certificate(node_id: str, key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                      ca_key, hosts: Sequence[str], days: int, now: datetime.datetime
                      ) -> x509.Certificate:
    """A node's TLS certificate: its id in the SAN, server and client use, within the CA's life."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, target_name(node_id))]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(_san_entries(node_id, hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(ca_cert), critical=False)
        .sign(ca_key, _signature_hash(ca_key))  # type: ignore[arg-type]
    )


def _san_entries(node_id: str, hosts: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(node_uri(node_id)),
        x509.DNSName(target_name(node_id)),
    ]
    if isinstance(hosts, str):
        raise TypeError("hosts is a sequence of names, not one string")
    for host in hosts:
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host.lower())
        if entry not in entries:
            entries.append(entry)
    return entries


_NO_KEY_USAGE = dict.fromkeys(
    [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ],
    False,
)


def _key_usage(**granted: bool) -> x509.KeyUsage:
    return x509.KeyUsage(**{**_NO_KEY_USAGE, **granted})


def _signature_hash(ca_key: PrivateKeyTypes) -> hashes.HashAlgorithm | None:
    # An externally issued CA may use Ed25519/Ed448, which sign without a separate hash.
    if isinstance(ca_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    return hashes.SHA256()


def _authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


# -- loading ---------------------------------------------------------------------


def load_tls_identity(
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    *,
    kek: KeyEncryptionKey | None = None,
) -> tuple[bytes, SecretBytes]:
    """Load a node's certificate (chain) and private key for gRPC.

    Returns:
        ``(cert_pem, key_pem)``: the key as unencrypted PKCS8 PEM, wrapped, because
        ``grpc.ssl_server_credentials`` / ``grpc.ssl_channel_credentials`` take it in
        memory unencrypted -- pass ``key_pem.expose()`` there and nowhere else.

    Raises:
        TlsIdentityError: unreadable files, a sealed key without (or with the
            wrong) KEK, a plaintext key readable by group/other, or a key that
            does not belong to the certificate.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    try:
        cert_pem = cert_path.read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
    except (OSError, ValueError) as exc:
        raise TlsIdentityError(f"cannot read certificate {cert_path}: {exc}") from None
    passphrase = tls_key_passphrase(kek).expose() if kek is not None else None
    key = _load_private_key(key_path, passphrase)
    _check_key_matches(cert, key, key_path)
    return cert_pem, SecretBytes(_pkcs8(key, serialization.NoEncryption()))


def _load_private_key(path: Path, passphrase: bytes | None) -> PrivateKeyTypes:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise TlsIdentityError(f"cannot read private key {path}: {exc}") from None
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem
    if encrypted and passphrase is None:
        raise TlsIdentityError(
            f"private key {path} is sealed; it needs the node's key-encryption key (or passphrase)"
        )
    if not encrypted:
        try:
            pem = read_private_file(path)  # a plaintext key must be owner-only
        except OSError as exc:
            raise TlsIdentityError(str(exc)) from None
        passphrase = None
    try:
        return serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError):
        # Do not pass on the library's detail: "bad decrypt" vs "bad format" adds nothing an operator can use.
        raise TlsIdentityError(
            f"cannot open private key {path}: wrong key-encryption key or passphrase, or not a PEM private key"
        ) from None


def _check_key_matches(cert: x509.Certificate, key: object, key_path: str | os.PathLike[str]) -> None:
    public = getattr(key, "public_key", None)
    if public is None or public() != cert.public_key():
        raise TlsIdentityError(f"private key {key_path} does not belong to the certificate")


def tls_key_passphrase(kek: KeyEncryptionKey) -> SecretBytes:
    # Hex so that `openssl pkey -passin` can open the key too, given the derived value.
    return SecretBytes(kek.derive_key(info=_TLS_KEY_INFO).expose().hex().encode("ascii"))


def _pkcs8(key: PrivateKeyTypes, encryption: serialization.KeySerializationEncryption) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _refuse_existing(paths: Iterable[Path | None]) -> None:
    for path in paths:
        if path is not None and (path.exists() or path.is_symlink()):
            raise FileExistsError(f"{path} already exists; refusing to overwrite it")

