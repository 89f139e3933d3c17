"""The chat tab's model picker in a real browser (Debian's Chromium, driven by Playwright).

Two in-process inference nodes serve the demo GGUF as demo-a and demo-b. A
student picks demo-b and gets its answer from demo-b's node; another student,
whose role the admin limited to demo-a, is offered demo-a only. The demo-model
line is shown because only the demo model runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.test_gateway_browser import CHROMIUM, LAUNCH_ARGS, log_in, shoot, sync_api, wait_until
from tests.conftest import shared_tls
from tests.multi_model_support import gateway_config, in_process_nodes, running_gateway

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with in_process_nodes(["demo-a", "demo-b"]) as servers:
        config = gateway_config(tmp_path_factory.mktemp("gateway"), [server.address for server in servers])
        config.gateway.max_chat_tokens = 12
        with running_gateway(config) as running:
            running.wait_until(lambda: running.gateway._services.serving_models() == ["demo-a", "demo-b"], 60, "both models serving")
            yield running


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        trust = f"--ignore-certificate-errors-spki-list={shared_tls().spki_sha256}"  # the gateway's test certificate, as in the other browser test
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*LAUNCH_ARGS, trust])
        yield browser
        browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(90_000)
    yield page
    context.close()


def open_options(page) -> list[str]:
    """Open the model picker's list; the names it offers (without the default's mark)."""
    page.click("#chat-model input")
    page.wait_for_selector("#chat-model li[role=option]")
    return [
        label.removesuffix(" (Standard)")
        for label in page.eval_on_selector_all("#chat-model li[role=option]", "items => items.map(i => i.getAttribute('aria-label'))")
    ]


def test_a_student_picks_a_model_and_gets_its_answer(page, stack):
    student = stack.gateway.accounts.add_user("picker-anna", "student", ["7a"])
    log_in(page, stack, "picker-anna", student.password)
    page.wait_for_selector("#demo-model-note >> text=Demo-Modell")  # only the demo model runs: one line says so
    page.wait_for_selector("#chat-model-info >> text=Gemma 3 270M")
    assert open_options(page) == ["demo-a", "demo-b"]
    page.click("#chat-model li[role=option][aria-label='demo-b']")
    assert page.input_value("#chat-model input") == "demo-b"
    page.wait_for_selector("#chat-model-info >> text=Gemma 3 270M")

    def served_by_b() -> int:  # the Gateway hands out each node's numbers as they are now: read them again
        return next(node.served for node in stack.gateway.inference_nodes() if node.model == "demo-b")

    before = served_by_b()
    page.fill("#chat-input textarea", "Erzähl mir etwas über Vulkane.")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => { const b = document.querySelectorAll('#chatbot .bot'); return b.length && b[b.length - 1].innerText.trim().length > 0 }"
    )
    wait_until(lambda: served_by_b() == before + 1, 60)  # demo-b's node wrote the answer
    shoot(page, "model-picker")


def test_a_student_is_offered_only_the_models_the_admin_allowed(page, stack):
    stack.gateway.models.set_role_models("student", ["demo-a"])
    try:
        student = stack.gateway.accounts.add_user("picker-ben", "student", ["7b"])
        log_in(page, stack, "picker-ben", student.password)
        page.wait_for_selector("#chat-model-info >> text=Gemma 3 270M")
        assert open_options(page) == ["demo-a"]
    finally:
        stack.gateway.models.set_role_models("student", None)


def test_a_teacher_sets_the_model_of_their_class_for_a_lesson(page, stack):
    teacher = stack.gateway.accounts.add_user("picker-teacher", "teacher", ["8c"])
    log_in(page, stack, "picker-teacher", teacher.password)
    page.get_by_text("Modell für den Unterricht (Lehrkräfte)").click()
    page.wait_for_selector("#lesson-class input")
    assert page.input_value("#lesson-class input") == "8c"
    page.click("#lesson-model input")
    page.click("#lesson-model li[role=option][aria-label='demo-b']")
    page.click("#lesson-set")
    page.wait_for_selector("#lesson-result >> text=Die Klasse 8c nutzt jetzt: demo-b.")
    shoot(page, "lesson-model")
    student = stack.gateway.accounts.add_user("picker-emil", "student", ["8c"])
    assert stack.gateway.models.preselected(student.account) == "demo-b"
