"""Node ids in certificates: a node's identity is its id, named twice in the subjectAltName.

* URI ``urn:shuqiao:node:<node_id>`` -- what authorisation reads
  (:func:`node_id_from_san` over gRPC's ``auth_context()``);
* DNS ``<node_id>.node.shuqiao`` -- what a client checks the server against (:func:`target_name`).

node/keys/pki.py issues and loads the certificates and is where callers import these from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cryptography import x509

NODE_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{1,62}$")
_URI_PREFIX = "urn:shuqiao:node:"
_DNS_SUFFIX = ".node.shuqiao"


def validate_node_id(node_id: str) -> str:
    """Return ``node_id`` if well formed, else raise ``ValueError`` saying what is allowed."""
    if not isinstance(node_id, str) or not NODE_ID_PATTERN.fullmatch(node_id):
        raise ValueError(
            f"invalid node id {node_id!r}: use 2-63 characters, lowercase letters, digits, '_' or '-', "
            "starting with a letter (for example 'hrss')"
        )
    return node_id


def target_name(node_id: str) -> str:
    """The DNS name a client verifies the server against: ``<node_id>.node.shuqiao``."""
    return validate_node_id(node_id) + _DNS_SUFFIX


def node_uri(node_id: str) -> str:
    """The SAN URI that names a node: ``urn:shuqiao:node:<node_id>``."""
    return _URI_PREFIX + validate_node_id(node_id)


def node_id_from_san(values: Iterable[str | bytes]) -> str | None:
    """The node id named by a certificate's subjectAltName entries, or None.

    Args:
        values: SAN values as strings or bytes, e.g. what gRPC gives under
            ``context.auth_context()["x509_subject_alternative_name"]``:
            ``[b'urn:shuqiao:node:hrss', b'hrss.node.shuqiao', b'localhost', b'127.0.0.1']``.

    Returns:
        The id from the ``urn:shuqiao:node:`` URI, or, when there is none, from
        the ``*.node.shuqiao`` DNS name. None when neither is present, or when
        the certificate names more than one node (ambiguous identities are refused).
    """
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
