"""Who may use which model: the admin's choices per role, a teacher's lesson model, checked in the UI's API, over raw HTTP and in /v1.

Two in-process inference nodes serve the demo GGUF as demo-a and demo-b.
"""

from __future__ import annotations

import httpx
import pytest
from gradio_client.exceptions import AppError

from tests import gateway_stack
from tests.multi_model_support import gateway_config, in_process_nodes, running_gateway


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with in_process_nodes(["demo-a", "demo-b"]) as servers:
        config = gateway_config(tmp_path_factory.mktemp("gateway"), [server.address for server in servers])
        with running_gateway(config) as running:
            running.wait_until(lambda: running.gateway._services.serving_models() == ["demo-a", "demo-b"], 60, "both models serving")
            yield running


def client_for(stack, name: str, role: str = "student", classes: tuple[str, ...] = ()):
    created = stack.gateway.accounts.add_user(name, role, list(classes))
    return created, gateway_stack.ui_client(stack.url, {"Authorization": f"Bearer {created.api_key}"})


@pytest.fixture(scope="module")
def admin(stack):
    return client_for(stack, "pick-admin", "admin")[1]


@pytest.fixture(scope="module")
def students_only_demo_a(stack, admin):
    overview = admin.predict(api_name="/admin_overview")
    models = overview[1]["data"]
    assert sorted(row[1] for row in models) == ["demo-a", "demo-b"]
    assert admin.predict("demo-a", ["demo-a"], ["demo-a", "demo-b"], api_name="/admin_models_save") == "Modelleinstellungen gespeichert."
    assert stack.gateway.models.role_models("student") == ["demo-a"] and stack.gateway.models.role_models("teacher") is None
    yield
    stack.gateway.models.set_role_models("student", None)


def chat_over_gradio_http(stack, api_key: str, model: str) -> tuple[str, str]:
    """POST /gradio_api/call/chat and read its event stream; returns the last event's name and data."""
    headers = {"Authorization": f"Bearer {api_key}"}
    posted = httpx.post(
        f"{stack.url}/gradio_api/call/chat", headers=headers, timeout=30, json={"data": ["Hallo, wer bist du?", "preset_assistant", model]}
    )
    assert posted.status_code == 200, posted.text
    event, data = "", ""
    with httpx.stream("GET", f"{stack.url}/gradio_api/call/chat/{posted.json()['event_id']}", headers=headers, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
    return event, data


def test_the_picker_offers_a_student_only_the_models_the_admin_allowed(stack, students_only_demo_a):
    _anna, client = client_for(stack, "pick-anna", classes=("7a",))
    picker, description, note, *_ = client.predict(api_name="/chat_models")
    assert [choice[1] for choice in picker["choices"]] == ["demo-a"] and picker["value"] == "demo-a"
    assert "Gemma 3 270M" in description and "Demo-Modell" in description
    assert note["visible"] is True and "Demo-Modell" in note["value"]  # only the demo model runs here: the tab says so
    job = client.submit("Hallo!", "preset_assistant", "demo-a", api_name="/chat")
    history = job.result()[0]
    assert history[1]["content"][0]["text"].strip()


def test_a_student_cannot_use_a_model_the_admin_did_not_allow(stack, students_only_demo_a, capfd):
    ben, client = client_for(stack, "pick-ben", classes=("7b",))
    with pytest.raises(AppError, match="nicht freigegeben"):
        client.predict("Hallo!", "preset_assistant", "demo-b", api_name="/chat")
    assert "Traceback" not in capfd.readouterr().err  # a refusal is an answer, not a bug: no traceback in the gateway's log
    event, data = chat_over_gradio_http(stack, ben.api_key, "demo-b")
    assert event == "error" and "nicht freigegeben" in data
    headers = {"Authorization": f"Bearer {ben.api_key}"}
    listed = [m["id"] for m in httpx.get(f"{stack.url}/v1/models", headers=headers, timeout=30).json()["data"]]
    assert "demo-a" in listed and "demo-b" not in listed
    refused = httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers=headers,
        timeout=30,
        json={"model": "demo-b", "messages": [{"role": "user", "content": "Hallo"}], "max_tokens": 2},
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    allowed = httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers=headers,
        timeout=120,
        json={"model": "schulki-chat", "messages": [{"role": "user", "content": "Hallo"}], "max_tokens": 2},
    )
    assert allowed.status_code == 200 and allowed.json()["model"] == "demo-a"  # the alias points at the admin's default


def test_a_teacher_sets_the_lesson_model_of_their_class_only(stack, students_only_demo_a):
    _teacher, teacher_client = client_for(stack, "pick-teacher", "teacher", ("7a",))
    anna_created, anna = client_for(stack, "pick-clara", classes=("7a",))
    _ben_created, ben = client_for(stack, "pick-dora", classes=("7b",))
    with pytest.raises(AppError, match="eigenen Klassen"):
        teacher_client.predict("7b", "demo-b", api_name="/chat_lesson_model")
    assert "7a" in teacher_client.predict("7a", "demo-b", api_name="/chat_lesson_model")
    picker = anna.predict(api_name="/chat_models")[0]
    assert picker["value"] == "demo-b" and [c[1] for c in picker["choices"]] == ["demo-a", "demo-b"]
    answer = httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {anna_created.api_key}"},
        timeout=120,
        json={"model": "schulki-chat", "messages": [{"role": "user", "content": "Hallo"}], "max_tokens": 2},
    )
    assert answer.json()["model"] == "demo-b"  # the class's lesson model
    assert [c[1] for c in ben.predict(api_name="/chat_models")[0]["choices"]] == ["demo-a"]  # another class: unchanged
    with pytest.raises(AppError, match="eigenen Klassen"):
        anna.predict("7a", "demo-a", api_name="/chat_lesson_model")  # students set nothing
    teacher_client.predict("7a", "", api_name="/chat_lesson_model")  # back to the school's default
    assert anna.predict(api_name="/chat_models")[0]["value"] == "demo-a"


def test_the_admin_overview_counts_answers_per_node(stack, admin):
    rows = admin.predict(api_name="/admin_overview")[1]["data"]
    assert sum(int(row[7]) for row in rows) >= 1 and all(row[2] == "Q4_K_M" for row in rows)
