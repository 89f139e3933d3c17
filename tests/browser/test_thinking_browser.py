"""The "Wie denkt die KI?" tab in a real browser (Debian's Chromium, driven by Playwright), on the real default model.

A student types a beginning, sees the next tokens as bars, clicks one, and the
text grows by exactly that token (the bar's own token, as the inference
service gives it); then compares "Der Himmel ist blau." with "… lila." and sees
both perplexities and the most surprising word. Each step counts against the
student's quota. Screenshots go to tests/artifacts/thinking-*.png.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.test_gateway_browser import CHROMIUM, LAUNCH_ARGS, log_in, sync_api
from tests.conftest import ARTIFACTS, shared_tls
from tests.gateway_stack import running_stack, stack_config

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway")
    with running_stack(folder, services=("inference",), config=stack_config(folder)) as running:
        yield running


@pytest.fixture()
def page(stack):
    with sync_api.sync_playwright() as playwright:
        trust = f"--ignore-certificate-errors-spki-list={shared_tls().spki_sha256}"  # the gateway's test certificate
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*LAUNCH_ARGS, trust])
        context = browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(90_000)
        yield page
        context.close()
        browser.close()


def shoot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"thinking-{name}.png"), full_page=True)


def bar_labels(page) -> list[str]:
    return page.eval_on_selector_all("#thinking-choices label", "labels => labels.map(l => l.innerText)")


def test_a_student_extends_a_text_token_by_token_and_compares_two_sentences(page, stack):
    student = stack.add_user("denk-daria", "student", ("8c",))
    log_in(page, stack, "denk-daria", student.password)
    page.get_by_role("tab", name="Wie denkt die KI?").click()
    page.fill("#thinking-text textarea", "Der Himmel ist")
    tokens_before = stack.gateway.accounts.tokens_today(student.account.id)
    page.click("#thinking-show")
    page.wait_for_selector("#thinking-choices label")
    labels = bar_labels(page)
    assert len(labels) == 10
    percents = [float(label.split("%")[0].split()[-1].replace(",", ".")) for label in labels]
    assert percents == sorted(percents, reverse=True) and 0 < sum(percents) <= 100.5
    assert all(label.startswith(("█", "▏", "▎", "▍", "▌", "▋", "▊", "▉")) for label in labels)
    assert stack.gateway.accounts.tokens_today(student.account.id) > tokens_before  # it counts like a chat
    shoot(page, "bars")

    # The second bar, so that the text grows by a token the student chose, not merely the likeliest one.
    chosen = labels[1]
    token = chosen[chosen.index("„") + 1 : chosen.rindex("“")].replace("␣", " ")
    page.locator("#thinking-choices label").nth(1).click()
    page.wait_for_function("expected => document.querySelector('#thinking-text textarea').value === expected", arg="Der Himmel ist" + token)
    page.wait_for_function("old => document.querySelector('#thinking-choices label').innerText !== old", arg=labels[0])
    assert len(bar_labels(page)) == 10  # the next step's bars are there
    shoot(page, "extended")

    page.click("#thinking-compare")
    page.wait_for_selector("#thinking-surprise table")
    rows = page.eval_on_selector_all("#thinking-surprise tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")
    assert [row[0] for row in rows] == ["Der Himmel ist blau.", "Der Himmel ist lila."]
    blue, purple = (float(row[1].replace(",", ".")) for row in rows)
    assert purple > blue  # "lila" surprises the model more than "blau"
    for sentence, _, surprise, *_ in rows:
        assert surprise in sentence.rstrip(".").split()[1:]  # a whole word of the sentence, never its first
    shoot(page, "perplexity")
