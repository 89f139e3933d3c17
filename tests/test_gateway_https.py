"""HTTPS at the gateway: its own certificate made once, plain HTTP only redirects, and how to trust it (issue 12)."""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest
from cryptography import x509
from schulki.certificates import ensure_ca, ensure_certificate, fingerprint, load_certificate
from schulki.config import Config
from schulki.gateway.launch import https_lines
from schulki.gateway.web.https import https_files, redirect_location, start_redirect_server

from tests.conftest import free_port
from tests.gateway_stack import connect, running_stack, stack_config
from tests.tls_support import forge, openssl_accepts, server_verifier_accepts


def _names(path) -> set[str]:
    value = load_certificate(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(value.get_values_for_type(x509.DNSName)) | {str(ip) for ip in value.get_values_for_type(x509.IPAddress)}


def test_one_machine_makes_its_certificate_once_for_its_names_and_says_how_to_trust_it(tmp_path):
    config = Config(data_dir=tmp_path)
    config.gateway.tls_names = ["ki.schule.example"]
    files = https_files(config)
    assert files.ca_file == tmp_path / "tls" / "ca.crt"
    assert {"localhost", "127.0.0.1", socket.gethostname().lower(), "ki.schule.example"} <= _names(files.cert_file)
    assert files.key_file.stat().st_mode & 0o777 == 0o600 and (tmp_path / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600
    load_certificate(files.cert_file).verify_directly_issued_by(load_certificate(files.ca_file))
    before = files.cert_file.read_bytes(), files.ca_file.read_bytes()
    assert https_files(config).cert_file.read_bytes() == before[0], "made once, then left alone"
    shown = "\n".join(https_lines(config))
    assert str(files.ca_file) in shown and fingerprint(files.ca_file) in shown and "update-ca-certificates" in shown
    assert (files.cert_file.read_bytes(), files.ca_file.read_bytes()) == before


def test_the_machines_own_ca_signs_only_for_the_machines_names(tmp_path):
    """Attack: someone copies var/tls/ca.key from a machine whose CA students trust, and signs for another web site."""
    config = Config(data_dir=tmp_path)
    config.gateway.tls_names = ["ki.schule.example"]
    files = https_files(config)
    assert files is not None and files.ca_file is not None
    constraint = load_certificate(files.ca_file).extensions.get_extension_for_class(x509.NameConstraints)
    assert constraint.critical
    accepted, said = openssl_accepts(files.ca_file, files.cert_file)
    assert accepted, said
    assert server_verifier_accepts(files.ca_file, files.cert_file, "ki.schule.example")
    assert server_verifier_accepts(files.ca_file, files.cert_file, "127.0.0.1")
    for name in ("www.google.com", "schule.example", "8.8.8.8"):
        forged = forge(tmp_path / "tls", name, tmp_path / f"forged-{name}.pem")
        accepted, said = openssl_accepts(files.ca_file, forged)
        assert not accepted and "subtree violation" in said, f"{name}: {said}"
        assert not server_verifier_accepts(files.ca_file, forged, name), name


def test_a_machines_ca_from_before_name_constraints_is_replaced_with_a_new_key(tmp_path, caplog):
    ensure_ca(tmp_path / "tls", common_name="schulki CA old")
    old_key = (tmp_path / "tls" / "ca.key").read_bytes()
    ensure_certificate(tmp_path / "tls", "gateway", ["localhost"], tmp_path / "tls")
    files = https_files(Config(data_dir=tmp_path))
    assert files is not None and files.ca_file is not None
    assert (tmp_path / "tls" / "ca.key").read_bytes() != old_key and "had no name constraints" in caplog.text
    load_certificate(files.ca_file).extensions.get_extension_for_class(x509.NameConstraints)
    load_certificate(files.cert_file).verify_directly_issued_by(load_certificate(files.ca_file))


def test_the_schools_own_certificate_is_used_as_given_and_https_can_be_turned_off(tmp_path):
    config = Config(data_dir=tmp_path)
    config.gateway.tls_cert_file, config.gateway.tls_key_file = tmp_path / "own.crt", tmp_path / "own.key"
    assert https_files(config).cert_file == tmp_path / "own.crt" and https_files(config).ca_file is None
    assert not (tmp_path / "tls").exists()
    config.gateway.https = False
    assert https_files(config) is None


def test_certificates_are_renewed_before_they_run_out_and_when_their_names_change(tmp_path):
    ca = ensure_ca(tmp_path)
    first = ensure_certificate(tmp_path, "gw", ["gw", "10.0.0.5"], tmp_path, valid_days=20, renew_days=30)
    assert first.changed and first.reason == "made"
    key = first.key_file.read_bytes()
    renewed = ensure_certificate(tmp_path, "gw", ["gw", "10.0.0.5"], tmp_path, valid_days=397, renew_days=30)
    assert renewed.changed and renewed.reason == "expires soon" and first.key_file.read_bytes() == key, "a renewal keeps the key"
    assert load_certificate(renewed.cert_file).not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=390)
    cert = renewed.cert_file.read_bytes()
    assert not ensure_certificate(tmp_path, "gw", ["10.0.0.5", "GW"], tmp_path).changed and renewed.cert_file.read_bytes() == cert
    moved = ensure_certificate(tmp_path, "gw", ["gw", "10.0.0.6"], tmp_path)
    assert moved.changed and moved.reason == "the names changed" and _names(moved.cert_file) == {"gw", "10.0.0.6"}
    # A CA close to its end is renewed with the same key: what it signed stays valid.
    short_ca = ensure_ca(tmp_path / "short", valid_days=10)
    leaf = ensure_certificate(tmp_path / "short", "node", ["node"], tmp_path / "short")
    again = ensure_ca(tmp_path / "short")
    assert again.changed and again.reason == "renewed: expires soon"
    load_certificate(leaf.cert_file).verify_directly_issued_by(load_certificate(short_ca.cert_file))  # short_ca is the renewed file
    # The host certificate ended with the old CA certificate, so it is renewed too, and then lasts its full time.
    assert ensure_certificate(tmp_path / "short", "node", ["node"], tmp_path / "short").reason == "expires soon"
    assert not ensure_certificate(tmp_path / "short", "node", ["node"], tmp_path / "short").changed
    assert not ensure_ca(tmp_path).changed and ca.cert_file.exists()


def test_a_certificate_from_another_ca_is_replaced(tmp_path):
    ensure_ca(tmp_path / "a")
    ensure_ca(tmp_path / "b")
    ensure_certificate(tmp_path / "a", "gw", ["gw"], tmp_path / "a")
    (tmp_path / "b" / "gw.crt").write_bytes((tmp_path / "a" / "gw.crt").read_bytes())
    (tmp_path / "b" / "gw.key").write_bytes((tmp_path / "a" / "gw.key").read_bytes())
    assert ensure_certificate(tmp_path / "b", "gw", ["gw"], tmp_path / "b").reason == "signed by another CA"


def test_the_redirect_keeps_host_and_path_and_ignores_hostile_headers():
    head = b"GET /en/?x=1 HTTP/1.1\r\nHost: ki.schule.example:80\r\n\r\n"
    assert redirect_location(head, 7860, "fallback") == "https://ki.schule.example:7860/en/?x=1"
    assert redirect_location(head, 443, "fallback") == "https://ki.schule.example/en/?x=1"
    hostile = b"GET //evil.example/ HTTP/1.1\r\nHost: evil.example/@x\r\n\r\n"
    assert redirect_location(hostile, 7860, "fallback").startswith("https://fallback:7860/")
    assert redirect_location(b"GET http://evil.example/ HTTP/1.1\r\n\r\n", 7860, "fallback") == "https://fallback:7860/"


@pytest.fixture()
def redirect_port():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = free_port()
    server = asyncio.run_coroutine_threadsafe(start_redirect_server("127.0.0.1", port, 7860), loop).result(10)
    yield port
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_plain_http_gets_only_a_redirect(redirect_port):
    for method in ("GET", "POST"):
        response = httpx.request(method, f"http://127.0.0.1:{redirect_port}/login?lang=en", content=b"name=anna&password=x", timeout=10)
        assert response.status_code == 308 and response.headers["location"] == "https://127.0.0.1:7860/login?lang=en"
        assert "HTTPS" in response.text and "set-cookie" not in response.headers
    with socket.create_connection(("127.0.0.1", redirect_port), timeout=10) as sock:  # an endless head gets no answer
        sock.sendall(b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000)
        assert sock.recv(100) == b""


def test_the_gateway_speaks_only_tls_on_its_port(tmp_path):
    """The tests' gateway serves HTTPS like production: a plain HTTP request on its port gets no page."""
    with running_stack(tmp_path, services=(), config=stack_config(tmp_path)) as stack:
        assert stack.url.startswith("https://")
        assert httpx.get(stack.url + "/healthz", timeout=30).json()["gateway"] == "ok"  # the certificate checks out
        with socket.create_connection(("127.0.0.1", int(stack.url.rsplit(":", 1)[1])), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert b"gateway" not in sock.recv(4096)
        with connect(stack.url) as tls:
            assert isinstance(tls, ssl.SSLSocket) and tls.version() in ("TLSv1.2", "TLSv1.3")
        # the container's HEALTHCHECK asks over HTTPS too, on 127.0.0.1, and trusts no CA there: it asks "does it answer?"
        # of a certificate made for the school's name, whose CA the container need not have (an empty CA file here)
        empty_ca = tmp_path / "no-ca.pem"
        empty_ca.write_text("")
        probe = subprocess.run(
            [sys.executable, "-m", "schulki.runtime.healthcheck", "gateway", "--address", stack.url.removeprefix("https://")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "SSL_CERT_FILE": str(empty_ca), "SSL_CERT_DIR": str(tmp_path)},
        )
        assert probe.returncode == 0, probe.stderr


def test_the_gateway_process_serves_https_with_its_own_certificate_and_redirects_http(tmp_path):
    port, redirect = free_port(), free_port()
    env = {
        **os.environ,
        "SCHULKI_DATA_DIR": str(tmp_path),
        "SCHULKI_GATEWAY__HOST": "127.0.0.1",
        "SCHULKI_GATEWAY__PORT": str(port),
        "SCHULKI_GATEWAY__REDIRECT_PORT": str(redirect),
        "SCHULKI_GATEWAY__HEALTH_INTERVAL_S": "30",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "schulki.gateway"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # the CA certificate to check against appears once the gateway made it
            assert process.poll() is None, f"the gateway exited: {process.stderr.read()[-2000:]}"
            try:
                context = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.crt"))
                if httpx.get(f"https://127.0.0.1:{port}/healthz", verify=context, timeout=2).status_code == 200:
                    break
            except (httpx.HTTPError, OSError, ssl.SSLError):
                pass
            assert time.monotonic() < deadline, "the gateway did not answer over HTTPS"
            time.sleep(0.2)
        moved = httpx.get(f"http://127.0.0.1:{redirect}/v1/models", timeout=10)
        assert moved.status_code == 308 and moved.headers["location"] == f"https://127.0.0.1:{port}/v1/models"
    finally:
        process.terminate()
        process.communicate(timeout=30)
