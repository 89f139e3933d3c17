"""Attacks on Gradio's sessions and events: another student's session hash, event id, and /cancel without a login.

Finding 10 of issue 19: Gradio keeps a page's state (the chat's history) under
its session hash alone, so with another student's hash ``queue/join``
answered with her chat history, and ``/gradio_api/cancel`` needed no login.
"""

from __future__ import annotations

import json
import uuid

import httpx

from tests.security.conftest import gradio_endpoints

SECRET = "Mein Geheimnis: ich heiße Lotta Apfelbaum."


def join(client: httpx.Client, fn_index: int, data: list, session_hash: str) -> httpx.Response:
    """What the page sends to start an event in its session."""
    body = {"data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": None, "trigger_id": None}
    return client.post("/gradio_api/queue/join", json=body)


def listen(client: httpx.Client, session_hash: str) -> str:
    """Every message of the session's events until they are done, as the page reads them."""
    seen = []
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session_hash}, timeout=300) as stream:
        if stream.status_code != 200:
            return f"{stream.status_code} {stream.read().decode()}"
        for line in stream.iter_lines():
            if line.startswith("data:"):
                seen.append(line)
                if json.loads(line[5:]).get("msg") in ("process_completed", "close_stream"):
                    break
    return "\n".join(seen)


def chat_input(text: str) -> list:
    # message, history (state), preset, chat id (state), model: the states come from the session, not from the page
    return [text, None, "preset_assistant", None, None]


def test_another_students_session_hash_gives_neither_her_history_nor_her_events(security_stack, student, other_student):
    """Attacks: queue/join, queue/data and the heartbeat with the session hash of another student's open page (finding 10)."""
    session = uuid.uuid4().hex[:11]
    with student.browser() as her, other_student.browser() as him:
        chat = next(e["fn_index"] for e in gradio_endpoints(her) if e["api_name"] == "chat")
        started = join(her, chat, chat_input(SECRET), session)
        assert started.status_code == 200, started.text
        assert SECRET in listen(her, session)  # her page works as before

        stolen = join(him, chat, chat_input("Und weiter?"), session)
        seen = stolen.text + (listen(him, session) if stolen.status_code == 200 else "")
        assert SECRET not in seen, "another student's chat history was answered"
        assert stolen.status_code == 403 and "Sitzung gehört nicht dir" in stolen.json()["detail"], stolen.text
        with him.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            assert stream.status_code == 403
        with him.stream("GET", f"/gradio_api/heartbeat/{session}") as stream:  # its end would close her session
            assert stream.status_code == 403
        assert join(her, chat, chat_input("Noch eine Frage"), session).status_code == 200  # still hers
        assert "Noch eine Frage" in listen(her, session)


def test_cancel_needs_a_login_and_acts_only_on_ones_own_events(security_stack, student, other_student):
    """Attacks: /gradio_api/cancel without a login, and with another student's event id and session hash (finding 10)."""
    session = uuid.uuid4().hex[:11]
    with student.browser() as her, other_student.browser() as him:
        chat = next(e["fn_index"] for e in gradio_endpoints(her) if e["api_name"] == "chat")
        event_id = join(her, chat, chat_input("Hallo"), session).json()["event_id"]
        listen(her, session)
        cancel = {"session_hash": session, "fn_index": chat, "event_id": event_id}
        with httpx.Client(base_url=security_stack.url, timeout=30) as anonymous:
            answer = anonymous.post("/gradio_api/cancel", json=cancel)
            assert answer.status_code == 401 and "melde dich an" in answer.json()["detail"], answer.text
        assert him.post("/gradio_api/cancel", json=cancel).status_code == 403
        own_session = uuid.uuid4().hex[:11]  # his own session, her event
        answer = him.post("/gradio_api/cancel", json=cancel | {"session_hash": own_session})
        assert answer.status_code == 404, answer.text
        assert him.get(f"/gradio_api/call/chat/{event_id}").status_code == 404  # her event's stream
        assert her.post("/gradio_api/cancel", json=cancel).status_code == 200  # her own stop button still works
