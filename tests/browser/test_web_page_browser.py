"""A web page in a real browser: a student adds a page by its address in the Dokumente tab, sees it listed, asks
about it and gets an answer whose sources name the address; an address on this machine that the admin did not
allow is refused with a German message. The page is served by a web server on 127.0.0.1 (the school's intranet
in miniature), which this test's settings, and only they, allow."""

from __future__ import annotations

import pytest

from tests.browser.test_gateway_browser import browser, log_in, page, shoot  # noqa: F401 (browser and page are fixtures)
from tests.gateway_stack import running_stack, stack_config
from tests.web_page_support import FACT_QUESTION, web_site


@pytest.fixture(scope="module")
def site():
    with web_site() as base:
        yield base


@pytest.fixture(scope="module")
def stack(tmp_path_factory, site):
    folder = tmp_path_factory.mktemp("gateway")
    config = stack_config(folder)
    config.retrieval.allowed_url_hosts = [site.removeprefix("http://")]  # 127.0.0.1 on the test site's port
    config.gateway.document_summary_tokens = 12  # a short summary: the structure is checked, not the small model's prose
    with running_stack(folder, services=("inference", "embeddings", "retrieval"), config=config) as running:
        yield running


def test_a_student_adds_a_web_page_by_its_address_and_asks_about_it(page, stack, site):  # noqa: F811
    student = stack.add_user("browser-jana", "student")
    log_in(page, stack, "browser-jana", student.password)
    page.get_by_role("tab", name="Dokumente").click()

    # Refused: "localhost" is this machine, and only 127.0.0.1 (on the site's port) is allowed
    page.fill("#web-url textarea", site.replace("127.0.0.1", "localhost") + "/erdkunde/quetzalberg")
    page.click("#web-add-button")
    page.wait_for_selector("text=Adressen im Schulnetz oder auf diesem Rechner dürfen nicht abgerufen werden")
    shoot(page, "webseite-abgelehnt")

    url = f"{site}/erdkunde/quetzalberg"
    page.fill("#web-url textarea", url)
    page.click("#web-add-button")
    page.wait_for_selector("#upload-result >> text=gespeichert")
    assert url in page.inner_text("#document-list")
    assert page.input_value("#web-url textarea") == ""
    page.fill("#document-question textarea", FACT_QUESTION)
    page.click("#document-ask")
    page.wait_for_selector(f"#document-answer >> text={url}")
    assert "Quellen" in page.inner_text("#document-answer")
    shoot(page, "webseite")


def test_a_student_summarizes_a_web_page_in_one_step(page, stack, site):  # noqa: F811
    """ "Hinzufügen und zusammenfassen": the page is stored, picked in "Ganzes Dokument" and summarized there."""
    student = stack.add_user("browser-jonas", "student")
    log_in(page, stack, "browser-jonas", student.password)
    page.get_by_role("tab", name="Dokumente").click()
    url = f"{site}/erdkunde/quetzalberg"
    page.fill("#web-url textarea", url)
    page.click("#web-summarize-button")
    page.wait_for_selector("#upload-result >> text=gespeichert", timeout=180_000)
    page.wait_for_selector("#whole-progress >> text=Fertig", timeout=240_000)
    assert url in page.inner_text("#whole-progress")  # the summary is of the page just added
    assert page.inner_text("#whole-result").strip()
    assert url in page.inner_text("#document-list")
    shoot(page, "webseite-zusammenfassung")
