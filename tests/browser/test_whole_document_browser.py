"""A whole document in a real browser (Debian's Chromium, driven by Playwright): summarized with progress and page references,
and translated into French and downloaded as Word.

The demo model (Gemma 3 270M) writes poor summaries and poor French; these tests check the structure: the progress
line counts the parts, the summary names pages of the document, the .docx opens and keeps the headings as headings.
"""

from __future__ import annotations

import re
import ssl
import time
from pathlib import Path

import docx
import httpx
import pytest

from tests.browser.test_gateway_browser import CHROMIUM, LAUNCH_ARGS, log_in, shoot, sync_api
from tests.conftest import shared_tls
from tests.gateway_stack import running_stack, stack_config, write_pdf

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)")

PAGE_COUNT = 30
HEADINGS = ["Einladung", "Programm", "Anmeldung"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whole")
    config = stack_config(folder)
    config.gateway.document_part_tokens = 900  # about eight pages a part: a few parts, within about a minute on a busy machine
    config.gateway.document_summary_tokens = 12
    config.gateway.document_translation_tokens = 40
    with running_stack(folder, services=("inference", "embeddings", "retrieval"), config=config) as running:
        yield running


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    pdf = write_pdf(
        folder / "klimawandel.pdf",
        [
            f"Kapitel {n}: Das Klima der Erde. Auf dieser Seite geht es um Wetter, Temperatur und Regen im Jahr {1990 + n}. "
            "Die Schüler messen jeden Tag die Temperatur und schreiben sie in eine Tabelle."
            for n in range(1, PAGE_COUNT + 1)
        ],
    )
    letter = docx.Document()
    for heading in HEADINGS:
        letter.add_heading(heading, level=1)
        letter.add_paragraph(f"Liebe Eltern, hier steht der Abschnitt {heading}. Wir freuen uns auf Ihren Besuch.")
    letter.save(str(folder / "elternbrief.docx"))
    return {"pdf": pdf, "docx": folder / "elternbrief.docx"}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        trust = f"--ignore-certificate-errors-spki-list={shared_tls().spki_sha256}"  # the gateway's test certificate
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*LAUNCH_ARGS, trust])
        yield browser
        browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(locale="de-DE", accept_downloads=True, viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(120_000)
    yield page
    context.close()


def upload(page, path: Path) -> None:
    page.get_by_role("tab", name="Dokumente").click()
    page.set_input_files("#document-upload input[type=file]", str(path))
    page.click("#document-upload-button")
    page.wait_for_selector("#upload-result >> text=gespeichert", timeout=180_000)
    # the list changes and the whole-document picker offers (and picks) the new document
    page.wait_for_function(f"() => document.querySelector('#whole-document input').value === {path.name!r}")


def test_a_student_summarizes_a_30_page_pdf_with_progress_and_page_references(page, stack, files):
    student = stack.add_user("whole-anna", "student", ("7a",))
    log_in(page, stack, "whole-anna", student.password)
    upload(page, files["pdf"])
    page.evaluate("""() => {
        window.progressLines = [];
        const box = document.querySelector('#whole-progress');
        new MutationObserver(() => window.progressLines.push(box.innerText.trim()))
            .observe(box, {subtree: true, childList: true, characterData: true});
    }""")
    page.click("#whole-length input")
    page.click("#whole-length li[role=option][aria-label='Stichpunkte für den Unterricht']")

    # Stop while part 2 runs: no further part reaches the model
    calls = []
    original = stack.gateway._services.chat
    stack.gateway._services.chat = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        page.click("#whole-summarize")
        page.wait_for_selector("#whole-progress >> text=Teil 2 von")
        page.click("#whole-stop")
        time.sleep(2)
        stopped_at = len(calls)
        time.sleep(4)
        total = int(re.search(r"von (\d+)", page.inner_text("#whole-progress")).group(1))
        assert len(calls) == stopped_at < total, (calls, total)
        assert "Fertig" not in page.inner_text("#whole-progress")
        assert all(node.in_flight == 0 for node in stack.gateway.inference_nodes())
    finally:
        stack.gateway._services.chat = original

    # and once more to the end
    page.evaluate("window.progressLines = []")
    page.click("#whole-summarize")
    page.wait_for_selector("#whole-progress >> text=Fertig", timeout=240_000)
    lines = [line for line in page.evaluate("window.progressLines") if line]
    seen = sorted({int(m.group(1)) for line in lines if (m := re.search(r"Teil (\d+) von (\d+)", line))})
    parts = int(re.search(r"von (\d+)", next(line for line in lines if "von" in line)).group(1))
    assert parts >= 3 and seen == list(range(1, parts + 1)), lines  # every part was announced, in the order they ran
    result = page.inner_text("#whole-result")
    pages = [int(n) for n in re.findall(r"S\. (\d+)", result)]
    assert pages and all(1 <= n <= PAGE_COUNT for n in pages), result
    shoot(page, "ganzes-dokument-zusammenfassung")


def test_a_student_translates_a_docx_into_french_and_downloads_it(page, stack, files):
    student = stack.add_user("whole-ben", "student", ("7a",))
    log_in(page, stack, "whole-ben", student.password)
    upload(page, files["docx"])
    page.click("#whole-language input")
    page.click("#whole-language li[role=option][aria-label='Français']")
    page.click("#whole-translate")
    page.wait_for_selector("#whole-download-docx", state="visible", timeout=240_000)
    assert "Fertig" in page.inner_text("#whole-progress")
    with page.expect_download() as download_info:
        page.click("#whole-download-docx")
    download = download_info.value
    assert download.suggested_filename == "elternbrief-fr.docx"
    translated = docx.Document(download.path())
    headings = [p.text for p in translated.paragraphs if p.style.name == "Heading 1"]
    text = [p.text for p in translated.paragraphs if p.style.name != "Heading 1" and p.text.strip()]
    assert len(headings) == len(HEADINGS) and all(h.strip() for h in headings), headings
    assert text, "the translation has no paragraphs"
    shoot(page, "ganzes-dokument-uebersetzung")


def test_another_user_cannot_download_the_translation(page, stack, files, browser):
    """The download link of one student's translation gives another student nothing."""
    owner = stack.add_user("whole-cem", "student", ("7a",))
    log_in(page, stack, "whole-cem", owner.password)
    upload(page, files["docx"])
    page.click("#whole-translate")
    page.wait_for_selector("#whole-download-md", state="visible", timeout=240_000)
    with page.expect_download() as download_info:
        page.click("#whole-download-md")
    link = download_info.value.url
    assert "## " in Path(download_info.value.path()).read_text(encoding="utf-8")
    assert fetch(link, page.context).status_code == 200
    stranger = stack.add_user("whole-dana", "student", ("7b",))
    other = browser.new_context(locale="de-DE")
    try:
        other_page = other.new_page()
        log_in(other_page, stack, "whole-dana", stranger.password)
        refused = fetch(link, other)
        assert refused.status_code in (403, 404) and "## " not in refused.text
    finally:
        other.close()


def fetch(url: str, context) -> httpx.Response:
    """GET url with the login cookie of a browser context."""
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    return httpx.get(url, cookies=cookies, verify=ssl.create_default_context(cafile=str(shared_tls().ca_file)), timeout=30)
