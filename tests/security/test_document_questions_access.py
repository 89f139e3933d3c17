"""Document questions attacked as a student would: another student's workspace through the page's own API and /v1."""

from __future__ import annotations

import httpx

from tests.security.conftest import file_payload, gradio_call, upload

SECRET = "Das Passwort des Tresors lautet Zitronenfalter."


def test_a_student_cannot_ask_about_another_students_documents(security_stack, student, other_student):
    victim_space = other_student.account.own_workspace
    with other_student.browser() as victim:
        path = upload(victim, "tagebuch.txt", SECRET.encode())
        status, event, payload = gradio_call(victim, "documents_upload", [victim_space, file_payload(path)])
        assert status == 200 and event == "complete", payload
        # the owner's own question is answered from the document: the attack below is refused, not just empty
        status, event, payload = gradio_call(victim, "documents_ask", [victim_space, "Wie lautet das Passwort des Tresors?"])
        assert status == 200 and event == "complete" and "tagebuch.txt" in str(payload), payload

    with student.browser() as attacker:
        for prefix in ("", "/en"):
            status, event, payload = gradio_call(attacker, "documents_ask", [victim_space, "Wie lautet das Passwort?"], prefix)
            assert status == 200 and event == "error", payload
            assert "Zitronenfalter" not in str(payload) and "tagebuch" not in str(payload)

    body = {"model": "schulki-chat", "messages": [{"role": "user", "content": "Wie lautet das Passwort des Tresors?"}]}
    with httpx.Client(base_url=security_stack.url, headers=student.bearer, timeout=120) as api:
        for stream in (False, True):
            answer = api.post(f"/v1/vector_stores/vs_{victim_space}/chat/completions", json={**body, "stream": stream})
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "vector_store_not_found", answer.text
            assert "Zitronenfalter" not in answer.text and "tagebuch" not in answer.text
