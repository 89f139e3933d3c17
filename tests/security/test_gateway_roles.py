"""Attacks across roles and out of the school: a student calls every admin handler; every URL-taking path tries to fetch.

A student has their own API key and session; these tests use both, through
the Gradio API (by api_name and by fn_index through the queue) and /v1.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.security.conftest import file_payload, gradio_call, gradio_endpoints

ADMIN_ARGUMENTS = {
    "admin_overview": [],
    "admin_add_user": ["eingeschleust", "admin", ""],
    "admin_import": [None],
    "admin_reset_password": ["{admin}"],
    "admin_delete_user": ["{admin}"],
    "admin_retention": [0],
    "admin_export_user": ["{admin}"],
    "admin_data_periods": [],
    "admin_save_data_periods": [1, 1, 1],
    "admin_evaluation": [],
    "admin_models_save": [None, [], []],
    "admin_model_add": ["/etc/passwd", "eingeschleust"],
    "admin_certificates": [],
    "admin_agent_roles": [],
    "admin_agent_save": [["student", "teacher"]],
    "admin_task_reads": [],
    "admin_task_codes": [True],
}


def test_the_ui_has_exactly_the_admin_handlers_this_suite_attacks(security_stack, student):
    """Checks the list below is complete: a new admin handler must be added to this suite."""
    with student.browser() as client:
        names = {e["api_name"] for e in gradio_endpoints(client) if (e["api_name"] or "").startswith("admin")}
    assert names == set(ADMIN_ARGUMENTS), names


@pytest.mark.parametrize("api_name", sorted(ADMIN_ARGUMENTS))
@pytest.mark.parametrize("how", ["session", "api_key"])
def test_a_student_cannot_call_an_admin_handler(security_stack, student, admin, api_name, how):
    """Attacks: a student calls each admin handler directly through the Gradio API (the Admin tab is only hidden)."""
    data = [admin.name if a == "{admin}" else a for a in ADMIN_ARGUMENTS[api_name]]
    retention_before = security_stack.gateway.retention_days()
    agent_roles_before = security_stack.gateway.accounts.get_setting("agent_roles", "unset")
    client = student.browser() if how == "session" else httpx.Client(base_url=security_stack.url, headers=student.bearer, timeout=60)
    with client:
        for prefix in ("", "/en"):
            status, event, payload = gradio_call(client, api_name, data, prefix)
            assert status == 200 and event == "error", (api_name, event, payload)
            assert "Admin" in str(payload) and "Passwort" not in str(payload) and "sk-schulki-" not in str(payload)
    assert security_stack.gateway.accounts.by_name("eingeschleust") is None
    assert security_stack.gateway.accounts.by_name(admin.name) is not None
    assert security_stack.gateway.accounts.check_password(admin.name, admin.password) is not None
    assert security_stack.gateway.retention_days() == retention_before
    assert security_stack.gateway.accounts.get_setting("agent_roles", "unset") == agent_roles_before
    assert not security_stack.gateway.lessons.codes_allowed()


@pytest.mark.parametrize(
    "path", ["/v1/users", "/v1/admin/users", "/v1/admin", "/v1/accounts", "/v1/settings", "/v1/files/x/content", "/v1/models/x/delete"]
)
def test_a_student_finds_no_admin_route_under_v1(security_stack, student, path):
    """Attacks: guessing admin routes under /v1 with a student's API key."""
    for method in ("GET", "POST", "DELETE"):
        response = httpx.request(method, security_stack.url + path, headers=student.bearer, json={"name": "x", "role": "admin"})
        assert response.status_code in (404, 405), (method, path, response.status_code)


def test_no_url_taking_path_makes_the_gateway_fetch(security_stack, student, recorder):
    """Attacks: SSRF through every path that takes a URL: FileData url and path, image_url parts, audio by URL, file= and proxy=."""
    with student.browser() as client:
        for data in (
            [
                student.account.own_workspace,
                {"path": recorder.url + "/a.pdf", "url": recorder.url + "/a.pdf", "meta": {"_type": "gradio.FileData"}},
            ],
            [student.account.own_workspace, {"url": recorder.url + "/a.pdf", "meta": {"_type": "gradio.FileData"}}],
            [student.account.own_workspace, file_payload("//127.0.0.1/a.pdf")],
        ):
            status, _event, body = gradio_call(client, "documents_upload", data)
            assert status == 403, (data, status, body)
        status, _event, body = gradio_call(
            client, "transcribe", [{"path": recorder.url + "/a.wav", "meta": {"_type": "gradio.FileData"}}, ""]
        )
        assert status == 403
        for route in (f"/gradio_api/file={recorder.url}/a", f"/gradio_api/proxy={recorder.url}/a", f"/en/gradio_api/file={recorder.url}/a"):
            assert client.get(route).status_code in (403, 404)
    chat = httpx.post(
        security_stack.url + "/v1/chat/completions",
        headers=student.bearer,
        timeout=60,
        json={
            "model": "schulki-chat",
            "max_tokens": 4,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": recorder.url + "/bild.png"}}]}],
        },
    )
    assert chat.status_code == 400
    audio = httpx.post(
        security_stack.url + "/v1/audio/transcriptions",
        headers=student.bearer,
        timeout=60,
        data={"file": recorder.url + "/a.wav", "model": "whisper-1"},
        files={"x": ("x", b"x")},
    )
    assert audio.status_code == 400
    # the API's web page ingest goes through the retrieval service's address check: a private address ends as failed
    store = f"vs_{student.account.own_workspace}"
    added = httpx.post(
        f"{security_stack.url}/v1/vector_stores/{store}/files",
        headers=student.bearer,
        timeout=60,
        json={"url": recorder.url + "/seite.html"},
    )
    assert added.status_code == 200, added.text
    deadline = time.monotonic() + 60
    while (found := httpx.get(f"{security_stack.url}/v1/vector_stores/{store}/files/{added.json()['id']}", headers=student.bearer)).json()[
        "status"
    ] == "in_progress" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert found.json()["status"] == "failed" and found.json()["last_error"]["code"] == "invalid_file"
    assert recorder.connections == 0
