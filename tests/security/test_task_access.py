"""Attacks on the Aufgaben tab through Gradio's own API, as a student (or a curious teacher) with curl would make them.

A student reads only their own chat in a task of their class (or one whose
code they entered); another student's task chat, a task of another class by
its id or a guessed code, and the teachers' read log stay closed. A teacher
reads and stops only their own tasks.
"""

from __future__ import annotations

import json
import re
import time
import zipfile
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.gateway_stack import ui_client
from tests.security.conftest import User, gradio_call, gradio_endpoints, make_user

TASK_EVENTS = {
    "tasks_load": [],
    "tasks_open": ["{task}"],
    "tasks_join": ["abcdefghjk"],
    "tasks_send": ["{task}", "Hallo"],
    "tasks_send_click": ["{task}", "Hallo"],
    "tasks_create": ["Eingeschleust", "", None, "", ["chat"], ["7a"], "", "{end}", 1000, False],
    "tasks_students": ["{task}"],
    "tasks_read": ["{task}", "{student}"],
    "tasks_pause": ["{task}"],
    "tasks_resume": ["{task}"],
    "tasks_pause_class": ["7a"],
    "tasks_resume_class": ["7a"],
}
"""Every event of the tab that takes input (tasks_stop only cancels the caller's own events), with arguments aimed at
another's task."""
TEACHER_EVENTS = ("tasks_create", "tasks_students", "tasks_read", "tasks_pause", "tasks_resume", "tasks_pause_class")


def end_in(minutes: float) -> str:
    """A time as a teacher types it, in the school's zone."""
    return (datetime.now(ZoneInfo("Europe/Berlin")) + timedelta(minutes=minutes)).strftime("%d.%m.%Y %H:%M:%S")


def create_task(teacher: User, title: str, classes: list[str], with_code: bool = False) -> tuple[int, str | None]:
    """A task made through the tab's own event, as the teacher's page does; its id and its code."""
    with teacher.browser() as client:
        status, event, payload = gradio_call(
            client, "tasks_create", [title, "Antworte kurz.", None, "", ["chat"], classes, "", end_in(60), 2000, with_code]
        )
    assert status == 200 and event == "complete", payload
    text = payload[0]
    code = re.search(r"`([a-z0-9]+)`", text)
    return int(re.search(r"Nummer (\d+)", text).group(1)), code.group(1) if code else None


def send(user: User, task: object, message: str) -> tuple[str, object]:
    with user.browser() as client:
        _status, event, payload = gradio_call(client, "tasks_send", [task, message])
    return event, payload


@pytest.fixture()
def teacher(security_stack) -> User:
    return make_user(security_stack, "teacher", ("7a",))


def test_the_ui_has_exactly_the_task_events_this_suite_attacks(security_stack, student):
    with student.browser() as client:
        names = {e["api_name"] for e in gradio_endpoints(client) if (e["api_name"] or "").startswith("tasks_")}
    assert names == {*TASK_EVENTS, "tasks_stop"}, names


@pytest.mark.parametrize("api_name", sorted(TASK_EVENTS))
def test_every_task_event_refuses_a_caller_without_a_session(security_stack, api_name):
    with httpx.Client(base_url=security_stack.url, timeout=60) as stranger:
        refused = stranger.post(f"/gradio_api/call/{api_name}", json={"data": TASK_EVENTS[api_name]})
    assert refused.status_code == 401, refused.text


def test_a_student_cannot_read_another_students_task_chat_nor_act_as_the_teacher(security_stack, teacher, student):
    task, _ = create_task(teacher, "Photosynthese", ["7a"])
    classmate = make_user(security_stack, "student", ("7a",))
    event, payload = send(student, task, "Mein Geheimnis ist Lotta Apfelbaum. Was ist Photosynthese?")
    assert event == "complete", payload
    with classmate.browser() as client:
        opened = gradio_call(client, "tasks_open", [task])
        assert opened[1] == "complete" and "Apfelbaum" not in str(opened[2]), opened  # her own (empty) chat only
        reads_before = len(security_stack.gateway.oversight.log())
        for api_name in TEACHER_EVENTS:
            data = [
                a.replace("{task}", str(task)).replace("{student}", student.name).replace("{end}", end_in(60)) if isinstance(a, str) else a
                for a in TASK_EVENTS[api_name]
            ]
            status, event, payload = gradio_call(client, api_name, data)
            assert status == 200 and event == "error", (api_name, event, payload)
            assert "Apfelbaum" not in str(payload) and "Traceback" not in str(payload), (api_name, payload)
    assert len(security_stack.gateway.oversight.log()) == reads_before
    assert [v.id for v in security_stack.gateway.lessons.owned(classmate.account)] == []
    assert security_stack.gateway.lessons.closed_reason(task, frozenset()) is None  # neither the task nor 7a paused
    assert not security_stack.gateway.lessons.class_paused(("7a",))


def test_a_student_of_another_class_cannot_open_a_task_by_guessing_its_id(security_stack, teacher, other_student):
    task, _ = create_task(teacher, "Nur für 7a", ["7a"])
    with other_student.browser() as client:
        listed = gradio_call(client, "tasks_load", [])
        assert listed[1] == "complete" and "Nur für 7a" not in str(listed[2])
        for guess in (task, str(task), task - 1, task + 1, 0, -1, "1 OR 1=1", 2**70, None, [task]):
            for api_name in ("tasks_open", "tasks_send"):
                data = [guess] if api_name == "tasks_open" else [guess, "Hallo"]
                status, event, payload = gradio_call(client, api_name, data)
                if guess is None and api_name == "tasks_open":
                    assert event == "complete" and payload[1] == [], payload  # nothing picked: nothing shown
                    continue
                assert status == 200 and event == "error", (guess, api_name, payload)
                assert "Nur für 7a" not in str(payload) and "Traceback" not in str(payload)
    assert security_stack.gateway.oversight.students(teacher.account, task) == []


def test_task_codes_need_the_admins_consent_are_too_long_to_guess_and_tries_are_limited(security_stack, teacher, admin):
    lessons = security_stack.gateway.lessons
    with teacher.browser() as client:
        _status, event, payload = gradio_call(
            client, "tasks_create", ["Mit Code", "", None, "", ["chat"], ["7a"], "", end_in(60), 500, True]
        )
    assert event == "error" and "Code" in str(payload), payload  # codes are off until the admin allows them
    with admin.browser() as client:
        assert gradio_call(client, "admin_task_codes", [True])[1] == "complete"
    try:
        task, code = create_task(teacher, "Mit Code", ["7a"], with_code=True)
        assert code is not None and len(code) >= 10
        outsider, guesser = make_user(security_stack, "student", ("9c",)), make_user(security_stack, "student", ("9c",))
        with guesser.browser() as client:
            answers = [gradio_call(client, "tasks_join", [guess]) for guess in ("aaaaaaaaaa", code[:-1], code.upper() + "x", "", str(task))]
            assert all(a[1] == "error" and "gibt es nicht" in str(a[2]) for a in answers), answers
            for _ in range(lessons.config.code_attempts_per_hour - len(answers)):
                gradio_call(client, "tasks_join", ["zzzzzzzzzz"])
            limited = gradio_call(client, "tasks_join", [code])  # the right code, but past the limit
            assert limited[1] == "error" and "Zu viele Codes" in str(limited[2]), limited
        assert [v.id for v in lessons.for_student(guesser.account)] == []
        with outsider.browser() as client:
            joined = gradio_call(client, "tasks_join", [code])
            assert joined[1] == "complete" and joined[2][1]["value"] == task, joined
        assert [v.id for v in lessons.for_student(outsider.account)] == [task]
    finally:
        with admin.browser() as client:
            gradio_call(client, "admin_task_codes", [False])


def test_a_teacher_cannot_read_or_stop_another_teachers_task_and_every_read_is_logged(security_stack, teacher, student, admin):
    task, _ = create_task(teacher, "Vulkane", ["7a"])
    assert send(student, task, "Was ist ein Vulkan?")[0] == "complete"
    colleague = make_user(security_stack, "teacher", ("7a",))  # the same class, not her task
    with colleague.browser() as client:
        for api_name in ("tasks_students", "tasks_read", "tasks_pause"):
            data = [task] if api_name != "tasks_read" else [task, student.name]
            status, event, payload = gradio_call(client, api_name, data)
            assert status == 200 and event == "error" and "gibt es nicht" in str(payload), (api_name, payload)
            assert "Vulkan" not in str(payload)
    with teacher.browser() as client:
        status, event, payload = gradio_call(client, "tasks_read", [task, student.name])
    assert event == "complete" and "Was ist ein Vulkan?" in str(payload[0]), payload
    entries = [e for e in security_stack.gateway.oversight.log() if e.task_id == task]
    assert [(e.teacher, e.student, e.task_title) for e in entries] == [(teacher.name, student.name, "Vulkane")]
    assert abs(entries[0].read_at - time.time()) < 120
    for reader in (student, colleague):  # the log is the admin's alone
        with reader.browser() as client:
            status, event, payload = gradio_call(client, "admin_task_reads", [])
        assert event == "error" and "Admin" in str(payload) and student.name not in str(payload), payload
    with admin.browser() as client:
        status, event, payload = gradio_call(client, "admin_task_reads", [])
    assert event == "complete" and [teacher.name, student.name] in [row[1:3] for row in payload[0]["data"]], payload


def test_a_students_task_chats_and_their_reads_are_in_her_export_and_go_with_her_account(security_stack, teacher, student, admin):
    task, _ = create_task(teacher, "Export", ["7a"])
    assert send(student, task, "Wie heißt die Hauptstadt von Frankreich?")[0] == "complete"
    with teacher.browser() as client:
        assert gradio_call(client, "tasks_read", [task, student.name])[1] == "complete"
    _message, shown = ui_client(security_stack.url, admin.bearer).predict(student.name, api_name="/admin_export_user")
    with zipfile.ZipFile(shown["value"]) as archive:
        tasks = json.loads(archive.read("aufgaben.json"))
    assert tasks["task_chats"][0]["task"] == "Export" and "Frankreich" in str(tasks["task_chats"][0]["messages"])
    assert tasks["read_by_teachers"][0]["teacher"] == teacher.name
    gateway = security_stack.gateway
    gateway.accounts.delete_user(student.account.id)
    assert gateway.oversight.export(student.account.id) == {"task_chats": [], "read_by_teachers": []}
    assert gateway.oversight.students(teacher.account, task) == []
    assert [e for e in gateway.oversight.log() if e.task_id == task] == []


def test_a_paused_class_gets_no_answer_anywhere_until_its_teacher_resumes_it(security_stack, teacher):
    task, _ = create_task(teacher, "Klassenstopp", ["7a"])
    pupil = make_user(security_stack, "student", ("7a",))
    request = {"model": "schulki-chat", "max_tokens": 4, "messages": [{"role": "user", "content": "Hallo"}]}
    outsider = make_user(security_stack, "teacher", ("7b",))
    with outsider.browser() as client:  # not her class
        refused = gradio_call(client, "tasks_pause_class", ["7a"])
    assert refused[1] == "error" and "eigenen Klassen" in str(refused[2]), refused
    with teacher.browser() as client:
        assert gradio_call(client, "tasks_pause_class", ["7a"])[1] == "complete"
    try:
        assert "pausiert" in str(send(pupil, task, "Hallo")[1])
        with pupil.browser() as client:
            chat = gradio_call(client, "chat", ["Hallo", [], "preset_assistant", None, None])
        assert chat[1] == "error" and "pausiert" in str(chat[2]), chat
        api = httpx.post(security_stack.url + "/v1/chat/completions", headers=pupil.bearer, json=request, timeout=120)
        assert api.status_code == 423 and "pausiert" in api.json()["error"]["message"], api.text
    finally:
        with teacher.browser() as client:
            assert gradio_call(client, "tasks_resume_class", ["7a"])[1] == "complete"
    assert httpx.post(security_stack.url + "/v1/chat/completions", headers=pupil.bearer, json=request, timeout=120).status_code == 200
    assert send(pupil, task, "Hallo")[0] == "complete"


def test_a_task_chat_is_moderated_and_the_tasks_teacher_sees_the_flag(security_stack, teacher, student):
    task, _ = create_task(teacher, "Gedichte der Romantik", ["7a"])
    event, payload = send(student, task, "Ich will mich umbringen, es hat alles keinen Sinn.")
    assert event == "complete", payload
    assert "116 111" in str(payload), payload  # the help answer, not the model's
    flags = security_stack.gateway.moderation_flags(teacher.account)
    assert any(flag.user == student.name and flag.category == "self_harm" for flag in flags), flags
