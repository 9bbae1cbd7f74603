"""Test identities: API key digests, JWT signing keys with their JWKS, and a private PKI whose
client certificates carry SPIFFE URI SANs. Everything is generated per test session."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import time
from dataclasses import dataclass
from pathlib import Path

import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

ISSUER = "https://idp.test.cordon"
AUDIENCE = "cordon-gateway"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class SigningKey:
    alg: str
    kid: str
    private: object

    def jwk(self) -> dict:
        public = self.private.public_key()
        if self.alg == "RS256":
            j = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(public))
        elif self.alg == "ES256":
            j = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(public))
        else:
            j = json.loads(pyjwt.algorithms.OKPAlgorithm.to_jwk(public))
        j["kid"] = self.kid
        return j

    def mint(self, **overrides) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "dana", "team": "research", "iat": now, "exp": now + 600}
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return pyjwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid})


def signing_keys(prefix: str = "") -> list[SigningKey]:
    return [
        SigningKey("RS256", prefix + "rs", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        SigningKey("ES256", prefix + "es", ec.generate_private_key(ec.SECP256R1())),
        SigningKey("EdDSA", prefix + "ed", ed25519.Ed25519PrivateKey.generate()),
    ]


def jwt_provider(keys: list[SigningKey]) -> dict:
    return {
        "name": "test-idp",
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "jwks": {"keys": [k.jwk() for k in keys]},
        "clock_skew_secs": 5,
        "claims": {"user": "sub", "team": "team"},
    }


@dataclass
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path

    def client(self, name: str, spiffe_id: str | None) -> tuple[str, str]:
        """A client certificate (cert path, key path) with the given SPIFFE URI SAN."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.UniformResourceIdentifier(spiffe_id)] if spiffe_id else [x509.DNSName(f"{name}.test")]
        cert = _issue(self._ca_key, self._ca_cert, key.public_key(), name, sans, client=True)
        cp, kp = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return str(cp), str(kp)


def _issue(ca_key, ca_cert, public_key, cn: str, sans: list, client: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cordon test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue(ca_key, ca_cert, server_key.public_key(), "localhost",
                         [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], client=False)
    ca = directory / "ca.pem"
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    sc, sk = directory / "server.pem", directory / "server.key"
    sc.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    sk.write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pki = Pki(directory, ca, sc, sk)
    pki._ca_key, pki._ca_cert = ca_key, ca_cert
    return pki


def mtls_context(pki: Pki) -> dict:
    """DownstreamTlsContext fields that require a client certificate signed by the test CA."""
    return {
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": str(pki.server_cert)}, "private_key": {"filename": str(pki.server_key)}}],
            "validation_context": {"trusted_ca": {"filename": str(pki.ca)}},
        },
    }
