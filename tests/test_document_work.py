"""Summarize and translate a whole document through the API (/v1/documents/*), on the real stack with the real model."""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
import time

import docx
import grpc
import httpx
import pytest
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as retrieval_grpc

from tests.conftest import shared_tls
from tests.gateway_stack import running_stack, stack_config, write_pdf
from tests.retrieval_support import ingest

PAGES = [
    f"Seite {n}. Die Klasse untersucht das Thema Wasser im Projekt. Der Versuch Nummer {n} zeigt, wie Wasser verdunstet. "
    f"Danach schreiben alle ein kurzes Protokoll über den Versuch und die Beobachtung."
    for n in range(1, 9)
]
HEADINGS = ["Einleitung", "Der Versuch", "Ergebnis"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("documents")
    config = stack_config(folder)
    config.gateway.requests_per_minute = {"student": 1000, "teacher": 1000, "admin": 1000}
    config.gateway.document_part_tokens = 120  # about two pages a part: several parts from a short PDF
    config.gateway.document_summary_tokens = 12
    config.gateway.document_translation_tokens = 48
    with running_stack(folder, services=("inference", "embeddings", "retrieval"), config=config) as running:
        yield running


@pytest.fixture(scope="module")
def student(stack):
    return stack.add_user("doc-anna", "student", ("7a",))


@pytest.fixture(scope="module")
def other(stack):
    return stack.add_user("doc-ben", "student", ("7b",))


@pytest.fixture(scope="module")
def retrieval(stack):
    return retrieval_grpc.RetrievalServiceStub(stack.servers["retrieval"].channel())


def store(retrieval, workspace: str, file_name: str, data: bytes) -> str:
    with contextlib.suppress(grpc.RpcError):  # it exists already
        retrieval.CreateWorkspace(retrieval_pb.CreateWorkspaceRequest(workspace=workspace), timeout=30)
    return ingest(retrieval, workspace, file_name, data)[1].document_id


@pytest.fixture(scope="module")
def pdf(stack, student, retrieval, tmp_path_factory):
    path = write_pdf(tmp_path_factory.mktemp("pdf") / "wasser.pdf", PAGES)
    return store(retrieval, student.account.own_workspace, "wasser.pdf", path.read_bytes())


@pytest.fixture(scope="module")
def letter(stack, student, retrieval):
    document = docx.Document()
    for heading in HEADINGS:
        document.add_heading(heading, level=1)
        document.add_paragraph(f"Dieser Abschnitt heißt {heading}. Wir beschreiben ihn in zwei Sätzen.")
        document.add_paragraph("Ein zweiter Absatz folgt hier.")
    buffer = io.BytesIO()
    document.save(buffer)
    return store(retrieval, student.account.own_workspace, "brief.docx", buffer.getvalue())


def client(stack, account) -> httpx.Client:
    return httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {account.api_key}"}, verify=str(shared_tls().ca_file), timeout=300
    )


def events(response: httpx.Response):
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def test_a_summary_streams_progress_part_by_part_and_ends_with_page_references(stack, student, pdf):
    body = {"workspace": student.account.own_workspace, "document_id": pdf, "length": "lesson", "stream": True}
    with client(stack, student) as http, http.stream("POST", "/v1/documents/summarize", json=body) as response:
        assert response.status_code == 200
        received = list(events(response))
    progress = [e for e in received if e["object"] == "document.progress" and e["stage"] == "summary"]
    parts = progress[0]["parts"]
    assert parts >= 3
    assert [e["message"] for e in progress] == [f"Teil {i} von {parts}" for i in range(1, parts + 1)]
    final = received[-1]
    assert final["object"] == "document.summary" and final["parts"] == parts, received[-3:]
    pages = [int(n) for n in re.findall(r"S\. (\d+)", final["text"])]
    assert pages and all(1 <= n <= len(PAGES) for n in pages), final["text"]  # invented pages are removed
    assert any(e["object"] == "document.text" for e in received)


def test_a_summary_without_streaming_answers_with_json_and_counts_its_tokens(stack, student, pdf):
    body = {"workspace": student.account.own_workspace, "document_id": pdf, "length": "paragraph"}
    tokens_before = stack.gateway.accounts.tokens_today(student.account.id)
    with client(stack, student) as http:
        response = http.post("/v1/documents/summarize", json=body)
    assert response.status_code == 200, response.text
    # every part's prompt and answer count against the daily quota, like a chat
    assert stack.gateway.accounts.tokens_today(student.account.id) - tokens_before > 120 * response.json()["parts"]
    assert response.json()["object"] == "document.summary" and re.search(r"S\. \d", response.json()["text"])


def test_a_client_that_disconnects_stops_the_work_at_once(stack, student, pdf):
    calls = []
    original = stack.gateway._services.chat
    lock = threading.Lock()

    def counting_chat(*args, **kwargs):
        with lock:
            calls.append(time.monotonic())
        return original(*args, **kwargs)

    stack.gateway._services.chat = counting_chat
    try:
        body = {"workspace": student.account.own_workspace, "document_id": pdf, "length": "page", "stream": True}
        with client(stack, student) as http, http.stream("POST", "/v1/documents/summarize", json=body) as response:
            for event in events(response):
                if event.get("part") == 2:
                    parts = event["parts"]
                    break
        # the connection is closed here, while part 2 is being summarized
        time.sleep(4)
        seen = len(calls)
        time.sleep(4)
        assert len(calls) == seen <= 2 < parts, (calls, parts)
        assert all(node.in_flight == 0 for node in stack.gateway.inference_nodes())
    finally:
        stack.gateway._services.chat = original


def test_another_students_document_is_refused_with_404(stack, student, other, pdf):
    with client(stack, other) as http:
        for route, extra in (("summarize", {}), ("translate", {"language": "fr"})):
            for stream in (False, True):
                body = {"workspace": student.account.own_workspace, "document_id": pdf, "stream": stream, **extra}
                response = http.post(f"/v1/documents/{route}", json=body)
                assert response.status_code == 404, response.text
                assert response.json()["error"]["type"] == "not_found_error"
        # their own workspace does not hold it either
        response = http.post("/v1/documents/summarize", json={"workspace": other.account.own_workspace, "document_id": pdf})
        assert response.status_code == 404, response.text


def test_bad_requests_get_400(stack, student, pdf):
    workspace = student.account.own_workspace
    with client(stack, student) as http:
        for route, body in (
            ("translate", {"workspace": workspace, "document_id": pdf, "language": "xx"}),
            ("translate", {"workspace": workspace, "document_id": pdf, "language": "fr", "format": "pdf"}),
            ("summarize", {"workspace": workspace, "document_id": pdf, "length": "roman"}),
            ("summarize", {"workspace": workspace}),
            ("summarize", {"workspace": workspace, "document_id": "x" * 100_000}),  # refused before any service sees it
            ("summarize", {"workspace": workspace, "document_id": pdf, "length": "y" * 10_000}),
        ):
            response = http.post(f"/v1/documents/{route}", json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["error"]["message"] and len(response.text) < 1000  # the input is not echoed back
        missing = http.post("/v1/documents/summarize", json={"workspace": workspace, "document_id": "0" * 32})
        assert missing.status_code == 404, missing.text
        assert http.post("/v1/documents/summarize", json={}, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_a_translation_is_a_docx_with_the_headings_as_headings(stack, student, letter):
    body = {"workspace": student.account.own_workspace, "document_id": letter, "language": "fr", "format": "docx"}
    with client(stack, student) as http:
        response = http.post("/v1/documents/translate", json=body)
    assert response.status_code == 200, response.text
    assert 'filename="brief-fr.docx"' in response.headers["content-disposition"]
    document = docx.Document(io.BytesIO(response.content))
    headings = [p.text for p in document.paragraphs if p.style.name == "Heading 1"]
    paragraphs = [p.text for p in document.paragraphs if p.style.name != "Heading 1" and p.text.strip()]
    assert len(headings) == len(HEADINGS) and all(h.strip() for h in headings), headings
    assert paragraphs


def test_a_streamed_translation_reports_parts_and_carries_the_file(stack, student, letter):
    import base64

    body = {"workspace": student.account.own_workspace, "document_id": letter, "language": "uk", "format": "md", "stream": True}
    with client(stack, student) as http, http.stream("POST", "/v1/documents/translate", json=body) as response:
        received = list(events(response))
    assert received[0]["object"] == "document.progress" and received[0]["message"].startswith("Teil 1 von ")
    final = received[-1]
    assert final["object"] == "document.translation" and final["file"]["name"] == "brief-uk.md"
    markdown = base64.b64decode(final["file"]["content_base64"]).decode()
    assert markdown.count("## ") == len(HEADINGS)
