"""Pilot CA, node certificates, sealed TLS keys, and a real mutual-TLS gRPC round trip."""

from __future__ import annotations

import ipaddress
import stat
from concurrent import futures

import grpc
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from node.keys import pki
from node.keys.secrets import KeyEncryptionKey, SecretBytes


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """One pilot CA with two nodes (hrss sealed under its KEK, mohrss plain), and a rogue CA."""
    root = tmp_path_factory.mktemp("federation")
    ca = pki.init_ca(root / "ca")
    hrss_kek = KeyEncryptionKey.create(root / "hrss" / "kek")
    hrss = pki.issue_node_cert(root / "ca", "hrss", root / "hrss", kek=hrss_kek)
    mohrss = pki.issue_node_cert(root / "ca", "mohrss", root / "mohrss", hosts=("mohrss.gov.example", "10.0.0.7", "::1"))
    rogue_ca = pki.init_ca(root / "rogue-ca", name="Not the federation")
    rogue = pki.issue_node_cert(root / "rogue-ca", "hrss", root / "rogue")
    return {
        "root": root,
        "ca": ca,
        "hrss": hrss,
        "hrss_kek": hrss_kek,
        "mohrss": mohrss,
        "rogue_ca": rogue_ca,
        "rogue": rogue,
    }


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# -- CA ---------------------------------------------------------------------------


def test_ca_certificate(federation):
    ca = federation["ca"]
    cert = _cert(ca.cert_path)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert cert.subject == cert.issuer
    assert cert.subject.rfc4514_string() == "CN=Shuqiao pilot federation CA"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert.verify_directly_issued_by(cert)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 3650


def test_ca_key_is_owner_only_pkcs8(federation):
    key_path = federation["ca"].key_path
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_init_ca_refuses_to_overwrite(federation):
    before = federation["ca"].cert_path.read_bytes()
    with pytest.raises(FileExistsError):
        pki.init_ca(federation["root"] / "ca")
    assert federation["ca"].cert_path.read_bytes() == before


def test_ca_with_passphrase(tmp_path):
    ca = pki.init_ca(tmp_path / "ca", passphrase=b"correct horse")
    assert ca.key_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(pki.TlsIdentityError):
        pki.issue_node_cert(tmp_path / "ca", "hrss", tmp_path / "out")
    with pytest.raises(pki.TlsIdentityError):
        pki.issue_node_cert(tmp_path / "ca", "hrss", tmp_path / "out", ca_passphrase=b"wrong")
    files = pki.issue_node_cert(tmp_path / "ca", "hrss", tmp_path / "out", ca_passphrase=b"correct horse")
    _cert(files.cert_path).verify_directly_issued_by(_cert(ca.cert_path))


# -- node certificates ------------------------------------------------------------


def test_node_chain_verifies(federation):
    ca_cert = _cert(federation["ca"].cert_path)
    for node in ("hrss", "mohrss"):
        leaf = _cert(federation[node].cert_path)
        leaf.verify_directly_issued_by(ca_cert)
        with pytest.raises((ValueError, InvalidSignature)):
            leaf.verify_directly_issued_by(_cert(federation["rogue_ca"].cert_path))


def test_node_certs_pass_rfc5280_path_validation(federation):
    # cryptography's verifier is strict (RFC 5280 profile): it checks the
    # extensions a TLS stack relies on, as server and as client.
    store = Store([_cert(federation["ca"].cert_path)])
    leaf = _cert(federation["hrss"].cert_path)
    server = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(pki.target_name("hrss")))
    server.verify(leaf, [])
    client = PolicyBuilder().store(store).build_client_verifier()
    verified = client.verify(leaf, [])
    assert x509.UniformResourceIdentifier("urn:shuqiao:node:hrss") in verified.subjects
    with pytest.raises(x509.verification.VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName(pki.target_name("mohrss"))).verify(leaf, [])
    rogue_store = Store([_cert(federation["rogue_ca"].cert_path)])
    with pytest.raises(x509.verification.VerificationError):
        PolicyBuilder().store(rogue_store).build_client_verifier().verify(leaf, [])


def test_node_cert_contents(federation):
    cert = _cert(federation["mohrss"].cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:shuqiao:node:mohrss"]
    assert san.get_values_for_type(x509.DNSName) == ["mohrss.node.shuqiao", "mohrss.gov.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7"), ipaddress.ip_address("::1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = _cert(federation["ca"].cert_path).extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert cert.public_key().curve.name == "secp256r1"


def test_default_hosts(federation):
    san = _cert(federation["hrss"].cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hrss.node.shuqiao", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_chain_file_is_leaf_then_ca(federation):
    files = federation["mohrss"]
    chain = x509.load_pem_x509_certificates(files.chain_path.read_bytes())
    assert chain == [_cert(files.cert_path), _cert(federation["ca"].cert_path)]


def test_issue_refuses_to_overwrite(federation):
    root = federation["root"]
    with pytest.raises(FileExistsError):
        pki.issue_node_cert(root / "ca", "mohrss", root / "mohrss")


@pytest.mark.parametrize(
    "node_id",
    ["", "h", "HRSS", "1hrss", "-hrss", "hr.ss", "hr ss", "hrss/x", "a" * 64, "hrss\n", "人社局", None],
)
def test_node_id_validation(tmp_path, federation, node_id):
    with pytest.raises(ValueError, match="invalid node id"):
        pki.issue_node_cert(federation["root"] / "ca", node_id, tmp_path)
    with pytest.raises(ValueError):
        pki.target_name(node_id)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("node_id", ["hr", "hrss", "flexible_workers", "city-7", "a" + "b" * 62])
def test_valid_node_ids(node_id):
    assert pki.validate_node_id(node_id) == node_id
    assert pki.target_name(node_id) == f"{node_id}.node.shuqiao"


# -- node ids from SANs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # What gRPC's auth_context() gives (bytes, in certificate order).
        ([b"urn:shuqiao:node:hrss", b"hrss.node.shuqiao", b"localhost", b"127.0.0.1"], "hrss"),
        (["urn:shuqiao:node:hrss", "hrss.node.shuqiao"], "hrss"),
        ([b"urn:shuqiao:node:hrss"], "hrss"),
        ([b"localhost", b"hrss.node.shuqiao"], "hrss"),  # DNS fallback
        ([b"HRSS.Node.Shuqiao"], "hrss"),  # DNS is case-insensitive
        ([b"localhost", b"127.0.0.1"], None),
        ([], None),
        ([b"urn:shuqiao:node:hrss", b"urn:shuqiao:node:mohrss"], None),  # two identities
        ([b"urn:shuqiao:node:hrss", b"mohrss.node.shuqiao"], None),  # URI and DNS disagree
        ([b"hrss.node.shuqiao", b"mohrss.node.shuqiao"], None),
        ([b"urn:shuqiao:node:HRSS"], None),
        ([b"urn:shuqiao:node:"], None),
        ([b"urn:shuqiao:node:hrss/../x"], None),
        ([b"x.hrss.node.shuqiao"], None),
        ([b"evil.example/urn:shuqiao:node:hrss"], None),
        ([b"\xff\xfe", b"urn:shuqiao:node:hrss"], "hrss"),
    ],
)
def test_node_id_from_san(values, expected):
    assert pki.node_id_from_san(values) == expected


def test_node_id_from_cert(federation):
    assert pki.node_id_from_cert(federation["hrss"].cert_path.read_bytes()) == "hrss"
    assert pki.node_id_from_cert(_cert(federation["mohrss"].cert_path)) == "mohrss"
    assert pki.node_id_from_cert(federation["mohrss"].chain_path.read_bytes()) == "mohrss"
    assert pki.node_id_from_cert(federation["ca"].cert_path.read_bytes()) is None


# -- sealed TLS keys ----------------------------------------------------------------


def test_sealed_key_is_not_plaintext_at_rest(federation):
    pem = federation["hrss"].key_path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert b"BEGIN PRIVATE KEY" not in pem
    assert stat.S_IMODE(federation["hrss"].key_path.stat().st_mode) == 0o600
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)


def test_sealed_key_needs_the_right_kek(federation, tmp_path):
    files = federation["hrss"]
    with pytest.raises(pki.TlsIdentityError, match="sealed"):
        pki.load_tls_identity(files.cert_path, files.key_path)
    wrong = KeyEncryptionKey.create(tmp_path / "wrong-kek")
    with pytest.raises(pki.TlsIdentityError, match="wrong key-encryption key"):
        pki.load_tls_identity(files.cert_path, files.key_path, kek=wrong)
    cert_pem, key_pem = pki.load_tls_identity(files.cert_path, files.key_path, kek=federation["hrss_kek"])
    assert cert_pem == files.cert_path.read_bytes()
    assert isinstance(key_pem, SecretBytes)
    assert "PRIVATE KEY" not in repr(key_pem)
    key = serialization.load_pem_private_key(key_pem.expose(), password=None)
    assert key.public_key() == _cert(files.cert_path).public_key()


def test_plain_key_loads_and_must_be_owner_only(federation, tmp_path):
    files = pki.issue_node_cert(federation["root"] / "ca", "plain", tmp_path)
    assert files.key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    cert_pem, key_pem = pki.load_tls_identity(files.cert_path, files.key_path)
    assert key_pem.expose() == files.key_path.read_bytes()
    files.key_path.chmod(0o644)
    with pytest.raises(pki.TlsIdentityError, match="chmod 600"):
        pki.load_tls_identity(files.cert_path, files.key_path)


def test_key_must_match_certificate(federation):
    with pytest.raises(pki.TlsIdentityError, match="does not belong"):
        pki.load_tls_identity(federation["mohrss"].cert_path, federation["rogue"].key_path)


def test_external_files_load(tmp_path, federation):
    # As a government-PKI issued pair would arrive: PEM cert chain + PKCS8 key of any kind.
    files = federation["mohrss"]
    cert_pem, key_pem = pki.load_tls_identity(files.chain_path, files.key_path)
    assert len(x509.load_pem_x509_certificates(cert_pem)) == 2
    assert pki.node_id_from_cert(cert_pem) == "mohrss"


# -- a real mutual-TLS gRPC round trip ---------------------------------------------


class _RecordingHealth(health.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self.auth_contexts: list[dict[str, list[bytes]]] = []
        self.peer_node_ids: list[str | None] = []

    def Check(self, request, context):
        auth = context.auth_context()
        self.auth_contexts.append(auth)
        self.peer_node_ids.append(pki.node_id_from_san(auth.get("x509_subject_alternative_name", [])))
        return super().Check(request, context)


@pytest.fixture(scope="module")
def mohrss_server(federation):
    """mohrss serving health checks over mTLS on 127.0.0.1, port 0."""
    cert_pem, key_pem = pki.load_tls_identity(federation["mohrss"].cert_path, federation["mohrss"].key_path)
    credentials = grpc.ssl_server_credentials(
        [(key_pem.expose(), cert_pem)],
        root_certificates=federation["ca"].cert_path.read_bytes(),
        require_client_auth=True,
    )
    servicer = _RecordingHealth()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(grace=None)


def _check(federation, address, client_files, *, kek=None, server_id="mohrss", roots=None):
    cert_pem, key_pem = pki.load_tls_identity(client_files.cert_path, client_files.key_path, kek=kek)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=roots or federation["ca"].cert_path.read_bytes(),
        private_key=key_pem.expose(),
        certificate_chain=cert_pem,
    )
    options = [("grpc.ssl_target_name_override", pki.target_name(server_id))]
    with grpc.secure_channel(address, credentials, options=options) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)


def test_mutual_tls_round_trip(federation, mohrss_server):
    address, servicer = mohrss_server
    response = _check(federation, address, federation["hrss"], kek=federation["hrss_kek"])
    assert response.status == health_pb2.HealthCheckResponse.SERVING

    assert servicer.peer_node_ids[-1] == "hrss"
    auth = servicer.auth_contexts[-1]
    assert auth["transport_security_type"] == [b"ssl"]
    assert auth["x509_subject_alternative_name"] == [
        b"urn:shuqiao:node:hrss",
        b"hrss.node.shuqiao",
        b"localhost",
        b"127.0.0.1",
    ]
    assert pki.node_id_from_cert(auth["x509_pem_cert"][0]) == "hrss"


def test_client_from_another_ca_is_refused(federation, mohrss_server):
    address, servicer = mohrss_server
    seen = len(servicer.auth_contexts)
    with pytest.raises(grpc.RpcError) as info:
        _check(federation, address, federation["rogue"])
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(servicer.auth_contexts) == seen  # the handler never ran


def test_server_must_match_target_name(federation, mohrss_server):
    address, _ = mohrss_server
    with pytest.raises(grpc.RpcError) as info:
        _check(federation, address, federation["hrss"], kek=federation["hrss_kek"], server_id="hrss")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_refuses_server_from_another_ca(federation, mohrss_server):
    address, _ = mohrss_server
    with pytest.raises(grpc.RpcError) as info:
        _check(
            federation,
            address,
            federation["hrss"],
            kek=federation["hrss_kek"],
            roots=federation["rogue_ca"].cert_path.read_bytes(),
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
