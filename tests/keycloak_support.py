"""A real OpenID Connect provider for the sign-in tests: Keycloak (UCS@school's identity provider), from Maven Central.

``./dev test`` fetches keycloak-quarkus-dist once into ~/.cache/schulki-tools/keycloak and builds it for an in-memory
database (``kc.sh build --db=dev-mem``). Each test run copies it to a folder of its own, imports the school's realms
and starts it with HTTPS (the tests' certificate, tests.conftest.shared_tls) on a free loopback port; the process is
stopped and the folder removed afterwards. Keycloak needs Java 21 or newer (KEYCLOAK_JAVA_HOME, else JAVA_HOME, else
the newest JDK under /usr/lib/jvm).

Two realms: "schule" (schulki's provider, with groups schueler, lehrer and schule-7a/-7b as a ``groups`` claim) and
"andere-schule", another school's provider with a client of the same id, whose tokens schulki must refuse.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import httpx

from tests.conftest import free_port, shared_tls
from tests.service_support import wait_until

VERSION = "26.7.3"
CACHE = Path(os.environ.get("SCHULKI_TOOLS_CACHE", Path.home() / ".cache" / "schulki-tools")) / "keycloak"
HOME = CACHE / f"keycloak-{VERSION}"
CLIENT_ID = "schulki"
CLIENT_SECRET = "schulki-client-geheim-0815"
PASSWORDS = {"anna": "anna-passwort-1", "ben": "ben-passwort-22", "weber": "weber-passwort-4", "gast": "gast-passwort-77"}


def java_home() -> Path | None:
    for variable in ("KEYCLOAK_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(variable) and Path(os.environ[variable], "bin", "java").exists():
            return Path(os.environ[variable])
    found = []
    for candidate in Path("/usr/lib/jvm").glob("*"):
        match = re.search(r"(\d+)", candidate.name)
        if match and int(match.group(1)) >= 21 and (candidate / "bin" / "java").exists():
            found.append((int(match.group(1)), candidate))
    return max(found)[1] if found else None


def available() -> str | None:
    """Why Keycloak cannot run here, or None when it can."""
    if not (HOME / "bin" / "kc.sh").exists():
        return f"Keycloak {VERSION} is not in {CACHE} (./dev test fetches it)"
    if java_home() is None:
        return "Keycloak needs Java 21 or newer (none under /usr/lib/jvm, no JAVA_HOME)"
    return None


def _user(name: str, groups: list[str], profile: bool = True) -> dict:
    user: dict = {"username": name, "enabled": True, "groups": groups, "credentials": [{"type": "password", "value": PASSWORDS[name]}]}
    if profile:
        user.update(firstName=name.title(), lastName="Test", email=f"{name}@schule.test", emailVerified=True)
    return user


def realm(name: str, redirect: str) -> dict:
    groups_claim = {
        "name": "groups",
        "protocol": "openid-connect",
        "protocolMapper": "oidc-group-membership-mapper",
        "config": {"claim.name": "groups", "full.path": "false", "id.token.claim": "true", "access.token.claim": "true"},
    }
    return {
        "realm": name,
        "enabled": True,
        "groups": [{"name": group} for group in ("schueler", "lehrer", "schule-7a", "schule-7b")],
        "users": [
            _user("anna", ["/schueler", "/schule-7a"]),
            _user("ben", ["/schueler", "/schule-7b"]),
            _user("weber", ["/lehrer", "/schule-7a"]),
            _user("gast", []),
        ],
        "clients": [
            {
                "clientId": CLIENT_ID,
                "enabled": True,
                "publicClient": False,
                "secret": CLIENT_SECRET,
                "redirectUris": [redirect],
                "webOrigins": ["+"],
                "standardFlowEnabled": True,
                "directAccessGrantsEnabled": True,  # the tests fetch real ID tokens with a password to check the verifier
                "attributes": {"pkce.code.challenge.method": "S256", "post.logout.redirect.uris": "+"},
                "protocolMappers": [groups_claim],
            }
        ],
    }


@dataclass
class Keycloak:
    url: str
    folder: Path

    def issuer(self, name: str = "schule") -> str:
        return f"{self.url}/realms/{name}"

    def id_token(self, user: str, realm_name: str = "schule", scope: str = "openid") -> str:
        """A real ID token for the user, by the password grant (the tests' way to hold one without a browser)."""
        response = httpx.post(
            f"{self.issuer(realm_name)}/protocol/openid-connect/token",
            data={"grant_type": "password", "username": user, "password": PASSWORDS[user], "scope": scope},
            auth=(CLIENT_ID, CLIENT_SECRET),
            timeout=60,
        )
        response.raise_for_status()
        return response.json()["id_token"]


def log_in_form(client: httpx.Client, page: httpx.Response, user: str, password: str | None = None) -> httpx.Response:
    """Fill Keycloak's login form on ``page`` and send it, as a browser would; returns Keycloak's answer (a redirect)."""
    action = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text)
    assert action, page.text[:2000]
    return client.post(
        unescape(action.group(1)),
        data={"username": user, "password": password or PASSWORDS[user], "credentialId": ""},
        follow_redirects=False,
    )


@contextlib.contextmanager
def running_keycloak(redirect: str) -> Iterator[Keycloak]:
    """Keycloak with the realms "schule" and "andere-schule" (redirect: the callback address the clients allow)."""
    reason = available()
    if reason:
        raise RuntimeError(reason)
    tls = shared_tls()
    folder = Path(tempfile.mkdtemp(prefix="schulki-keycloak-"))
    try:
        home = folder / "keycloak"
        shutil.copytree(HOME, home, symlinks=True, ignore=shutil.ignore_patterns("data"))
        (home / "data" / "import").mkdir(parents=True)
        for name in ("schule", "andere-schule"):
            (home / "data" / "import" / f"{name}.json").write_text(json.dumps(realm(name, redirect)))
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        env = {**os.environ, "JAVA_HOME": str(java_home()), "JAVA_OPTS_KC_HEAP": "-Xms64m -Xmx512m"}
        command = [
            str(home / "bin" / "kc.sh"),
            "start",
            "--optimized",
            "--import-realm",
            f"--hostname={url}",
            "--http-enabled=false",
            f"--https-port={port}",
            "--https-certificate-file",
            str(tls.cert_file),
            "--https-certificate-key-file",
            str(tls.key_file),
            "--http-host=127.0.0.1",
        ]
        log = (folder / "keycloak.log").open("w")
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:

            def ready() -> bool:
                if process.poll() is not None:
                    raise RuntimeError("Keycloak stopped: " + (folder / "keycloak.log").read_text()[-3000:])
                try:
                    return httpx.get(f"{url}/realms/andere-schule/.well-known/openid-configuration", timeout=5).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(ready, timeout=600, what="Keycloak", interval=1.0)
            yield Keycloak(url, folder)
        finally:
            # kc.sh starts java as its child, in the session started here: stop both by that group's id
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
            log.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
