"""The gateway in a real browser: headless Chromium (Debian's), driven by Playwright.

A student logs in on the German login page, chats and sees the answer
stream, uploads a PDF and gets an answer with its citation, transcribes a
recording and downloads the srt; an admin opens the Admin tab. Every tab is
photographed into tests/artifacts/, and the page must not have asked any host
but the gateway for anything.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.conftest import ARTIFACTS, shared_tls
from tests.gateway_stack import running_stack, stack_config, write_pdf
from tests.service_support import wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway")
    config = stack_config(folder)
    config.gateway.max_chat_tokens = 48  # long enough to watch it stream in
    with running_stack(folder, config=config) as running:
        yield running


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    pdf = write_pdf(
        folder / "biologie.pdf",
        [
            "Die Photosynthese findet in den Chloroplasten der Pflanzenzellen statt. Pflanzen brauchen dazu Licht, Wasser und Kohlendioxid.",
            "Der Rhein ist ein Fluss in Europa.",
        ],
    )
    speech = folder / "unterricht.wav"
    subprocess.run(["espeak-ng", "-v", "de", "-w", str(speech), "Guten Morgen. Heute lernen wir etwas über die Photosynthese."], check=True)
    return {"pdf": pdf, "speech": speech}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        # The gateway serves HTTPS with the tests' certificate: Chromium trusts exactly that key, nothing else.
        trust = f"--ignore-certificate-errors-spki-list={shared_tls().spki_sha256}"
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*LAUNCH_ARGS, trust])
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, stack):
    context = browser.new_context(locale="de-DE", accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.requested_hosts = set()
    page.on(
        "request",
        lambda request: (
            page.requested_hosts.add(urlparse(request.url).netloc)
            if urlparse(request.url).scheme in ("http", "https", "ws", "wss")
            else None
        ),
    )
    yield page
    context.close()
    assert page.requested_hosts <= {urlparse(stack.url).netloc}, f"the page asked other hosts: {page.requested_hosts}"
    assert page.requested_hosts, "no request was recorded at all"


def log_in(page, stack, name: str, password: str) -> None:
    page.goto(stack.url + "/")
    assert "/login" in page.url
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#header >> text=Angemeldet als")


def shoot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"gateway-{name}.png"), full_page=True)


def test_a_student_chats_asks_a_document_transcribes_and_translates(page, stack, files):
    student = stack.add_user("browser-anna", "student", ("7a",))
    log_in(page, stack, "browser-anna", student.password)
    assert not page.get_by_role("tab", name="Admin").is_visible()

    # Chat: record every length the answer has while it arrives, to see it stream in
    page.evaluate("""() => {
        window.answerLengths = [];
        const box = document.querySelector('#chatbot');
        new MutationObserver(() => {
            const bots = box.querySelectorAll('.bot');
            if (bots.length) window.answerLengths.push(bots[bots.length - 1].innerText.length);
        }).observe(box, {subtree: true, childList: true, characterData: true});
    }""")
    page.fill("#chat-input textarea", "Erkläre mir bitte kurz, was ein Vulkan ist.")
    page.keyboard.press("Enter")
    page.wait_for_selector("#chatbot .bot")
    # The chat is stored once the answer is complete.
    wait_until(lambda: stack.gateway.accounts.list_chats(student.account.id), timeout=90, what="the stored chat", interval=0.1)
    page.wait_for_function("() => document.querySelector('#chatbot .bot').innerText.trim().length > 0")
    lengths = [n for n in page.evaluate("window.answerLengths") if n > 0]
    assert len(set(lengths)) >= 3, lengths  # the text grew in several steps
    shoot(page, "chat")

    # Dokumente: upload a PDF, ask, and get an answer that cites file and page
    page.get_by_role("tab", name="Dokumente").click()
    page.set_input_files("#document-upload input[type=file]", str(files["pdf"]))
    page.click("#document-upload-button")
    page.wait_for_selector("#upload-result >> text=gespeichert")
    page.fill("#document-question textarea", "Wo findet die Photosynthese statt?")
    page.click("#document-ask")
    page.wait_for_selector("#document-answer >> text=biologie.pdf, S. 1")
    assert "Quellen" in page.inner_text("#document-answer")
    shoot(page, "dokumente")

    # Transkription: upload a recording, see the text and the language, download the srt
    page.get_by_role("tab", name="Transkription").click()
    page.set_input_files("#recording input[type=file]", str(files["speech"]))
    page.click("#transcribe")
    page.wait_for_selector("#download-srt", state="visible")
    assert "Photosynthese" in page.input_value("#transcript textarea") or "Morgen" in page.input_value("#transcript textarea")
    assert "Deutsch" in page.inner_text("#detected-language")
    with page.expect_download() as download_info:
        page.click("#download-srt")
    srt = Path(download_info.value.path()).read_text(encoding="utf-8")
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    assert download_info.value.suggested_filename.endswith(".srt")
    shoot(page, "transkription")

    # Übersetzen: the language is detected and the translation appears beside the text
    page.get_by_role("tab", name="Übersetzen").click()
    page.fill("#source-text textarea", "Der Hund spielt im Garten mit dem Ball.")
    page.click("#translate")
    page.wait_for_selector("#detected >> text=Erkannt: Deutsch")
    page.wait_for_function("() => document.querySelector('#translation textarea').value.trim().length > 0")
    shoot(page, "uebersetzen")


def test_an_admin_sees_the_health_of_every_service(page, stack):
    admin = stack.add_user("browser-admin", "admin")
    log_in(page, stack, "browser-admin", admin.password)
    page.get_by_role("tab", name="Admin").click()
    page.click("#admin-refresh")
    page.wait_for_function("() => document.body.innerText.includes('Q4_K_M')")
    assert page.evaluate("document.body.innerText").count("bereit") >= 4  # all four services serve
    shoot(page, "admin")


def test_the_login_page_in_german_and_a_wrong_password(page, stack):
    page.goto(stack.url + "/")
    # HTTPS: the page is a secure context (browsers allow the microphone only there)
    assert page.evaluate("[location.protocol, window.isSecureContext]") == ["https:", True]
    assert page.inner_text("label[for=name]") == "Benutzername"
    page.fill("#name", "niemand")
    page.fill("#password", "falsch-falsch")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Benutzername oder Passwort ist falsch.")
    shoot(page, "login")


def test_the_logout_link_signs_out_in_the_same_page(page, stack):
    """The header's "Abmelden" ends the session and shows the login page in the same tab, not in a new one."""
    student = stack.add_user("browser-ben", "student")
    log_in(page, stack, "browser-ben", student.password)
    page.click("#logout")
    page.wait_for_selector("#password")
    assert "/login" in page.url
    page.goto(stack.url + "/")
    assert "/login" in page.url  # the session is gone
