"""Certificates for HTTPS and TLS: a small CA, and certificates it signs for named hosts.

Used by ``schulki up`` (a CA and a gateway certificate made once under the data
folder), by the roll-out (the school CA and one certificate per host, made on
the admin's machine by ``deploy/library/schulki_certificate.py``) and by the
tests. A CA rather than one self-signed certificate: a school trusts the CA
once (browsers, the admin's machine), and a host certificate can be renewed or
get a new name without anyone trusting anything again.

Everything is idempotent: a file that is there, signed by the CA, names what
it must name and is valid for longer than ``renew_days`` is left alone.

Schools install the CA on students' devices, so a CA that could sign for any
name would let whoever copies its key intercept every web site on them. A CA
made here is limited by a critical name constraint to the names and address
ranges it is given (``permitted``): the school's domain, its LAN, loopback.
A CA found without one is made again with a new key (its old certificate
would still vouch for any name), and its key can be kept encrypted with a
passphrase (the roll-out's school CA always is).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CA_VALID_DAYS = 3650
"""A school CA lasts ten years: trusting it again on every device is work."""

HOST_VALID_DAYS = 397
"""Host certificates: at most 398 days, the most Apple and Chrome accept from any CA."""

RENEW_DAYS = 30
"""A certificate with fewer days left than this is renewed by the next run."""


@dataclass
class Issued:
    """Where a certificate and its key are, and what this call did."""

    cert_file: Path
    key_file: Path
    changed: bool
    reason: str
    """Why it was (re)made, or "valid" when it was left alone."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable only by its owner, atomically (a crash leaves the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".new")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".new")
    temp.write_bytes(data)
    temp.chmod(0o644)
    os.replace(temp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: CertificateIssuerPrivateKeyTypes, passphrase: str | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with the passphrase when there is one ("ENCRYPTED PRIVATE KEY")."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def key_is_encrypted(path: Path) -> bool:
    return b"ENCRYPTED" in path.read_bytes().split(b"\n", 1)[0]


SIGNING_KEYS = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)
"""The key types that sign here (with SHA-256): schulki makes EC keys, an admin's own CA key may be RSA."""


def _load_key(path: Path, passphrase: str | None = None) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """A private key from a PEM file, refused with its type when it cannot sign here (DH, X25519, EdDSA).

    An encrypted key needs its passphrase; an unencrypted one is read without it.
    """
    encrypted = key_is_encrypted(path)
    if encrypted and not passphrase:
        raise ValueError(f"{path} is encrypted: its passphrase is needed to sign with it")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), passphrase.encode() if encrypted and passphrase else None)
    except ValueError as error:
        if encrypted:
            raise ValueError(f"{path}: the passphrase does not open this key") from error
        raise
    if not isinstance(key, SIGNING_KEYS):
        raise ValueError(f"{path}: a {type(key).__name__} cannot sign certificates")
    return key


def _key_id(key: CertificatePublicKeyTypes) -> bytes:
    """A public key as DER bytes: equal for the same key whatever its type (EdDSA keys have no public_numbers)."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def days_left(cert: x509.Certificate) -> float:
    return (cert.not_valid_after_utc - _now()).total_seconds() / 86400


def fingerprint(path: Path) -> str:
    """SHA-256 fingerprint as browsers show it (AB:CD:...)."""
    return load_certificate(path).fingerprint(hashes.SHA256()).hex(":").upper()


def split_names(names: list[str]) -> tuple[list[str], list[str]]:
    """Host names and IP addresses, in the order given, without repeats."""
    dns, ips = [], []
    for name in names:
        try:
            ip = str(ipaddress.ip_address(name))
        except ValueError:
            if name and name.lower() not in dns:
                dns.append(name.lower())
        else:
            if ip not in ips:
                ips.append(ip)
    return dns, ips


Subtree = x509.DNSName | x509.IPAddress


def _subtree(entry: str) -> Subtree:
    """A host name or domain (the name and every name under it), an address, or a network (CIDR)."""
    try:
        return x509.IPAddress(ipaddress.ip_network(entry.strip(), strict=False))
    except ValueError:
        name = entry.strip().lower().removeprefix("*.").rstrip(".")
        if not name or not all(part and len(part) <= 63 for part in name.split(".")):
            raise ValueError(f"{entry!r} is neither a host name, a domain, an address nor a network") from None
        return x509.DNSName(name)


def _covers(outer: Subtree, inner: Subtree) -> bool:
    """Whether a name constraint ``outer`` permits everything ``inner`` does (RFC 5280 matching)."""
    if isinstance(outer, x509.DNSName) and isinstance(inner, x509.DNSName):
        return inner.value == outer.value or inner.value.endswith("." + outer.value)
    if isinstance(outer, x509.IPAddress) and isinstance(inner, x509.IPAddress):
        a, b = outer.value, inner.value
        assert isinstance(a, ipaddress.IPv4Network | ipaddress.IPv6Network) and isinstance(b, ipaddress.IPv4Network | ipaddress.IPv6Network)
        return a.version == b.version and b.subnet_of(a)  # type: ignore[arg-type]
    return False


def _permitted(cert: x509.Certificate) -> list[Subtree] | None:
    """The names a CA certificate may sign for; None when it has no name constraint (any name)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    return [s for s in constraints.permitted_subtrees or [] if isinstance(s, x509.DNSName | x509.IPAddress)]


def school_subtrees(host_names: Sequence[str], addresses: Sequence[str] = (), extra: Sequence[str] = ()) -> list[str]:
    """What a school CA may sign for: each host's domain, the LAN ranges and addresses, loopback, and extra as given.

    A host name of three or more labels stands for its domain (``ki-gpu08.schule.example``
    gives ``schule.example``, so a new lab PC needs no new CA); a shorter one for itself,
    so ``pc1.lan`` never opens all of ``lan``. Addresses and networks are taken as given.
    """
    subtrees = ["localhost", "127.0.0.0/8", "::1"]
    for name in host_names:
        labels = name.strip().lower().rstrip(".").split(".")
        if labels == [""]:
            continue
        try:
            ipaddress.ip_address(name.strip())
        except ValueError:
            subtrees.append(".".join(labels[1:]) if len(labels) >= 3 else ".".join(labels))
        else:
            subtrees.append(name.strip())
    subtrees += [a for a in addresses if a] + [e for e in extra if e]
    return [_subtree_text(s) for s in _merge([_subtree(entry) for entry in subtrees])]


def _merge(subtrees: Sequence[Subtree]) -> list[Subtree]:
    """The subtrees without those another one already covers, in order."""
    merged: list[Subtree] = []
    for subtree in subtrees:
        if not any(_covers(kept, subtree) for kept in merged):
            merged = [kept for kept in merged if not _covers(subtree, kept)] + [subtree]
    return merged


def _subtree_text(subtree: Subtree) -> str:
    return subtree.value if isinstance(subtree, x509.DNSName) else str(subtree.value)


def outside_constraints(ca: x509.Certificate, dns: Sequence[str], ips: Sequence[str]) -> list[str]:
    """The names and addresses a CA certificate's name constraint does not permit (none when it has none)."""
    permitted = _permitted(ca)
    if permitted is None:
        return []
    wanted = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_network(ip)) for ip in ips]
    return [_subtree_text(w) for w in wanted if not any(_covers(p, w) for p in permitted)]


def ensure_ca(
    folder: Path,
    common_name: str = "schulki CA",
    valid_days: int = CA_VALID_DAYS,
    renew_days: int = RENEW_DAYS,
    *,
    permitted: Sequence[str] | None = None,
    passphrase: str | None = None,
) -> Issued:
    """The CA in folder (ca.crt, ca.key): made when missing, renewed with the same key when it runs out.

    Renewing with the same key and name keeps every certificate it signed valid,
    and devices that trust the old CA certificate keep trusting those.

    permitted (see ``school_subtrees``) limits the CA with a critical name
    constraint; a CA that permits less is renewed with the union of both, so a
    run that sees fewer hosts never takes a name away. None makes a CA without
    constraints (only tests that need no limit). With a passphrase the key is
    written encrypted, and an unencrypted one found there is encrypted.
    """
    cert_file, key_file = folder / "ca.crt", folder / "ca.key"
    key = _load_key(key_file, passphrase) if key_file.exists() else None
    wanted = _merge([_subtree(entry) for entry in permitted]) if permitted is not None else None
    subtrees = wanted
    encrypted_now = key is not None and bool(passphrase) and not key_is_encrypted(key_file)
    if encrypted_now:
        _write_private(key_file, _key_pem(key, passphrase))  # type: ignore[arg-type]
        log.warning("%s was not encrypted: it is now, with the passphrase given", key_file)
    if key is not None and cert_file.exists():
        cert = load_certificate(cert_file)
        old = _permitted(cert)
        missing = [w for w in wanted or [] if old is not None and not any(_covers(p, w) for p in old)]
        if wanted is not None and old is None:
            # Its certificate vouches for any name on every device that trusts it; only a new key ends that.
            key, reason = None, "made again: the old CA had no name constraints"
            log.warning(
                "%s had no name constraints: a new CA with a new key replaces it; install the new %s on every device"
                " that trusted the old one, and remove the old one there",
                cert_file,
                cert_file.name,
            )
        elif _key_id(cert.public_key()) != _key_id(key.public_key()):
            reason = "renewed: the certificate does not match the key"
        elif missing:
            subtrees, reason = [*(old or []), *missing], "renewed: it permits more names"
            log.warning(
                "%s now also permits %s: devices that trust its old certificate refuse certificates for those until it is installed again",
                cert_file,
                ", ".join(_subtree_text(m) for m in missing),
            )
        elif days_left(cert) <= renew_days:
            reason = "renewed: expires soon"
        else:
            return Issued(cert_file, key_file, encrypted_now, "key encrypted" if encrypted_now else "valid")
        if old is not None and not missing:
            subtrees = old  # a renewal keeps every name the CA permitted
    else:
        reason = "made"
    if key is None:
        key = _new_key()
        _write_private(key_file, _key_pem(key, passphrase))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if subtrees is not None:
        if not subtrees:
            raise ValueError("a CA limited to no names could sign nothing")
        builder = builder.add_extension(x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    _write_public(cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return Issued(cert_file, key_file, True, reason)


def _problem(
    cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes, ca: x509.Certificate, dns: list[str], ips: list[str], renew_days: int
) -> str | None:
    """Why a host certificate must be made again, or None."""
    if _key_id(cert.public_key()) != _key_id(key.public_key()):
        return "the certificate does not match the key"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "signed by another CA"
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "names nothing"
    if sorted(names.get_values_for_type(x509.DNSName)) != sorted(dns) or sorted(
        str(ip) for ip in names.get_values_for_type(x509.IPAddress)
    ) != sorted(ips):
        return "the names changed"
    if days_left(cert) <= renew_days:
        return "expires soon"
    return None


def ensure_certificate(
    folder: Path,
    name: str,
    names: list[str],
    ca_folder: Path,
    valid_days: int = HOST_VALID_DAYS,
    renew_days: int = RENEW_DAYS,
    *,
    ca_passphrase: str | None = None,
) -> Issued:
    """<name>.crt and <name>.key in folder, signed by the CA in ca_folder, for every host name and address in names.

    Made again when missing, when the names changed, when the CA changed, or
    when fewer than renew_days are left; the key is kept (a renewal changes no
    pinned key). The certificate file holds the certificate, then the CA's.
    A name the CA's name constraint does not permit is refused: no verifier would accept it.
    """
    dns, ips = split_names(names)
    if not dns and not ips:
        raise ValueError("a certificate needs at least one host name or address")
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    ca = load_certificate(ca_folder / "ca.crt")
    outside = outside_constraints(ca, dns, ips)
    if outside:
        allowed = ", ".join(_subtree_text(p) for p in _permitted(ca) or [])
        raise ValueError(f"{', '.join(outside)}: outside the names the CA may sign for ({allowed}); add them to the CA's permitted names")
    key = _load_key(key_file) if key_file.exists() else None
    if key is not None and cert_file.exists():
        reason = _problem(load_certificate(cert_file), key, ca, dns, ips, renew_days)
        if reason is None:
            return Issued(cert_file, key_file, False, "valid")
    else:
        reason = "made"
    ca_key = _load_key(ca_folder / "ca.key", ca_passphrase)  # only to sign: a valid certificate needs no passphrase
    if key is None:
        key = _new_key()
        _write_private(key_file, _key_pem(key))
    now = _now()
    alternative = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (dns or ips)[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=valid_days), ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_public(cert_file, cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    return Issued(cert_file, key_file, True, reason)


def machine_names(extra: Sequence[str] = ()) -> list[str]:
    """This machine's names and addresses, for a certificate students' browsers accept whichever they type."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    with contextlib.suppress(OSError):
        names.append(socket.getfqdn())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: picks the outgoing interface, sends nothing
            names.append(probe.getsockname()[0])
        except OSError:
            pass
    return [*names, *extra]


def ensure_local_https(data_dir: Path, extra_names: Sequence[str] = ()) -> tuple[Issued, Path]:
    """The gateway certificate of one machine (``schulki up``), under data_dir/tls, and the CA certificate to trust."""
    folder = Path(data_dir) / "tls"
    names = machine_names(list(extra_names))
    # This CA signs for this machine only: its exact names and addresses, nothing under them.
    ca = ensure_ca(folder, common_name=f"schulki CA {socket.gethostname()}", permitted=[*names])
    return ensure_certificate(folder, "gateway", names, folder), ca.cert_file
