"""The retrieval service over a real socket, with the real embeddings service, on each store engine (embedded, Weaviate).

Every format is ingested end to end (made by tests/retrieval_documents.py)
and found again by a German or English question, with its page or section;
workspaces are isolated; every bad input gets its status code and leaves
nothing behind; a dead embeddings service gives UNAVAILABLE while the
retrieval service keeps serving.
"""

from __future__ import annotations

import http.server
import threading

import grpc
import pytest
from schulki import retrieval
from schulki.retrieval.v1 import retrieval_service_pb2 as pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc

from tests.conftest import InProcessServer, free_port
from tests.retrieval_documents import (
    URL_PAGE,
    blank_pdf_bytes,
    encrypted_pdf_bytes,
    pdf_bytes,
    samples,
    zip_bomb,
)
from tests.retrieval_support import assert_serving, embeddings_server, ingest, retrieval_config, search
from tests.service_support import service_fixtures

MAX_UPLOAD = 1024 * 1024


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = URL_PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web_page():
    """A web page on this machine (loopback), standing for the school's intranet."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def embeddings_address():
    with embeddings_server() as server:
        yield server.address


def make_service(tmp_path_factory, embeddings_address, web_page, store_engine):
    config = retrieval_config(
        tmp_path_factory.mktemp("store"), embeddings_address, store_engine, max_upload_bytes=MAX_UPLOAD, allowed_url_hosts=[web_page]
    )
    return retrieval.build(config)


server, channel, stub = service_fixtures(
    make_service, pb_grpc.RetrievalServiceStub, "tmp_path_factory", "embeddings_address", "web_page", "store_engine"
)


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


def test_every_format_is_ingested_and_found_with_its_page_or_section(stub, tmp_path, web_page):
    stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="formate"))
    documents = {}
    for sample in samples(tmp_path):
        progress, document = ingest(stub, "formate", sample.file_name, sample.data)
        stages = [p.stage for p in progress]
        assert stages[0] == "receiving" and stages[-1] == "storing", stages
        assert stages.index("parsing") < stages.index("embedding") < stages.index("storing"), stages
        assert progress[-1].done == progress[-1].total == document.chunk_count > 0
        assert document.source == sample.file_name and document.size_bytes == len(sample.data)
        documents[sample.file_name] = (sample, document)
        if sample.file_name.endswith(".pdf"):
            pdf_progress = progress
    _, web = ingest(stub, "formate", url=f"http://{web_page}/mathe/pythagoras")
    assert web.format == "html" and web.source.startswith("http://127.0.0.1")
    assert documents["zellbiologie.pdf"][1].page_count == 3
    pdf_pages = [(p.done, p.total) for p in pdf_progress if p.stage == "parsing" and p.total]
    assert pdf_pages[-1] == (3, 3) and len(pdf_pages) >= 3, pdf_pages

    listed = stub.ListDocuments(pb.ListDocumentsRequest(workspace="formate")).documents
    assert {d.document_id for d in listed} == {d.document_id for _, d in documents.values()} | {web.document_id}

    for sample, document in documents.values():
        best = search(stub, "formate", sample.question)[0]
        assert best.document_id == document.document_id, (sample.question, best.source, best.text)
        assert all(word in best.text for word in sample.answer_words), best.text
        assert best.source == sample.file_name
        assert best.page == sample.page, (sample.file_name, best.page)
        assert sample.section in best.section, (sample.file_name, best.section)
    best = search(stub, "formate", "Was sagt der Satz des Pythagoras über das rechtwinklige Dreieck?")[0]
    assert best.document_id == web.document_id and "Kathetenquadrate" in best.text
    assert best.section == "Satz des Pythagoras"
    assert "Startseite" not in best.text  # the navigation is not part of the main text


def test_workspaces_are_created_listed_and_deleted_by_name(stub):
    stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="Kurs_Bio-10"))
    assert "Kurs_Bio-10" in stub.ListWorkspaces(pb.ListWorkspacesRequest()).workspaces
    code, details = code_of(lambda: stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="Kurs_Bio-10")))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "gibt es schon" in details
    for bad in ("", "a b", "ä", "../x", "x" * 65, "klasse/7"):
        code, details = code_of(lambda bad=bad: stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace=bad)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "Buchstaben" in details
    stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="x" * 64))
    _, document = ingest(stub, "Kurs_Bio-10", "notiz.txt", b"Enzyme beschleunigen chemische Reaktionen.")
    assert stub.DeleteWorkspace(pb.DeleteWorkspaceRequest(workspace="Kurs_Bio-10")).deleted_documents == 1
    assert "Kurs_Bio-10" not in stub.ListWorkspaces(pb.ListWorkspacesRequest()).workspaces
    for call in (
        lambda: stub.DeleteWorkspace(pb.DeleteWorkspaceRequest(workspace="Kurs_Bio-10")),
        lambda: stub.ListDocuments(pb.ListDocumentsRequest(workspace="Kurs_Bio-10")),
        lambda: stub.Search(pb.SearchRequest(workspace="Kurs_Bio-10", query="Enzyme")),
        lambda: stub.DeleteDocument(pb.DeleteDocumentRequest(workspace="Kurs_Bio-10", document_id=document.document_id)),
    ):
        code, details = code_of(call)
        assert code == grpc.StatusCode.NOT_FOUND and "Kurs_Bio-10" in details
    # A workspace made again under the same name starts empty.
    stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="Kurs_Bio-10"))
    assert not stub.ListDocuments(pb.ListDocumentsRequest(workspace="Kurs_Bio-10")).documents
    assert not search(stub, "Kurs_Bio-10", "Enzyme beschleunigen Reaktionen")


def test_a_search_never_returns_another_workspaces_chunks(stub):
    for workspace, text in (
        ("klasse5a", "Der Igel hält einen Winterschlaf im Laubhaufen."),
        ("klasse5b", "Der Igel frisst Insekten, Würmer und Schnecken."),
    ):
        stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace=workspace))
        ingest(stub, workspace, "igel.txt", text.encode())
    for workspace, word in (("klasse5a", "Winterschlaf"), ("klasse5b", "Schnecken")):
        own = {d.document_id for d in stub.ListDocuments(pb.ListDocumentsRequest(workspace=workspace)).documents}
        for weight in (0.0, 0.5, 1.0):
            hits = search(stub, workspace, "Was macht der Igel im Winter und was frisst er?", top_k=50, vector_weight=weight)
            assert hits and {h.document_id for h in hits} <= own
            assert all(word in h.text for h in hits)
    stub.DeleteWorkspace(pb.DeleteWorkspaceRequest(workspace="klasse5a"))
    assert [h.text for h in search(stub, "klasse5b", "Igel")] == ["Der Igel frisst Insekten, Würmer und Schnecken."]


def test_a_deleted_document_is_no_longer_found(stub, server):
    stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="loeschen"))
    _, keep = ingest(stub, "loeschen", "a.txt", b"Vulkane entstehen an den Grenzen tektonischer Platten.")
    _, gone = ingest(stub, "loeschen", "b.txt", "Vulkane auf Island liegen am Mittelatlantischen Rücken.".encode())
    assert stub.DeleteDocument(pb.DeleteDocumentRequest(workspace="loeschen", document_id=gone.document_id)).deleted_chunks == 1
    assert [h.document_id for h in search(stub, "loeschen", "Vulkane Island", top_k=10)] == [keep.document_id]
    assert [d.document_id for d in stub.ListDocuments(pb.ListDocumentsRequest(workspace="loeschen")).documents] == [keep.document_id]
    code, _ = code_of(lambda: stub.DeleteDocument(pb.DeleteDocumentRequest(workspace="loeschen", document_id=gone.document_id)))
    assert code == grpc.StatusCode.NOT_FOUND
    assert server.service.store.chunk_count("loeschen") == 1


def test_the_vector_weight_moves_between_keywords_and_meaning(stub):
    stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="gewichte"))
    texts = {
        # Only this one has the query's words, but it says nothing about them.
        "keyword.txt": "Im Glossar: Fotosynthese (siehe Seite 12).",
        # This one answers the question without any of its words.
        "meaning.txt": "Green leaves turn light, water and carbon dioxide into glucose and oxygen.",
    }
    ids = {name: ingest(stub, "gewichte", name, text.encode())[1].document_id for name, text in texts.items()}
    query = "Fotosynthese: how do plants make sugar from sunlight?"
    assert search(stub, "gewichte", query, top_k=1, vector_weight=0.0)[0].document_id == ids["keyword.txt"]
    assert search(stub, "gewichte", query, top_k=1, vector_weight=1.0)[0].document_id == ids["meaning.txt"]
    hits = search(stub, "gewichte", query, top_k=2, vector_weight=0.5)
    assert {h.document_id for h in hits} == set(ids.values())
    assert hits[0].score >= hits[1].score
    for fields, fragment in (
        ({"vector_weight": 1.5}, "vector_weight"),
        ({"vector_weight": -0.1}, "vector_weight"),
        ({"top_k": 101}, "top_k"),
        ({"top_k": -1}, "top_k"),
        ({"query": "  "}, "leer"),
    ):
        request = {"workspace": "gewichte", "query": "Fotosynthese", **fields}
        code, details = code_of(lambda request=request: stub.Search(pb.SearchRequest(**request)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and fragment in details


BAD_INPUTS = {
    "corrupt PDF": (
        "kaputt.pdf",
        b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage\n%%EOF",
        grpc.StatusCode.INVALID_ARGUMENT,
        "beschädigt",
        None,
    ),
    "password PDF": ("geheim.pdf", encrypted_pdf_bytes(), grpc.StatusCode.INVALID_ARGUMENT, "Passwort", None),
    "no-text PDF": ("scan.pdf", blank_pdf_bytes(), grpc.StatusCode.INVALID_ARGUMENT, "no text found, scanned?", None),
    "DOCX zip bomb": ("bombe.docx", zip_bomb("bombe.docx", "word/document.xml"), None, "zip bomb", None),
    "XLSX zip bomb": ("bombe.xlsx", zip_bomb("bombe.xlsx", "xl/workbook.xml"), None, "zip bomb", None),
    "PDF named DOCX": ("bericht.docx", pdf_bytes(["Ein PDF mit falscher Endung."]), grpc.StatusCode.INVALID_ARGUMENT, "Dateiendung", None),
    "unknown extension": ("programm.exe", b"MZ\x90\x00", grpc.StatusCode.INVALID_ARGUMENT, ".exe", None),
    "empty file": ("leer.txt", b"", grpc.StatusCode.INVALID_ARGUMENT, "leer", None),
    "over the size limit": ("gross.txt", b"Wort " * (MAX_UPLOAD // 5 + 1), grpc.StatusCode.RESOURCE_EXHAUSTED, "zu groß", None),
    "unknown workspace": ("notiz.txt", b"Hallo", grpc.StatusCode.NOT_FOUND, "gibt es nicht", "gibt-es-nicht"),
    "URL to this machine": ("", b"", grpc.StatusCode.PERMISSION_DENIED, "Schulnetz", None),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_input_gets_a_clear_error_and_leaves_nothing_behind(stub, server, web_page, case):
    file_name, data, expected, fragment, workspace = BAD_INPUTS[case]
    store = server.service.store
    if "schlecht" not in stub.ListWorkspaces(pb.ListWorkspacesRequest()).workspaces:
        stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="schlecht"))
        ingest(stub, "schlecht", "gut.txt", "Ein gutes Dokument über Kometen und Asteroiden.".encode())
    before = stub.ListDocuments(pb.ListDocumentsRequest(workspace="schlecht")).documents
    # "localhost" is loopback and not on the allowed list (only 127.0.0.1 on the page's port is).
    url = f"http://localhost:{web_page.rsplit(':', 1)[1]}/" if case.startswith("URL") else ""
    code, details = code_of(lambda: ingest(stub, workspace or "schlecht", file_name, data, url=url))
    if expected is None:  # a zip bomb may be refused as invalid or as too large
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    else:
        assert code == expected, details
    assert fragment in details
    assert stub.ListDocuments(pb.ListDocumentsRequest(workspace="schlecht")).documents == before
    assert store.chunk_count("schlecht") == sum(d.chunk_count for d in before)
    assert not list((server.service.ingestor.incoming).iterdir()), "an upload stayed on disk"
    assert search(stub, "schlecht", "Kometen")[0].source == "gut.txt"


def test_an_ingest_stream_must_start_with_its_source(stub):
    def stream():
        yield pb.IngestDocumentRequest(file_chunk=b"Hallo")

    code, details = code_of(lambda: list(stub.IngestDocument(stream())))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "erste Nachricht" in details


def test_without_the_embeddings_service_ingest_and_search_are_unavailable_and_bm25_still_works(tmp_path, store_engine):
    nobody = f"127.0.0.1:{free_port()}"
    config = retrieval_config(tmp_path / "store", nobody, store_engine, embeddings_timeout_s=5.0)
    with InProcessServer([retrieval.build(config)]) as running, running.channel() as channel:
        stub = pb_grpc.RetrievalServiceStub(channel)
        stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="offline"))
        code, details = code_of(lambda: ingest(stub, "offline", "notiz.txt", b"Die Erde dreht sich um die Sonne."))
        assert code == grpc.StatusCode.UNAVAILABLE and "Embeddings-Dienst" in details and nobody in details
        code, details = code_of(lambda: search(stub, "offline", "Sonne"))
        assert code == grpc.StatusCode.UNAVAILABLE and "Embeddings-Dienst" in details
        assert search(stub, "offline", "Sonne", vector_weight=0.0) == []
        assert not stub.ListDocuments(pb.ListDocumentsRequest(workspace="offline")).documents
        assert running.services[0].store.chunk_count("offline") == 0
        assert_serving(channel)


def test_the_service_token_goes_along_to_the_embeddings_service(tmp_path):
    from pydantic import SecretStr
    from schulki import embeddings
    from schulki.config import Config, RuntimeConfig

    embeddings_config = Config()
    embeddings_config.embeddings.threads = 2
    guarded = RuntimeConfig(service_token="schul-token")
    with InProcessServer([embeddings.build(embeddings_config)], runtime=guarded) as embedder:
        for token, works in (("schul-token", True), ("falsch", False)):
            config = retrieval_config(tmp_path / token, embedder.address)
            config.runtime.service_token = SecretStr(token)  # the retrieval service's own server stays open here
            with InProcessServer([retrieval.build(config)]) as running, running.channel() as channel:
                stub = pb_grpc.RetrievalServiceStub(channel)
                stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="token"))
                call = lambda stub=stub: ingest(stub, "token", "notiz.txt", "Bienen bestäuben Blüten.".encode())  # noqa: E731
                if works:
                    assert call()[1].chunk_count == 1
                else:
                    code, details = code_of(call)
                    assert code == grpc.StatusCode.UNAVAILABLE and "UNAUTHENTICATED" in details
