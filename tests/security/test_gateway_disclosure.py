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


def added_file(client: httpx.Client, store: str, name: str, content: bytes) -> dict:
    """Upload a file through /v1/files, add it to the store, and read its record at once, as a script polling it would."""
    uploaded = client.post("/v1/files", files={"file": (name, content)}, data={"purpose": "assistants"})
    assert uploaded.status_code == 200, uploaded.text
    added = client.post(f"/v1/vector_stores/{store}/files", json={"file_id": uploaded.json()["id"]})
    assert added.status_code == 200, added.text
    return added.json()


def wait_done(client: httpx.Client, store: str, file_id: str) -> list[dict]:
    """Every record read while the ingest runs, until it is no longer in progress."""
    seen = []
    for _ in range(600):
        seen.append(client.get(f"/v1/vector_stores/{store}/files/{file_id}").json())
        if seen[-1]["status"] != "in_progress":
            return seen
    raise AssertionError(f"still in progress: {seen[-1]}")


def test_a_refused_file_is_recorded_with_the_real_reason(security_stack, student):
    """Attacks: add x.exe (recorded as "Internal error from Core") and read its record right after the fast failure
    (answered "Ingest was interrupted") (finding 12)."""
    store = f"vs_{student.account.own_workspace}"
    with httpx.Client(base_url=security_stack.url, headers=student.bearer, timeout=60) as client:
        for size in (4, 256 * 1024, 3 * 1024 * 1024):  # refused before the retrieval service reads a byte of it
            added = added_file(client, store, "x.exe", b"MZ" + bytes(size))
            for record in [added, *wait_done(client, store, added["id"])]:
                if record["status"] == "failed":
                    message = record["last_error"]["message"]
                    assert "Dateityp .exe wird nicht unterstützt" in message, (size, record)
            assert record["status"] == "failed", record
