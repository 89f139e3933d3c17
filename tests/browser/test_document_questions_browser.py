"""Follow-up questions in the Dokumente tab of a real browser (Debian's Chromium, driven by Playwright): the tab keeps
the conversation, a follow-up is searched with the earlier question, and "Neues Gespräch" starts over."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.test_gateway_browser import CHROMIUM, LAUNCH_ARGS, log_in, shoot, sync_api
from tests.conftest import shared_tls
from tests.gateway_stack import running_stack, stack_config
from tests.service_support import wait_until
from tests.test_document_questions import DATES, VOLCANO

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("questions-browser")
    config = stack_config(folder)
    config.gateway.document_question_passage_tokens = 80  # room for one short document: the best passage first
    with running_stack(folder, services=("inference", "embeddings", "retrieval"), config=config) as running:
        yield running


@pytest.fixture()
def page():
    with sync_api.sync_playwright() as playwright:
        trust = f"--ignore-certificate-errors-spki-list={shared_tls().spki_sha256}"  # the gateway's test certificate
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*LAUNCH_ARGS, trust])
        page = browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 1000}).new_page()
        page.set_default_timeout(120_000)
        yield page
        browser.close()


def upload(page, path: Path) -> None:
    page.set_input_files("#document-upload input[type=file]", str(path))
    page.click("#document-upload-button")
    page.wait_for_selector(f"#upload-result >> text={path.name}")


def ask(page, stack, question: str) -> str:
    """Ask in the tab and wait until the answer is complete (its sources shown, the model's call ended)."""
    before = page.inner_text("#document-answer")
    page.fill("#document-question textarea", question)
    page.click("#document-ask")
    # done: the answer changed, shows its sources, and Gradio's timer of a running event ("1.2s",
    # "processing | 0.4/4.9s") is gone
    # (a click on "Fragen" while the event still runs is dropped, as Gradio does for every button)
    page.wait_for_function(
        "before => { const shown = document.querySelector('#document-answer').innerText; "
        "return shown !== before && shown.includes('Quellen') && !/^(processing|[0-9.]+s|.*\\| [0-9.]+\\/[0-9.]+s)\\s*$/.test(shown.trim().split('\\n')[0]); }",
        arg=before,
    )
    wait_until(lambda: all(node.in_flight == 0 for node in stack.gateway.inference_nodes()), 120, "the answer's end")
    return page.inner_text("#document-answer")


def test_a_follow_up_in_the_tab_is_searched_with_the_conversation(page, stack, tmp_path):
    student = stack.add_user("dqb-anna", "student")
    log_in(page, stack, "dqb-anna", student.password)
    page.get_by_role("tab", name="Dokumente").click()
    for name, text in (("vesuv.txt", VOLCANO), *((f"termine-{n}.txt", t) for n, t in enumerate(DATES, start=1))):
        (tmp_path / name).write_text(text, encoding="utf-8")
        upload(page, tmp_path / name)
    first = ask(page, stack, "Was geschah mit der Stadt Pompeji?")
    assert "vesuv.txt" in first and "Folgefrage" not in first, first
    follow_up = ask(page, stack, "Und wann war das?")
    assert "Folgefrage" in follow_up and "Pompeji" in follow_up, follow_up
    assert "vesuv.txt" in follow_up.split("Quellen", 1)[1].split("Folgefrage")[0], follow_up
    shoot(page, "document-follow-up")
    page.click("#document-new-conversation")
    page.wait_for_function("() => !document.querySelector('#document-answer').innerText.includes('Quellen')")
    fresh = ask(page, stack, "Und wann war das?")
    assert "Folgefrage" not in fresh and "vesuv.txt" not in fresh, fresh
