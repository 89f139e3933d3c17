"""Chromium with the school CA trusted as a school installs it (the browser's own certificate store), against the
certificate the roll-out gives the gateway: the page opens by the gateway's name, and a certificate the CA's copied
key signs for another web site is refused by the name constraint."""

from __future__ import annotations

import http.server
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright import sync_api
from schulki.certificates import ensure_ca, ensure_certificate

from tests.browser.test_gateway_browser import CHROMIUM, LAUNCH_ARGS
from tests.tls_support import forge, rollout_ca_permitted, rollout_host_names

pytestmark = pytest.mark.skipif(
    shutil.which("certutil") is None, reason="Chromium on Linux trusts a CA from its NSS database, made with certutil (libnss3-tools)"
)

GATEWAY, NODE, ADDRESS = "ki-gw.schule.example", "ki-gpu08.schule.example", "127.0.0.1"


@contextmanager
def https_page(cert_file: Path, key_file: Path) -> Iterator[int]:
    """A page served over HTTPS with Python's ssl on 127.0.0.1 (as uvicorn serves the gateway's); its port."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"schulki")

        def log_message(self, *args) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_chromium_trusting_the_school_ca_opens_the_gateway_by_name_and_refuses_a_forged_site(tmp_path):
    ca = tmp_path / "ca"
    passphrase = "korrekt-pferd-batterie-heftklammer"
    ensure_ca(ca, permitted=rollout_ca_permitted([GATEWAY, NODE], ADDRESS, "127.0.0.0/255.0.0.0"), passphrase=passphrase)
    gateway = ensure_certificate(ca, GATEWAY, rollout_host_names(GATEWAY, ADDRESS, "gateway"), ca, ca_passphrase=passphrase)
    forged = forge(ca, "www.google.com", tmp_path / "forged.crt", passphrase, key_out=tmp_path / "forged.key")
    home = tmp_path / "home"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True, timeout=60)
    subprocess.run(
        ["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "schulki CA", "-i", str(ca / "ca.crt")], check=True, timeout=60
    )
    resolve = f"--host-resolver-rules=MAP {GATEWAY} 127.0.0.1, MAP www.google.com 127.0.0.1"  # both on loopback, nothing leaves
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*LAUNCH_ARGS, resolve], env={**os.environ, "HOME": str(home)})
        try:
            page = browser.new_page()
            with https_page(gateway.cert_file, gateway.key_file) as port:
                page.goto(f"https://{GATEWAY}:{port}/", timeout=60_000)
                assert "schulki" in page.content()
                with pytest.raises(sync_api.Error, match="ERR_CERT_COMMON_NAME_INVALID"):
                    page.goto(f"https://127.0.0.1:{port}/", timeout=60_000)  # by address: the certificate names none
            with https_page(forged, tmp_path / "forged.key") as port, pytest.raises(sync_api.Error, match="ERR_CERT_INVALID"):
                page.goto(f"https://www.google.com:{port}/", timeout=60_000)
        finally:
            browser.close()
