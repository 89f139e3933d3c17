"""Signing in with the school account through a real OpenID Connect provider: Keycloak (tests/keycloak_support.py),
the gateway on a real port, Keycloak's own login page in a real browser and through HTTP as a browser would.

The attacks a student can make on the callback are here too: another browser's answer (login CSRF), a replayed
answer, a forged, expired or foreign ID token, an answer of another provider (mix-up), and the return address as an
open redirect. The gateway runs without its model services: sign-in is the gateway's business.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey
from schulki.config import OidcConfig
from schulki.gateway.accounts.oidc_provider import LEEWAY_S, OidcProvider, TokenRefused, pkce_pair

from tests.conftest import shared_tls
from tests.gateway_stack import running_stack, stack_config
from tests.keycloak_support import CLIENT_ID, CLIENT_SECRET, PASSWORDS, available, log_in_form, running_keycloak

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


@pytest.fixture(scope="module")
def keycloak():
    with running_keycloak("https://127.0.0.1:*") as server:
        yield server


def oidc_settings(keycloak, secret_file, realm: str = "schule") -> OidcConfig:
    return OidcConfig(
        enabled=True,
        issuer=keycloak.issuer(realm),
        client_id=CLIENT_ID,
        client_secret_file=secret_file,
        ca_file=shared_tls().ca_file,
        role_groups={"schueler": "student", "lehrer": "teacher"},
        class_group_pattern="^schule-(.+)$",
    )


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("oidc-secret") / "client_secret"
    path.write_text(CLIENT_SECRET + "\n")
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keycloak, secret_file):
    folder = tmp_path_factory.mktemp("oidc")
    config = stack_config(folder)
    config.gateway.oidc = oidc_settings(keycloak, secret_file)
    with running_stack(folder, services=(), config=config) as running:
        yield running


@pytest.fixture()
def settings(stack):
    saved = stack.config.gateway.oidc
    yield stack.config.gateway
    stack.config.gateway.oidc = saved


def browser(stack) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=60, follow_redirects=False)


def provider_answer(client: httpx.Client, user: str, back: str = "") -> str:
    """Start "Mit Schulkonto anmelden" in ``client`` and sign in at Keycloak; returns the callback address it sends the browser to."""
    started = client.get("/login/oidc", params={"back": back} if back else None)
    assert started.status_code == 303, started.text
    login_page = client.get(started.headers["location"])
    assert login_page.status_code == 200, login_page.text[:500]
    answer = log_in_form(client, login_page, user)
    assert answer.status_code == 302, answer.text[:1000]
    assert "/login/oidc/callback" in answer.headers["location"]
    return answer.headers["location"]


def real_id_token(keycloak, user: str, nonce: str, realm: str = "schule", secret_file=None) -> str:
    """A real ID token of the realm for the user, with our nonce: the code flow run by hand (as the gateway runs it)."""
    provider = OidcProvider(oidc_settings(keycloak, secret_file, realm))
    verifier, challenge = pkce_pair()
    callback = "https://127.0.0.1:1/login/oidc/callback"
    with httpx.Client(timeout=60, follow_redirects=False) as client:
        page = client.get(provider.authorization_url(callback, "state-x", nonce, challenge))
        answer = log_in_form(client, page, user)
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    return provider.exchange(code, callback, verifier)


def test_the_login_page_offers_the_school_account(stack):
    with browser(stack) as client:
        assert "Mit Schulkonto anmelden" in client.get("/login").text


def test_student_and_teacher_sign_in_with_the_school_account_in_the_browser(stack):
    """Chromium: "Mit Schulkonto anmelden", Keycloak's own login page, and back in schulki with role and class from the
    provider's groups claim, seeing their class's workspace and not another's."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        trust = f"--ignore-certificate-errors-spki-list={shared_tls().spki_sha256}"
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", trust])
        try:
            for name, role in (("anna", "student"), ("weber", "teacher")):
                context = chromium.new_context(locale="de-DE")
                page = context.new_page()
                page.set_default_timeout(90_000)
                page.goto(stack.url + "/")
                page.click("text=Mit Schulkonto anmelden")
                page.wait_for_selector("#username")
                page.fill("#username", name)
                page.fill("#password", PASSWORDS[name])
                page.click("#kc-login")
                page.wait_for_selector("#header >> text=Angemeldet als")
                assert f"{name} ({role})" in page.inner_text("#header")
                page.get_by_role("tab", name="Dokumente").click()
                page.click("#workspace input")
                options = page.locator("ul[role=listbox] li").all_inner_texts()
                assert "Klasse 7a" in options and "Klasse 7b" not in options, options
                context.close()
        finally:
            chromium.close()
    anna = stack.gateway.accounts.by_name("anna")
    assert (anna.role, anna.classes) == ("student", ("7a",))


def test_a_wrong_state_is_refused(stack):
    with browser(stack) as client:
        callback = provider_answer(client, "ben")
        wrong = callback.replace("state=", "state=x")
        response = client.get(wrong)
    assert response.status_code == 400
    assert "schulki_session" not in response.cookies
    assert "nicht in diesem Browser begonnen" in response.text


def test_a_replayed_answer_is_refused_and_the_provider_refuses_the_code_twice(stack, keycloak, secret_file):
    with browser(stack) as client:
        callback = provider_answer(client, "ben")
        cookie = client.cookies.get("schulki_oidc")
        first = client.get(callback)
        assert first.status_code == 303 and "schulki_session" in first.cookies
    with browser(stack) as replay:  # the same answer with the same state cookie, once more
        replay.cookies.set("schulki_oidc", cookie, domain="127.0.0.1", path="/login/oidc")
        again = replay.get(callback)
    assert again.status_code == 400 and "schulki_session" not in again.cookies
    # and the provider itself: the code of a finished sign-in is worth nothing
    code = parse_qs(urlsplit(callback).query)["code"][0]
    provider = OidcProvider(oidc_settings(keycloak, secret_file))
    with pytest.raises(TokenRefused, match="refused the code"):
        provider.exchange(code, f"{stack.url}/login/oidc/callback", "any-verifier-" + "x" * 40)


def test_login_csrf_a_students_callback_link_does_not_sign_in_another_browser(stack):
    """Attacks: a student signs in up to the provider's answer, keeps the callback link and gets a classmate to open
    it, so that the classmate works (and uploads) in the student's account."""
    with browser(stack) as attacker:
        link = provider_answer(attacker, "ben")
    with browser(stack) as victim:
        victim.get("/login/oidc")  # even a browser that started a sign-in of its own
        response = victim.get(link)
    assert response.status_code == 400
    assert "schulki_session" not in response.cookies


@pytest.mark.parametrize("back", ["https://evil.example/", "//evil.example/", "/\\evil.example/", "https:/evil.example"])
def test_the_return_address_is_no_open_redirect(stack, back):
    """Attacks: a link "/login/oidc?back=https://evil.example/" that sends the student, signed in, to a fake page."""
    with browser(stack) as client:
        response = client.get(provider_answer(client, "ben", back=back))
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_the_return_address_on_this_gateway_is_kept(stack):
    with browser(stack) as client:
        response = client.get(provider_answer(client, "ben", back="/en/"))
    assert response.status_code == 303 and response.headers["location"] == "/en/"


def test_an_answer_of_another_provider_is_refused(stack, keycloak):
    """Attacks (mix-up): the state of a sign-in schulki started, with a code from another school's provider."""
    with browser(stack) as client:
        callback = provider_answer(client, "ben")
        state = parse_qs(urlsplit(callback).query)["state"][0]
        _verifier, challenge = pkce_pair()
        other = OidcProvider(OidcConfig(issuer=keycloak.issuer("andere-schule"), client_id=CLIENT_ID, ca_file=shared_tls().ca_file))
        page = client.get(other.authorization_url(f"{stack.url}/login/oidc/callback", state, "n", challenge))
        foreign = log_in_form(client, page, "ben").headers["location"]
        assert parse_qs(urlsplit(foreign).query)["state"][0] == state
        response = client.get(foreign)
    assert response.status_code == 401
    assert "schulki_session" not in response.cookies


def _payload(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def test_a_forged_id_token_is_refused(keycloak, secret_file):
    """A real token whose groups were changed to the teachers', its signature kept; and tokens signed with the client
    secret (HS256) or not at all ("none"), as a student who read the client secret would make them."""
    provider = OidcProvider(oidc_settings(keycloak, secret_file))
    token = real_id_token(keycloak, "ben", "n-forged", secret_file=secret_file)
    assert provider.verify(token, "n-forged")["groups"]  # the real one holds
    header, _payload_part, signature = token.split(".")
    claims = {**_payload(token), "groups": ["lehrer", "schule-7a"]}
    forged = ".".join([header, base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("="), signature])
    with pytest.raises(TokenRefused, match="signature"):
        provider.verify(forged, "n-forged")
    hs256 = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(CLIENT_SECRET.encode()))
    with pytest.raises(TokenRefused):
        provider.verify(hs256, "n-forged")
    unsigned = ".".join(
        part.decode().rstrip("=")
        for part in (base64.urlsafe_b64encode(b'{"alg":"none"}'), base64.urlsafe_b64encode(json.dumps(claims).encode()))
    )
    with pytest.raises(TokenRefused):
        provider.verify(unsigned + ".", "n-forged")


def test_an_expired_id_token_is_refused(keycloak, secret_file):
    provider = OidcProvider(oidc_settings(keycloak, secret_file))
    token = real_id_token(keycloak, "ben", "n-expired", secret_file=secret_file)
    expiry = _payload(token)["exp"]
    assert provider.verify(token, "n-expired", now=expiry - 1)
    with pytest.raises(TokenRefused, match="expiry"):
        provider.verify(token, "n-expired", now=expiry + LEEWAY_S + 1)


def test_an_id_token_of_another_issuer_is_refused(keycloak, secret_file):
    """A real token of another school's realm, for a client of the same id."""
    provider = OidcProvider(oidc_settings(keycloak, secret_file))
    foreign = real_id_token(keycloak, "ben", "n-other", realm="andere-schule", secret_file=secret_file)
    assert OidcProvider(oidc_settings(keycloak, secret_file, "andere-schule")).verify(foreign, "n-other")
    with pytest.raises(TokenRefused):
        provider.verify(foreign, "n-other")


def test_a_wrong_nonce_is_refused(keycloak, secret_file):
    provider = OidcProvider(oidc_settings(keycloak, secret_file))
    token = real_id_token(keycloak, "ben", "n-right", secret_file=secret_file)
    with pytest.raises(TokenRefused, match="nonce"):
        provider.verify(token, "n-wrong")


def test_a_person_in_no_role_group_is_told_so(stack):
    with browser(stack) as client:
        response = client.get(provider_answer(client, "gast"))
    assert response.status_code == 403 and "keiner Gruppe" in response.text


def test_a_pseudonymous_subject_without_a_name_signs_in(stack, settings):
    """VIDIS sends a pseudonym and no name: the account gets a name made from issuer and subject."""
    settings.oidc = settings.oidc.model_copy(update={"name_claim": "vidis_name"})
    with browser(stack) as client:
        response = client.get(provider_answer(client, "ben"))
        assert response.status_code == 303
        session = response.cookies["schulki_session"]
    account = stack.gateway.accounts.session_user(session)
    assert account.name.startswith("schulkonto-") and account.role == "student" and account.classes == ("7b",)


def test_logout_ends_the_provider_session_too(stack, keycloak):
    with browser(stack) as client:
        response = client.get(provider_answer(client, "anna"))
        client.cookies.set("schulki_session", response.cookies["schulki_session"], domain="127.0.0.1")
        out = client.get("/logout", headers={"Sec-Fetch-Site": "same-origin"})
    assert out.status_code == 303
    assert out.headers["location"].startswith(keycloak.issuer() + "/protocol/openid-connect/logout?client_id=schulki")
    with httpx.Client(base_url=stack.url, cookies={"schulki_session": response.cookies["schulki_session"]}) as reuse:
        assert reuse.get("/", follow_redirects=False).status_code == 303
    assert time.time()  # the session is closed at schulki at once, whatever the provider answers
