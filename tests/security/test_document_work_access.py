"""Attacks on the whole-document work (summarize, translate) through the Gradio API the web UI uses and through /v1/documents."""

from __future__ import annotations

import contextlib

import grpc
import httpx
import pytest
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as retrieval_grpc

from tests.retrieval_support import ingest
from tests.security.conftest import gradio_call

SECRET = "Zeugnisnote von Mia: Mathematik 2, Deutsch 1. Das bleibt privat."


@pytest.fixture()
def private_document(security_stack, student) -> str:
    stub = retrieval_grpc.RetrievalServiceStub(security_stack.servers["retrieval"].channel())
    workspace = student.account.own_workspace
    with contextlib.suppress(grpc.RpcError):  # it exists already
        stub.CreateWorkspace(retrieval_pb.CreateWorkspaceRequest(workspace=workspace), timeout=30)
    return ingest(stub, workspace, "zeugnis.txt", SECRET.encode())[1].document_id


@pytest.mark.parametrize(("api_name", "extra"), [("whole_summarize", "paragraph"), ("whole_translate", "fr"), ("whole_documents", None)])
def test_a_student_cannot_work_on_another_students_document_through_the_ui_events(
    security_stack, student, other_student, private_document, api_name, extra
):
    """Attacks: the UI's events called directly with someone else's workspace and document id."""
    calls = []
    original = security_stack.gateway._services.chat
    security_stack.gateway._services.chat = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        data = (
            [student.account.own_workspace, private_document] if extra is None else [student.account.own_workspace, private_document, extra]
        )
        with other_student.browser() as client:
            for prefix in ("", "/en"):
                status, event, payload = gradio_call(client, api_name, data, prefix)
                assert status == 200 and event == "error", (api_name, event, payload)
                assert "Arbeitsbereich gibt es für dich nicht" in str(payload) or "workspace does not exist" in str(payload), payload
                assert "zeugnis" not in str(payload).lower() and "Mathematik" not in str(payload)
    finally:
        security_stack.gateway._services.chat = original
    assert calls == []  # refused before anything reached the model


def test_a_document_id_from_another_workspace_is_not_found_in_ones_own(security_stack, student, other_student, private_document):
    """Attacks: another student's document id with one's own workspace, through the API."""
    with httpx.Client(base_url=security_stack.url, headers=other_student.bearer, timeout=60) as client:
        for route, extra in (("summarize", {}), ("translate", {"language": "de", "format": "txt"})):
            body = {"workspace": other_student.account.own_workspace, "document_id": private_document, **extra}
            response = client.post(f"/v1/documents/{route}", json=body)
            assert response.status_code == 404 and "Mathematik" not in response.text, response.text
