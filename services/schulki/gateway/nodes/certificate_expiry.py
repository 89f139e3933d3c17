"""When the certificates the gateway knows run out, for the Admin tab's warning.

The gateway knows its own HTTPS certificate (with the chain in its file), the CA
it checks the nodes against (``runtime.tls_ca_file``), its own service
certificate, the one-machine CA under the data folder, and the certificate each
node shows when the gateway dials it. The roll-out renews them at 60 days left
(deploy/renew-certificates); a certificate with fewer than ``WARN_DAYS`` left
means that renewal did not happen, so the Admin tab says which one and when.
A node's certificate is read from a TLS handshake of its own (nothing is sent
after it): gRPC's Python client does not show the peer's certificate.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from schulki.config import Config

WARN_DAYS = 30
"""Days before the end of a certificate from which the Admin tab warns."""

HANDSHAKE_TIMEOUT_S = 3.0
"""A node that does not finish its TLS handshake in this time is left out (the health table shows it down)."""


@dataclass(frozen=True)
class Expiry:
    """One certificate: what it is to the gateway (HTTPS, CA, a node's address), whom it names, and when it ends."""

    what: str
    subject: str
    not_after: datetime.datetime

    def days_left(self, now: datetime.datetime | None = None) -> float:
        return (self.not_after - (now or datetime.datetime.now(datetime.UTC))).total_seconds() / 86400


def _expiries(what: str, certificates: Iterable[x509.Certificate]) -> list[Expiry]:
    return [Expiry(what, c.subject.rfc4514_string(), c.not_valid_after_utc) for c in certificates]


def file_certificates(path: Path | None) -> list[x509.Certificate]:
    """Every certificate in a PEM file (a certificate with its chain); none when there is no such file or it does not read."""
    if path is None or not Path(path).is_file():
        return []
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError):
        return []


def gateway_files(config: Config) -> list[Expiry]:
    """The certificates in the gateway's own files: HTTPS (and its chain), its service certificate, the CAs it trusts."""
    local = Path(config.data_dir) / "tls"  # what the gateway made itself when it was given no HTTPS certificate
    https = config.gateway.tls_cert_file or local / "gateway.crt"
    found = _expiries("HTTPS", file_certificates(https)) if config.gateway.https else []
    for what, path in (
        ("CA", config.runtime.tls_ca_file),
        ("CA", None if config.gateway.tls_cert_file else local / "ca.crt"),
        ("TLS", config.runtime.tls_cert_file),
    ):
        found += [e for e in _expiries(what, file_certificates(path)) if e not in found]
    return found


def node_certificate(address: str, server_name: str | None = None, timeout: float = HANDSHAKE_TIMEOUT_S) -> x509.Certificate | None:
    """The certificate a node shows in a TLS handshake (not checked: this only reads its dates), or None."""
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])  # gRPC servers expect HTTP/2
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=server_name or host.strip("[]")) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    return x509.load_der_x509_certificate(der) if der else None


async def known_certificates(config: Config, node_addresses: Sequence[str]) -> list[Expiry]:
    """The gateway's own certificates, and each reachable node's when the gateway speaks TLS to its nodes."""
    found = gateway_files(config)
    if config.runtime.tls_ca_file is None:
        return found
    shown = await asyncio.gather(*(asyncio.to_thread(node_certificate, address) for address in node_addresses))
    for address, certificate in zip(node_addresses, shown, strict=True):
        found += _expiries(address, [certificate] if certificate else [])
    return found


def expiring(certificates: Iterable[Expiry], within_days: float = WARN_DAYS, now: datetime.datetime | None = None) -> list[Expiry]:
    """Those that end within the given days (or have ended), soonest first."""
    return sorted((c for c in certificates if c.days_left(now) < within_days), key=lambda c: c.not_after)
