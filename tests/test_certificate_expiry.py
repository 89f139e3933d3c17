"""The Admin tab warns 30 days before a certificate the gateway knows runs out (gateway/nodes/certificate_expiry.py):
its HTTPS certificate, the CA it checks the nodes against, and the certificate a node shows when dialled, read from a
real gRPC server's TLS handshake. A certificate with 20 days left is named; one with 90 days left is not."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc
from schulki.certificates import ensure_ca, ensure_certificate, load_certificate
from schulki.gateway.nodes.certificate_expiry import WARN_DAYS, expiring, gateway_files, known_certificates, node_certificate
from schulki.gateway.ui.certificates import certificate_warning
from schulki.gateway.web.i18n import strings

from tests import gateway_stack

PASSPHRASE = "korrekt-pferd-batterie-heftklammer"


@pytest.fixture(scope="module")
def school_ca(tmp_path_factory) -> Path:
    """A CA (ten years) with a certificate for 20 days (soon) and one for 90 days (later), each for localhost."""
    folder = tmp_path_factory.mktemp("ca")
    ensure_ca(folder, permitted=["schule.example", "localhost", "127.0.0.0/8"], passphrase=PASSPHRASE)
    for name, days in (("soon", 20), ("later", 90)):
        ensure_certificate(folder, name, ["localhost"], folder, valid_days=days, renew_days=0, ca_passphrase=PASSPHRASE)
    return folder


@contextmanager
def grpc_node(folder: Path, name: str) -> Iterator[str]:
    """A real gRPC server over TLS with the named certificate (it serves the health service); its address."""
    server = grpc.server(ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    credentials = grpc.ssl_server_credentials([((folder / f"{name}.key").read_bytes(), (folder / f"{name}.crt").read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def test_a_node_certificate_with_20_days_left_is_named_and_one_with_90_is_not(school_ca):
    config = gateway_stack.stack_config(school_ca / "data")
    config.gateway.tls_cert_file, config.gateway.tls_key_file = school_ca / "later.crt", school_ca / "later.key"
    config.runtime.tls_ca_file = school_ca / "ca.crt"
    with grpc_node(school_ca, "soon") as soon, grpc_node(school_ca, "later") as later:
        shown = node_certificate(soon)
        assert shown == load_certificate(school_ca / "soon.crt"), "the certificate the node shows in its handshake"
        known = asyncio.run(known_certificates(config, [soon, later]))
    assert {c.what for c in known} >= {"HTTPS", "CA", soon, later}
    assert [c.what for c in expiring(known)] == [soon]
    warning = certificate_warning(strings("de"), expiring(known))
    assert soon in warning and "noch 19 Tage" in warning and later not in warning and "HTTPS" not in warning


def test_the_gateways_own_https_certificate_at_20_days_warns_and_at_90_does_not(school_ca):
    config = gateway_stack.stack_config(school_ca / "data")
    config.gateway.tls_cert_file = school_ca / "soon.crt"
    soon = expiring(gateway_files(config))
    assert [c.what for c in soon] == ["HTTPS"] and soon[0].subject == "CN=localhost"
    config.gateway.tls_cert_file = school_ca / "later.crt"
    assert expiring(gateway_files(config)) == []
    # 90 days from now a certificate that ends in 90 days is inside the warning period.
    assert len(expiring(gateway_files(config), now=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=90 - WARN_DAYS + 1))) == 1
    assert "expired on" in certificate_warning(strings("en"), soon, now=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=21))


def test_the_admin_tab_shows_the_warning_to_admins_only(school_ca, tmp_path):
    config = gateway_stack.stack_config(tmp_path)
    config.runtime.tls_ca_file = school_ca / "ca.crt"
    with grpc_node(school_ca, "soon") as node:
        config.gateway.inference_addresses = [node]
        with gateway_stack.running_stack(tmp_path, services=(), config=config) as stack:
            admin = stack.add_user("cert-admin", "admin")
            student = stack.add_user("cert-student")
            shown = gateway_stack.ui_client(stack.url, {"Authorization": f"Bearer {admin.api_key}"}).predict(api_name="/admin_certificates")
            assert "Zertifikate laufen bald ab" in shown and node in shown and "HTTPS" not in shown
            with pytest.raises(Exception, match="Nur für Admins"):
                gateway_stack.ui_client(stack.url, {"Authorization": f"Bearer {student.api_key}"}).predict(api_name="/admin_certificates")
