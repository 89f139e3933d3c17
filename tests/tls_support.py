"""Checks of a CA's name constraint with real verifiers: OpenSSL's command line and cryptography's own."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError


def forge(ca_folder: Path, name: str, out: Path, passphrase: str | None = None) -> Path:
    """A server certificate for name signed with the CA's key directly, as whoever copied the key would."""
    ca = x509.load_pem_x509_certificate((ca_folder / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_folder / "ca.key").read_bytes(), passphrase.encode() if passphrase else None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    try:
        alternative: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        alternative = x509.DNSName(name)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([alternative]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(ca_key, hashes.SHA256())
    )
    out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out


def openssl_accepts(ca_file: Path, cert_file: Path) -> tuple[bool, str]:
    """Whether `openssl verify` accepts the certificate (only its first one) under the CA, and what it said."""
    leaf = cert_file.with_suffix(".leaf.pem")
    leaf.write_bytes(x509.load_pem_x509_certificate(cert_file.read_bytes()).public_bytes(serialization.Encoding.PEM))
    run = subprocess.run(["openssl", "verify", "-CAfile", str(ca_file), str(leaf)], capture_output=True, text=True, timeout=30)
    return run.returncode == 0, run.stdout + run.stderr


def server_verifier_accepts(ca_file: Path, cert_file: Path, name: str) -> bool:
    """Whether cryptography's web-PKI verifier accepts the certificate for name with only this CA trusted."""
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    leaf = x509.load_pem_x509_certificate(cert_file.read_bytes())
    try:
        subject: x509.DNSName | x509.IPAddress = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = x509.DNSName(name)
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(subject)
    try:
        verifier.verify(leaf, [])
    except VerificationError:
        return False
    return True
