"""Three students in three browsers press "Senden" at once, and all three answers stream in at the same time.

Each page records, in the page itself, every moment its answer's text grew; the
three answers were streaming together when the last of them to begin began
before the first of them to end ended. Gradio's default of one running event per
listener answered them one after another instead.
"""

from __future__ import annotations

import pytest

from tests.browser.test_gateway_browser import CHROMIUM, LAUNCH_ARGS, log_in, shoot
from tests.conftest import shared_tls
from tests.gateway_stack import running_stack, stack_config
from tests.service_support import wait_until

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")

QUESTION = "Zähle langsam von eins bis dreihundert, jede Zahl als Wort in einer eigenen Zeile."
WATCH_ANSWER = """() => {
    window.answerGrew = [];
    const box = document.querySelector('#chatbot');
    let length = 0;
    new MutationObserver(() => {
        const bots = box.querySelectorAll('.bot');
        const now = bots.length ? bots[bots.length - 1].innerText.trim().length : 0;
        if (now > length) { length = now; window.answerGrew.push(Date.now()); }
    }).observe(box, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("class")
    config = stack_config(folder)
    config.gateway.max_chat_tokens = 120  # long enough that three answers could not pass for streaming together by chance
    with running_stack(folder, services=("inference",), config=config) as running:
        yield running


def test_three_students_see_their_answers_stream_at_the_same_time(stack):
    with sync_api.sync_playwright() as playwright:
        trust = f"--ignore-certificate-errors-spki-list={shared_tls().spki_sha256}"
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*LAUNCH_ARGS, trust])
        try:
            students, pages = [], []
            for n in range(3):
                student = stack.add_user(f"klasse-{n}", "student", ("7a",))
                page = browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 900}).new_page()
                page.set_default_timeout(120_000)
                log_in(page, stack, student.account.name, student.password)
                page.evaluate(WATCH_ANSWER)
                page.fill("#chat-input textarea", QUESTION)
                students.append(student)
                pages.append(page)
            for page in pages:
                page.click("#chat-send")
            for student in students:  # a chat is stored once its answer is complete
                wait_until(lambda s=student: stack.gateway.accounts.list_chats(s.account.id), 300, "every answer complete", interval=0.2)
            grew = [page.evaluate("window.answerGrew") for page in pages]
            shoot(pages[0], "class-chat")
        finally:
            browser.close()
    assert all(len(times) >= 2 for times in grew), grew
    assert max(times[0] for times in grew) < min(times[-1] for times in grew), grew
