"""What the gateway tells a student: the school's class list, raw exceptions, and Gradio's internal routes.

Findings 9 and 12 of issue 19.
"""

from __future__ import annotations

import uuid

import httpx

from tests.security.conftest import gradio_call, make_user


def lesson_classes(user) -> list:
    """The classes the chat_models event offers the user for a lesson model (the Chat tab's hidden picker)."""
    with user.browser() as client:
        status, event, outputs = gradio_call(client, "chat_models", [])
    assert status == 200 and event == "complete", (status, event, outputs)
    return [choice[1] if isinstance(choice, list) else choice for choice in outputs[4].get("choices", [])]


def test_a_student_is_not_sent_the_schools_classes(security_stack):
    """Attacks: read the chat_models event's answer, which filled the lesson-class picker with every class (finding 9)."""
    own, elsewhere = f"k{uuid.uuid4().hex[:6]}", f"k{uuid.uuid4().hex[:6]}"
    student = make_user(security_stack, "student", (own,))
    make_user(security_stack, "student", (elsewhere,))
    teacher = make_user(security_stack, "teacher", (own,))
    admin = make_user(security_stack, "admin")
    assert lesson_classes(student) == []
    assert lesson_classes(teacher) == [own]  # a teacher picks among her own classes
    assert {own, elsewhere} <= set(lesson_classes(admin))


def test_a_chat_id_that_is_not_a_number_gets_a_plain_german_error(security_stack, student):
    """Attacks: chat_open with ["abc"], which showed Python's ValueError (finding 12)."""
    with student.browser() as client:
        for chosen in ("abc", "1e9999", 10**30, [1], -5):
            status, event, body = gradio_call(client, "chat_open", [chosen])
            assert status == 200 and event == "error", (chosen, status, event, body)
            assert body["error"] == "Diesen gespeicherten Chat gibt es nicht. Wähle einen aus der Liste.", (chosen, body)


def test_the_api_document_lists_v1_with_its_errors_and_no_gradio_internals(security_stack):
    """Attacks: /openapi.json without a login, which listed Gradio's 74 internal routes and none of /v1 (finding 12)."""
    with httpx.Client(base_url=security_stack.url, timeout=30) as anonymous:
        for path in ("/openapi.json", "/en/openapi.json"):
            answer = anonymous.get(path)
            assert answer.status_code == 404 or "gradio_api" not in answer.text, (path, answer.status_code, answer.text[:300])
        document = anonymous.get("/v1/openapi.json")
    assert document.status_code == 200, document.text
    paths = document.json()["paths"]
    assert "/v1/chat/completions" in paths and "/v1/vector_stores/{vector_store_id}/files" in paths
    assert all(path.startswith("/v1/") for path in paths), sorted(paths)
    for path, operations in paths.items():
        for method, operation in operations.items():
            declared = set(operation["responses"])
            assert {"400", "401", "413", "429"} <= declared, (method, path, declared)
            assert "{" not in path or "404" in declared, (method, path, declared)
