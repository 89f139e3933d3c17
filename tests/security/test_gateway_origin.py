"""Attacks from other web pages: credentialed cross-origin requests, login CSRF, logout CSRF (finding 3 of issue 9).

The browser of a logged-in admin visits a page on another host of the school's
domain, or on another port of the gateway's address; that page sends
requests to the gateway with the admin's cookie. The tests send what such a
browser would send: the cookie, the page's ``Origin``, and the ``Host`` the
browser uses for the gateway (a school name, not localhost).
"""

from __future__ import annotations

import httpx
import pytest

from tests.security.conftest import gradio_call, make_user

GATEWAY_HOST = "schulki.schule.example:7860"
FOREIGN_ORIGINS = [
    "http://evil.schule.example",
    "http://schulki.schule.example:8080",
    "null",
    "https://schulki.schule.example.evil.test:7860",
]


def as_browser(client: httpx.Client, origin: str | None, site: str | None = None) -> dict[str, str]:
    headers = {"Host": GATEWAY_HOST}
    if origin:
        headers["Origin"] = origin
    if site:
        headers["Sec-Fetch-Site"] = site
    return headers


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_a_foreign_page_gets_no_credentialed_cors_answer(security_stack, admin, origin):
    """Attacks: a foreign page reads Gradio's answers with the admin's cookie (CORS reflects any Origin with credentials)."""
    with admin.browser() as client:
        for method, path in (("GET", "/gradio_api/info"), ("GET", "/config"), ("OPTIONS", "/gradio_api/call/admin_add_user")):
            headers = as_browser(client, origin)
            if method == "OPTIONS":
                headers |= {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
            response = client.request(method, path, headers=headers)
            assert "access-control-allow-origin" not in response.headers, (method, path, dict(response.headers))
            assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_a_foreign_page_cannot_create_users_with_the_admins_login(security_stack, admin, origin):
    """Attacks: a foreign page posts admin_add_user with the admin's cookie and reads back the new credentials."""
    name = f"csrf-{abs(hash(origin)) % 10_000}"
    with admin.browser() as client:
        response = client.post("/gradio_api/call/admin_add_user", json={"data": [name, "admin", ""]}, headers=as_browser(client, origin))
        assert response.status_code == 403
        joined = client.post(
            "/gradio_api/queue/join",
            headers=as_browser(client, origin),
            json={"data": [name, "admin", ""], "fn_index": 0, "session_hash": "x", "trigger_id": None},
        )
        assert joined.status_code == 403
    assert security_stack.gateway.accounts.by_name(name) is None


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_a_form_post_marked_cross_site_is_refused_without_origin(security_stack, admin, site):
    """Attacks: a cross-site request whose browser sent Sec-Fetch-Site but no Origin header."""
    with admin.browser() as client:
        response = client.post(
            "/gradio_api/call/admin_add_user", json={"data": ["csrf-site", "admin", ""]}, headers=as_browser(client, None, site)
        )
    assert response.status_code == 403
    assert security_stack.gateway.accounts.by_name("csrf-site") is None


def test_a_foreign_page_cannot_log_a_victim_into_the_attackers_account(security_stack):
    """Attacks: login CSRF: a foreign page posts the attacker's name and password to /login (the victim then works in it)."""
    attacker = make_user(security_stack, "student")
    with httpx.Client(base_url=security_stack.url) as victim:
        response = victim.post(
            "/login",
            data={"name": attacker.name, "password": attacker.password},
            headers={"Host": GATEWAY_HOST, "Origin": "http://evil.schule.example"},
        )
        assert response.status_code == 403 and "set-cookie" not in response.headers
        assert not victim.cookies


def test_a_foreign_page_cannot_log_the_user_out(security_stack, student):
    """Attacks: logout CSRF: an image or link on a foreign page to /logout."""
    with student.browser() as client:
        response = client.get("/logout", headers={"Sec-Fetch-Site": "cross-site"})
        assert response.status_code == 403
        assert client.get("/", follow_redirects=False).status_code == 200  # still logged in


def test_the_gateways_own_pages_still_work(security_stack, student):
    """Checks the origin rule does not refuse the gateway's own pages (a fix that refuses everything would pass above)."""
    with student.browser() as client:
        own = {"Host": GATEWAY_HOST, "Origin": f"http://{GATEWAY_HOST}", "Sec-Fetch-Site": "same-origin"}
        status, event, _payload = gradio_call(client, "documents_workspaces", [])
        assert status == 200 and event == "complete"
        response = client.post("/gradio_api/call/documents_workspaces", json={"data": []}, headers=own)
        assert response.status_code == 200 and "event_id" in response.json()
    with httpx.Client(base_url=security_stack.url) as fresh:
        response = fresh.post("/login", data={"name": student.name, "password": student.password}, headers=own)
        assert response.status_code == 303 and "schulki_session" in response.headers.get("set-cookie", "")
        assert "samesite=lax" in response.headers["set-cookie"].lower() and "httponly" in response.headers["set-cookie"].lower()
