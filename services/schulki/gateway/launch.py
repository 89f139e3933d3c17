"""What ``schulki up`` needs to start the gateway: the child process, its readiness, and the first admin."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from schulki.config import Config
from schulki.gateway.accounts.database import Accounts, database_url
from schulki.gateway.web.https import https_files
from schulki.runtime.loopback import loopback_context


def _scheme(config: Config) -> str:
    return "https" if config.gateway.https else "http"


def gateway_url(config: Config) -> str:
    """Where this machine reaches the gateway (loopback when it listens on every address)."""
    host = config.gateway.host
    return f"{_scheme(config)}://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{config.gateway.port}"


def lan_url(config: Config) -> str:
    """Where students on the school network reach the gateway: this machine's LAN address when it listens on all."""
    host = config.gateway.host
    if host in ("0.0.0.0", "::"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(("10.255.255.255", 1))  # UDP: picks the outgoing interface, sends nothing
                host = probe.getsockname()[0]
            except OSError:
                host = socket.gethostname()
    return f"{_scheme(config)}://{host}:{config.gateway.port}"


def start_gateway() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "schulki.gateway"])


def wait_until_up(url: str, timeout: float, is_alive: Callable[[], bool]) -> None:
    """Wait until the gateway answers /healthz; raise RuntimeError or TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2, context=loopback_context()) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if not is_alive():
            raise RuntimeError("the gateway exited before it was serving")
        time.sleep(0.2)
    raise TimeoutError(f"the gateway at {url} did not answer after {timeout:.0f} s")


def first_admin_lines(config: Config) -> list[str]:
    """Create the first admin when there is no admin yet, and say how to log in."""
    accounts = Accounts(database_url(config.gateway.database_url, Path(config.data_dir)))
    if any(account.role == "admin" for account in accounts.list_users()):
        return [
            "  Anmelden mit einem Admin-Konto (log in with an admin account);",
            "  neue Konten (new accounts): schulki user add NAME --role student|teacher|admin",
        ]
    created = accounts.add_user("admin", "admin")
    return [
        "  Erstes Admin-Konto angelegt (first admin account created) – nur jetzt sichtbar (shown only now):",
        f"    Benutzer (user): admin   Passwort (password): {created.password}",
        f"    API-Key: {created.api_key}",
    ]


def https_lines(config: Config) -> list[str]:
    """Make the gateway's certificate when needed (before the gateway starts), and say how to trust it."""
    files = https_files(config)
    if files is None:
        return ["  HTTPS ist aus (HTTPS is off): gateway.https = false"]
    if files.ca_file is None:
        return [f"  HTTPS mit dem Zertifikat (with the certificate) {files.cert_file}"]
    from schulki.certificates import fingerprint

    return [
        "  HTTPS mit einem selbst gemachten Zertifikat (with a self-made certificate). Damit Browser ihm vertrauen",
        f"  (to make browsers trust it), die CA-Datei (the CA file) {files.ca_file} einmal importieren (import it once):",
        "    Firefox/Chrome: Einstellungen > Zertifikate > Zertifizierungsstellen > Importieren",
        "    (Settings > Certificates > Authorities > Import);",
        f"    Debian/Ubuntu: sudo cp {files.ca_file} /usr/local/share/ca-certificates/schulki.crt && sudo update-ca-certificates",
        f"  SHA-256 der CA (fingerprint to compare): {fingerprint(files.ca_file)}",
    ]
