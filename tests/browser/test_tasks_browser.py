"""A lesson in real browsers (Debian's Chromium, driven by Playwright), against the real gateway, inference, embeddings,
retrieval and the real Gemma 3 270M: a teacher prepares a task with a class document, two students of the class chat
in it, a student of another class does not see it, the teacher reads both chats (the students' page says so), the task
closes at its end time, and the teacher's emergency stop ends a running answer."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import openai
import pytest

from tests.browser.test_gateway_browser import CHROMIUM, LAUNCH_ARGS, log_in, shoot, sync_api
from tests.conftest import shared_tls
from tests.gateway_stack import running_stack, stack_config
from tests.service_support import wait_until

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)")

NOTICE = "Deine Lehrkraft kann die Chats in dieser Aufgabe lesen."
DOCUMENT = (
    "Der Quetzalberg ist ein erloschener Vulkan in der Eifel. Sein Kratersee heißt Mondauge. "
    "Im Jahr 1823 fand der Förster Anton Brühl dort seltene blaue Steine."
)
MAX_TOKENS = 400
"""Tokens of one answer here: long enough that a stopped answer is visibly cut short."""
CEILING_TOKENS_PER_S = 120
"""One stream's most tokens per second on this machine (its memory bandwidth over the model's size, DESIGN.md)."""
ENDED_SHOWN = "() => [...document.querySelectorAll('#task-chatbot .bot')].pop()?.innerText.includes('Die Aufgabe ist zu Ende')"
STORY = "Erzähle mir bitte eine sehr lange, ausführliche Geschichte über den Quetzalberg, mit vielen Kapiteln."


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks-browser")
    config = stack_config(folder)
    config.gateway.max_chat_tokens = MAX_TOKENS
    with running_stack(folder, services=("inference", "embeddings", "retrieval"), config=config) as running:
        yield running


@pytest.fixture(scope="module")
def people(stack, tmp_path_factory):
    """A teacher of 7a with a document in the class's workspace, two students of 7a and one of 7b."""
    made = {name: stack.add_user(name, role, (group,)) for name, role, group in (
        ("tb-lehrerin", "teacher", "7a"), ("tb-anna", "student", "7a"), ("tb-ben", "student", "7a"), ("tb-carla", "student", "7b"),
    )}  # fmt: skip
    path = tmp_path_factory.mktemp("class-documents") / "quetzalberg.txt"
    path.write_text(DOCUMENT, encoding="utf-8")
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=made["tb-lehrerin"].api_key, max_retries=0, timeout=120)
    with path.open("rb") as handle:
        file_id = client.files.create(file=handle, purpose="assistants").id
    added = client.vector_stores.files.create_and_poll(file_id=file_id, vector_store_id="vs_k-7a")
    assert added.status == "completed", added.last_error
    return made


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        trust = f"--ignore-certificate-errors-spki-list={shared_tls().spki_sha256}"  # the gateway's test certificate
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=[*LAUNCH_ARGS, trust])
        yield launched
        launched.close()


def signed_in(browser, stack, people, name: str):
    """A page of its own (own cookies) for the user, on the Aufgaben tab."""
    page = browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 1400}).new_page()
    page.set_default_timeout(120_000)
    log_in(page, stack, name, people[name].password)
    page.get_by_role("tab", name="Aufgaben").click()
    return page


def school_time(seconds_ahead: float) -> str:
    return (datetime.now(ZoneInfo("Europe/Berlin")) + timedelta(seconds=seconds_ahead)).strftime("%d.%m.%Y %H:%M:%S")


def create_task(page, title: str, end: str, documents: bool) -> int:
    """Fill the teacher's form (fresh from the page's load) and create the task; its number."""
    page.reload()
    page.get_by_role("tab", name="Aufgaben").click()
    page.wait_for_selector("#task-teacher")
    page.fill("#task-title textarea", title)
    page.fill("#task-instructions textarea", "Du bist eine freundliche Lernhilfe für Erdkunde. Antworte auf Deutsch.")
    if documents:
        page.click("#task-workspace input")
        page.click("#task-workspace li[role=option][aria-label='Klasse 7a']")
    page.click("#task-classes input")
    page.click("#task-classes li[role=option][aria-label='7a']")
    page.keyboard.press("Escape")
    page.fill("#task-end textarea", end)
    page.click("#task-create")
    page.wait_for_selector(f"#task-result >> text=„{title}“ ist angelegt")
    return int(page.inner_text("#task-result").split("Nummer ")[1].split(")")[0])


def open_task(page, title: str) -> None:
    page.reload()
    page.get_by_role("tab", name="Aufgaben").click()
    page.click("#task-pick input")
    page.click(f"#task-pick li[role=option][aria-label^='{title} (']")
    page.wait_for_selector(f"#task-info >> text={title}")


def send(page, text: str) -> None:
    page.fill("#task-input textarea", text)
    page.click("#task-send")


def last_answer(page) -> str:
    return page.eval_on_selector_all("#task-chatbot .bot", "bots => bots.length ? bots[bots.length - 1].innerText : ''")


def answer_done(stack) -> None:
    wait_until(lambda: stack.gateway.lessons.running.count() == 0, 300, "the task's answers to end", interval=0.1)


def test_a_lesson_the_class_chats_in_the_teacher_reads_with_notice(stack, people, browser):
    teacher = signed_in(browser, stack, people, "tb-lehrerin")
    task = create_task(teacher, "Der Quetzalberg", school_time(3600), documents=True)
    shoot(teacher, "task-created")

    for name, question in (("tb-anna", "Wie heißt der Kratersee des Quetzalbergs?"), ("tb-ben", "Wer fand die blauen Steine?")):
        page = signed_in(browser, stack, people, name)
        assert NOTICE in page.inner_text("#task-notice")  # plainly on the student's task page
        open_task(page, "Der Quetzalberg")
        send(page, question)
        page.wait_for_selector("#task-chatbot .bot")
        answer_done(stack)
        page.wait_for_function("() => [...document.querySelectorAll('#task-chatbot .bot')].pop().innerText.includes('Quellen')")
        assert "quetzalberg.txt" in last_answer(page)  # the class document was the answer's context
        shoot(page, f"task-chat-{name}")
        page.context.close()

    carla = signed_in(browser, stack, people, "tb-carla")  # 7b: the task does not exist for her
    assert "Gerade hast du keine Aufgaben." in carla.inner_text("#task-list")
    carla.click("#task-pick input")
    assert carla.query_selector("#task-pick li[role=option][aria-label^='Der Quetzalberg']") is None
    carla.context.close()

    teacher.click("#task-show")
    teacher.wait_for_selector("#task-usage >> text=Verbraucht")
    for name, question in (("tb-anna", "Kratersee"), ("tb-ben", "blauen Steine")):
        teacher.click("#task-student input")
        teacher.click(f"#task-student li[role=option][aria-label='{name}']")
        teacher.click("#task-read")
        teacher.wait_for_selector(f"#task-read-chat >> text={question}")
        teacher.wait_for_selector(f"#task-usage >> text={name}")
    shoot(teacher, "task-read")
    reads = [(e.teacher, e.student, e.task_id) for e in stack.gateway.oversight.log()]
    assert ("tb-lehrerin", "tb-anna", task) in reads and ("tb-lehrerin", "tb-ben", task) in reads
    usage = {row.name: row.tokens for row in stack.gateway.oversight.students(people["tb-lehrerin"].account, task)}
    assert set(usage) == {"tb-anna", "tb-ben"} and all(tokens > 0 for tokens in usage.values())
    teacher.context.close()


def test_the_task_closes_at_its_end_time_and_ends_a_running_answer(stack, people, browser):
    teacher = signed_in(browser, stack, people, "tb-lehrerin")
    started = time.monotonic()
    anna = signed_in(browser, stack, people, "tb-anna")
    setup_s = 3 * (time.monotonic() - started)  # creating and opening the task: two page loads and a form, as signing in is one
    tries = []
    for attempt in range(5):  # a model may end its answer in the last seconds before the end; then once more
        title = f"Kurze Aufgabe {attempt}"
        # the end as the teacher types it, in whole seconds: the gateway ends the task then, not at the test's own clock.
        # Creating and opening the task come out of that time, so it is sized by how long the page took here to load.
        window_s = round(20 + setup_s)
        ends = datetime.now(ZoneInfo("Europe/Berlin")).replace(microsecond=0) + timedelta(seconds=window_s)
        last_send = ends.timestamp() - 3  # a message sent later might not start before the end
        started = time.monotonic()
        create_task(teacher, title, ends.strftime("%d.%m.%Y %H:%M:%S"), documents=False)
        open_task(anna, title)
        took_s = time.monotonic() - started
        setup_s = max(setup_s, 1.5 * took_s)
        sends = 0
        while time.time() < last_send:  # keep an answer running into the end
            if stack.gateway.lessons.running.count() == 0:
                send(anna, STORY)
                sends += 1
                wait_until(
                    lambda last_send=last_send: stack.gateway.lessons.running.count() > 0 or time.time() >= last_send,
                    120,
                    "an answer to start",
                )
            time.sleep(0.05)
        while time.time() < ends.timestamp() and stack.gateway.lessons.running.count():
            time.sleep(0.02)
        running_at_end = stack.gateway.lessons.running.count() > 0  # else the answer ended on its own in the last seconds
        answer_done(stack)
        if running_at_end:  # the gateway ended it; its last piece reaches the page through Gradio's line, later on a busy machine
            try:
                anna.wait_for_function(ENDED_SHOWN, timeout=30_000)
                break
            except sync_api.TimeoutError:
                pass
        tries.append(
            f"set-up {took_s:.1f} s of {window_s}, {sends} sent, running at the end: {running_at_end}, shown: …{last_answer(anna)[-80:]!r}"
        )
    else:
        pytest.fail("no answer ran at the task's end and was shown ended:\n" + "\n".join(tries))
    shoot(anna, "task-ended")
    send(anna, "Noch eine Frage?")  # after the end: a plain German refusal, no answer
    anna.wait_for_selector("text=Diese Aufgabe ist geschlossen")
    assert stack.gateway.lessons.running.count() == 0


def test_the_emergency_stop_ends_a_running_answer_at_once(stack, people, browser):
    gateway = stack.gateway
    teacher = signed_in(browser, stack, people, "tb-lehrerin")
    task = create_task(teacher, "Notstopp", school_time(3600), documents=False)
    ben = signed_in(browser, stack, people, "tb-ben")
    open_task(ben, "Notstopp")
    teacher.reload()
    teacher.get_by_role("tab", name="Aufgaben").click()
    teacher.wait_for_function(f"() => document.querySelector('#task-own input')?.value.includes('#{task}')")
    for _ in range(5):  # stop while the answer runs: should the model end early, ask again
        send(ben, STORY)
        ben.wait_for_function("() => [...document.querySelectorAll('#task-chatbot .bot')].pop()?.innerText.trim().length > 20")
        if gateway.lessons.running.count():
            break
        answer_done(stack)
    else:
        pytest.fail("no answer ran long enough to stop")
    streamed = len(last_answer(ben))
    clicked = time.monotonic()
    teacher.click("#task-pause")
    wait_until(lambda: gateway.lessons.closed_reason(task, frozenset()) == "paused", 60, "the pause", interval=0.01)
    paused = time.monotonic()
    wait_until(lambda: gateway.lessons.running.count() == 0, 60, "the answer's end", interval=0.01)
    wait_until(lambda: all(node.in_flight == 0 for node in gateway.inference_nodes()), 60, "the inference call's end", interval=0.01)
    ended = time.monotonic()
    ben.wait_for_function("() => [...document.querySelectorAll('#task-chatbot .bot')].pop().innerText.includes('pausiert')")
    shown = time.monotonic()
    # each character streamed is at least a part of a token: the model could not have written the rest this fast
    left_tokens = MAX_TOKENS - streamed
    print(f"stop: paused→ended {ended - paused:.3f} s, click→ended {ended - clicked:.3f} s, click→shown {shown - clicked:.3f} s")
    # from the stop on the server (the click's event waits in Gradio's line first, seconds on a busy machine)
    assert ended - paused < left_tokens / CEILING_TOKENS_PER_S, (ended - paused, streamed)
    teacher.wait_for_selector("#task-result >> text=Angehalten")
    shoot(ben, "task-paused")
    send(ben, "Und jetzt?")
    ben.wait_for_selector("text=Diese Aufgabe ist pausiert")
    teacher.click("#task-resume")
    teacher.wait_for_selector("#task-result >> text=Fortgesetzt")
    assert gateway.lessons.closed_reason(task, frozenset()) is None
