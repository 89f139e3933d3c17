"""The chat tab's agent mode in a real browser (Debian's Chromium, driven by Playwright), on the real default model.

A student whose role the admin switched on sees the agent box, ticks the tools, runs a task as an agent, and sees
the run's German trace in the conversation (that a role without the mode gets no box, and no run, is
tests/security/test_agent_access.py's). The screenshot goes to tests/artifacts/agent-trace.png.
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
    config = stack_config(folder)
    config.gateway.agents.roles = ["student"]
    config.gateway.agents.max_steps = 2  # one turn's mechanics on a busy machine, not a long plan
    with running_stack(folder, services=("inference", "embeddings", "retrieval"), config=config) as running:
        yield running


@pytest.fixture()
def page(stack):
    with sync_api.sync_playwright() as playwright:
        trust = f"--ignore-certificate-errors-spki-list={shared_tls().spki_sha256}"  # the gateway's test certificate
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*LAUNCH_ARGS, trust])
        context = browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(120_000)
        yield page
        context.close()
        browser.close()


def test_a_student_runs_one_agent_turn_and_sees_its_trace(page, stack):
    student = stack.add_user("agent-browser-anna", "student", ("7a",))
    log_in(page, stack, "agent-browser-anna", student.password)
    page.wait_for_selector("#agent-box", state="visible")
    page.get_by_label("Dokumente durchsuchen").check()
    page.get_by_label("Notiz speichern").check()
    page.fill("#chat-input textarea", "Suche in meinen Dokumenten nach Walen.")
    tokens_before = stack.gateway.accounts.tokens_today(student.account.id)
    page.click("#agent-run")
    page.wait_for_selector("#chatbot >> text=Schritt 1:")
    page.wait_for_function("() => document.querySelector('#chat-input textarea').value === ''")
    text = page.inner_text("#chatbot")
    assert "Suche in meinen Dokumenten nach Walen." in text and "Agent:" in text
    assert "Schritt 1:" in text
    assert stack.gateway.accounts.tokens_today(student.account.id) > tokens_before  # the model's steps count like a chat
    page.screenshot(path=str(ARTIFACTS / "agent-trace.png"), full_page=True)
