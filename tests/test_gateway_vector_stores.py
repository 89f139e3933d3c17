"""/v1/files and /v1/vector_stores, driven by the official openai client, against the real gateway, retrieval (on each store engine) and embeddings."""

from __future__ import annotations

import asyncio
import http.server
import io
import json
import threading
import zipfile
from pathlib import Path

import grpc
import openai
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from schulki.gateway.accounts.users_cli import _with_services
from schulki.gateway.documents.store_ingests import THIS_PROCESS
from schulki.gateway.documents.workspaces import WorkspaceRefused
from schulki.gateway.privacy import retention
from schulki.gateway.privacy.user_data import delete_user_data, export_user_data
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as retrieval_grpc

from tests.gateway_stack import connect, running_stack, stack_config, write_pdf

PHOTOSYNTHESIS = (
    "Photosynthese: Pflanzen bilden in ihren Blättern mit Licht, Wasser und Kohlendioxid Traubenzucker und Sauerstoff. "
    "Das Chlorophyll in den Chloroplasten fängt dabei das Sonnenlicht ein."
)
VOLCANO_PAGES = [
    "Erdkunde, Klasse 7. Die Kontinente wandern langsam auf den Platten der Erdkruste.",
    "Vulkane entstehen, wo Magma aus dem Erdinneren durch Spalten in der Erdkruste an die Oberfläche steigt. "
    "Beim Ausbruch fließt Lava aus dem Krater, und Asche wird in die Luft geschleudert.",
]
WEB_PAGE = (
    "<html><head><title>Bienen</title></head><body><h1>Die Honigbiene</h1>"
    "<p>Honigbienen bestäuben Obstbäume und sammeln Nektar, aus dem sie im Bienenstock Honig machen.</p></body></html>"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, store_engine):
    folder = tmp_path_factory.mktemp("vector-stores")
    config = stack_config(folder)
    store_engine.configure(config.retrieval)
    config.gateway.requests_per_minute = {"student": 1000, "teacher": 1000, "admin": 1000}
    config.gateway.max_upload_bytes = 8 * 1024 * 1024
    config.gateway.vector_stores_per_user = 3
    config.gateway.api_files_mb_per_user = 2
    config.gateway.api_ingests_per_user = 2
    config.retrieval.allowed_url_hosts = []  # each test's web page on this machine adds its 127.0.0.1:PORT (allow_page)
    with running_stack(folder, services=("embeddings", "retrieval"), config=config) as running:
        yield running


def allow_page(stack, server: http.server.ThreadingHTTPServer) -> None:
    """Let URL ingest reach server (it stands for the school's intranet): the retrieval service reads the list at every ingest."""
    stack.config.retrieval.allowed_url_hosts.append(f"127.0.0.1:{server.server_address[1]}")


def client_for(stack, account) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=account.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def anna(stack):
    return stack.add_user("vs-anna", "student", ("7a",))


@pytest.fixture(scope="module")
def ben(stack):
    return stack.add_user("vs-ben", "student", ("7a",))


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("documents")
    txt = folder / "photosynthese.txt"
    txt.write_text(PHOTOSYNTHESIS, encoding="utf-8")
    corrupt = folder / "kaputt.pdf"
    corrupt.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\nthis is not a PDF any more" + bytes(range(256)))
    return {"txt": txt, "pdf": write_pdf(folder / "vulkane.pdf", VOLCANO_PAGES), "corrupt": corrupt}


def upload(client: openai.OpenAI, path: Path) -> str:
    with open(path, "rb") as handle:
        return client.files.create(file=handle, purpose="assistants").id


@pytest.fixture(scope="module")
def annas_store(stack, anna, documents):
    """Anna's store with the text file and the PDF in it, both ingested."""
    client = client_for(stack, anna)
    store = client.vector_stores.create(name="Naturkunde")
    for kind in ("txt", "pdf"):
        added = client.vector_stores.files.create_and_poll(file_id=upload(client, documents[kind]), vector_store_id=store.id)
        assert added.status == "completed", added.last_error
    return store


def test_a_store_with_a_text_file_and_a_pdf_finds_the_right_file(stack, anna, annas_store):
    client = client_for(stack, anna)
    store = client.vector_stores.retrieve(annas_store.id)
    assert store.name == "Naturkunde" and store.status == "completed"
    assert store.file_counts.completed == 2 and store.file_counts.total == 2 and store.usage_bytes > 0

    results = client.vector_stores.search(annas_store.id, query="Wie entsteht ein Vulkan und was ist Lava?", max_num_results=3)
    best = results.data[0]
    assert best.filename == "vulkane.pdf"
    assert best.attributes["page"] == 2
    assert "Magma" in best.content[0].text and best.content[0].type == "text"
    files = {f.id: f for f in client.vector_stores.files.list(annas_store.id)}
    assert best.file_id in files and files[best.file_id].status == "completed"

    results = client.vector_stores.search(annas_store.id, query="Chlorophyll Blätter Sonnenlicht", max_num_results=1)
    assert [r.filename for r in results.data] == ["photosynthese.txt"]


def test_the_store_is_listed_beside_the_private_and_the_class_workspace(stack, anna, annas_store):
    listed = {s.id: s for s in client_for(stack, anna).vector_stores.list()}
    assert annas_store.id in listed
    assert f"vs_u-{stack.gateway.accounts.by_name('vs-anna').id}" in listed
    assert listed["vs_k-7a"].metadata == {"kind": "class", "writable": "false"}


def test_another_students_store_is_invisible_and_unchangeable(stack, anna, ben, annas_store, documents):
    intruder = client_for(stack, ben)
    assert annas_store.id not in {s.id for s in intruder.vector_stores.list()}
    private = f"vs_u-{stack.gateway.accounts.by_name('vs-anna').id}"
    for store_id in (annas_store.id, private):
        with pytest.raises(openai.NotFoundError):
            intruder.vector_stores.retrieve(store_id)
        with pytest.raises(openai.NotFoundError):
            intruder.vector_stores.search(store_id, query="Vulkan")
        with pytest.raises(openai.NotFoundError):
            intruder.vector_stores.files.list(store_id)
        with pytest.raises(openai.NotFoundError):
            intruder.vector_stores.files.create(vector_store_id=store_id, file_id=upload(intruder, documents["txt"]))
        with pytest.raises(openai.NotFoundError):
            intruder.vector_stores.delete(store_id)
    # a store that does not exist answers the same: nobody learns which ones exist
    with pytest.raises(openai.NotFoundError) as missing:
        intruder.vector_stores.retrieve("vs_u-999999-00000000")
    with pytest.raises(openai.NotFoundError) as foreign:
        intruder.vector_stores.retrieve(annas_store.id)
    assert missing.value.body["code"] == foreign.value.body["code"] == "vector_store_not_found"
    annas_files = client_for(stack, anna).vector_stores.files.list(annas_store.id).data
    for file in annas_files:
        with pytest.raises(openai.NotFoundError):
            intruder.vector_stores.files.delete(file.id, vector_store_id=annas_store.id)
        with pytest.raises(openai.NotFoundError):  # Anna's upload is unknown to Ben
            intruder.files.retrieve(file.id)
        with pytest.raises(openai.NotFoundError):  # so he cannot take it into a store of his own
            intruder.vector_stores.files.create(vector_store_id=f"vs_{ben.account.own_workspace}", file_id=file.id)
    assert client_for(stack, anna).vector_stores.files.list(annas_store.id).data == annas_files


def test_a_student_reads_the_class_store_and_only_a_teacher_of_the_class_writes_it(stack, anna, documents):
    teacher = stack.add_user("vs-teacher", "teacher", ("7a",))
    outsider = stack.add_user("vs-teacher-8b", "teacher", ("8b",))
    added = client_for(stack, teacher).vector_stores.files.create_and_poll(
        file_id=upload(client_for(stack, teacher), documents["txt"]), vector_store_id="vs_k-7a"
    )
    assert added.status == "completed", added.last_error
    student = client_for(stack, anna)
    assert student.vector_stores.search("vs_k-7a", query="Chlorophyll").data[0].filename == "photosynthese.txt"
    with pytest.raises(openai.PermissionDeniedError):
        student.vector_stores.files.create(vector_store_id="vs_k-7a", file_id=upload(student, documents["txt"]))
    with pytest.raises(openai.PermissionDeniedError):
        student.vector_stores.files.delete(added.id, vector_store_id="vs_k-7a")
    with pytest.raises(openai.NotFoundError):
        client_for(stack, outsider).vector_stores.search("vs_k-7a", query="Chlorophyll")


def test_deleting_files_and_stores(stack, anna, documents):
    client = client_for(stack, anna)
    store = client.vector_stores.create(name="Wegwerf")
    added = client.vector_stores.files.create_and_poll(file_id=upload(client, documents["txt"]), vector_store_id=store.id)
    assert client.vector_stores.search(store.id, query="Chlorophyll").data
    deleted = client.vector_stores.files.delete(added.id, vector_store_id=store.id)
    assert deleted.deleted
    assert client.vector_stores.files.list(store.id).data == []
    assert client.vector_stores.search(store.id, query="Chlorophyll").data == []
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(added.id, vector_store_id=store.id)

    assert client.vector_stores.delete(store.id).deleted
    assert store.id not in {s.id for s in client.vector_stores.list()}
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)
    with pytest.raises(openai.BadRequestError):  # the private workspace stays: only its files can be deleted
        client.vector_stores.delete(f"vs_u-{stack.gateway.accounts.by_name('vs-anna').id}")


def test_uploads_of_one_user_are_invisible_to_others(stack, anna, ben, documents):
    own = client_for(stack, anna)
    file_id = upload(own, documents["txt"])
    assert own.files.retrieve(file_id).filename == "photosynthese.txt"
    assert file_id in {f.id for f in own.files.list()}
    other = client_for(stack, ben)
    assert file_id not in {f.id for f in other.files.list()}
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(file_id)
    with pytest.raises(openai.NotFoundError):
        other.files.delete(file_id)
    assert own.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        own.files.retrieve(file_id)


def test_a_corrupt_pdf_fails_with_a_clear_last_error_and_the_service_keeps_serving(stack, anna, documents):
    client = client_for(stack, anna)
    store = client.vector_stores.create(name="Kaputt")
    broken = client.vector_stores.files.create_and_poll(file_id=upload(client, documents["corrupt"]), vector_store_id=store.id)
    assert broken.status == "failed"
    assert broken.last_error is not None and broken.last_error.code == "invalid_file"
    assert "PDF" in broken.last_error.message
    assert client.vector_stores.retrieve(store.id).file_counts.failed == 1
    # the service goes on: a good file still goes into the same store and is found
    good = client.vector_stores.files.create_and_poll(file_id=upload(client, documents["pdf"]), vector_store_id=store.id)
    assert good.status == "completed", good.last_error
    assert client.vector_stores.search(store.id, query="Vulkan Lava").data[0].filename == "vulkane.pdf"
    client.vector_stores.delete(store.id)


def test_unsupported_options_and_bad_requests_are_refused_in_openais_shape(stack, anna, annas_store):
    client = client_for(stack, anna)
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.create(name="x", expires_after={"anchor": "last_active_at", "days": 1})
    assert caught.value.body["param"] == "expires_after"
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.search(annas_store.id, query="Vulkan", filters={"type": "eq", "key": "page", "value": 2})
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.search(annas_store.id, query="  ")
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.search(annas_store.id, query="Vulkan", max_num_results=500)
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.create(vector_store_id=annas_store.id, file_id="file-000000000000000000000000")
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.txt", b"text"), purpose="fine-tune")


def test_a_user_may_create_only_so_many_stores(stack):
    client = client_for(stack, stack.add_user("vs-many", "student"))
    for number in range(stack.config.gateway.vector_stores_per_user):
        client.vector_stores.create(name=f"Nummer {number}")
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.create(name="eine zu viel")
    assert caught.value.body["code"] == "too_many_vector_stores"


def _raw_upload(url: str, api_key: str, headers: dict[str, str]) -> int:
    sock = connect(url)
    with sock:
        lines = [
            "POST /v1/files HTTP/1.1",
            "Host: localhost",
            f"Authorization: Bearer {api_key}",
            "Content-Type: multipart/form-data; boundary=xyz",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(sock.recv(4096).split(b" ", 2)[1])


def test_a_2_gb_upload_is_refused_with_413_before_it_is_read(stack, anna):
    uploads = Path(stack.config.data_dir) / "gateway" / "uploads"
    before = sorted(uploads.rglob("*"))
    # the headers promise 2 GiB and no byte of the body follows: the answer comes at once, and nothing was stored
    assert _raw_upload(stack.url, anna.api_key, {"Content-Length": str(2 * 1024**3)}) == 413
    assert sorted(uploads.rglob("*")) == before


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = WEB_PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_web_page_goes_into_a_store_by_url(stack, anna, annas_store):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    allow_page(stack, server)
    try:
        client = client_for(stack, anna)
        page = f"http://127.0.0.1:{server.server_address[1]}/bienen.html"
        added = client.post(f"/vector_stores/{annas_store.id}/files", body={"url": page}, cast_to=dict)
        assert added["status"] == "in_progress"
        done = client.vector_stores.files.poll(added["id"], vector_store_id=annas_store.id, max_wait_seconds=120)
        assert done.status == "completed", done.last_error
        assert client.vector_stores.search(annas_store.id, query="Wer macht Honig?").data[0].filename == page
    finally:
        server.shutdown()


def test_the_dokumente_tab_and_the_api_ask_the_same_rule(stack):
    gateway = stack.gateway
    owner = gateway.accounts.by_name(stack.add_user("vs-rule-owner", "student", ("9c",)).account.name)
    other = gateway.accounts.by_name(stack.add_user("vs-rule-other", "student", ("9c",)).account.name)
    store = gateway.stores.create(owner.id, "Referat")
    assert [w.name for w in gateway.workspaces(owner)] == [owner.own_workspace, store.workspace, "k-9c"]
    assert gateway.workspace_access(owner, store.workspace, write=True).label == "Referat"
    with pytest.raises(WorkspaceRefused) as refused:
        gateway.workspace_access(other, store.workspace)
    assert not refused.value.read_only
    with pytest.raises(WorkspaceRefused) as refused:
        gateway.workspace_access(other, "k-9c", write=True)
    assert refused.value.read_only
    assert gateway.workspace_access(other, "k-9c").name == "k-9c"


def _workspaces(stack) -> list[str]:
    with grpc.insecure_channel(stack.servers["retrieval"].address) as channel:
        return list(retrieval_grpc.RetrievalServiceStub(channel).ListWorkspaces(retrieval_pb.ListWorkspacesRequest()).workspaces)


def test_a_users_export_has_the_stores_they_made_and_deleting_them_removes_the_stores_and_uploads(stack, documents):
    leaver = stack.add_user("vs-leaver", "student")
    client = client_for(stack, leaver)
    store = client.vector_stores.create(name="Weg damit")
    client.vector_stores.files.create_and_poll(file_id=upload(client, documents["txt"]), vector_store_id=store.id)
    spare = upload(client, documents["txt"])
    workspace = store.id.removeprefix("vs_")
    assert workspace in _workspaces(stack)
    exported = asyncio.run(_with_services(stack.config, lambda gateway: export_user_data(gateway, leaver.account)))
    with zipfile.ZipFile(io.BytesIO(exported)) as archive:
        listed = json.loads(archive.read("dokumente.json"))
        assert [(d["workspace"], d["source"]) for d in listed] == [("Weg damit", "photosynthese.txt")]
        assert "Chlorophyll" in archive.read(listed[0]["file"]).decode()
    asyncio.run(_with_services(stack.config, lambda gateway: delete_user_data(gateway, leaver.account)))
    assert workspace not in _workspaces(stack)
    assert stack.gateway.stores.owned(leaver.account.id) == []
    assert not list((Path(stack.config.data_dir) / "gateway" / "uploads").rglob(spare))


def test_the_purge_removes_a_store_whose_account_is_gone(stack):
    gone = stack.add_user("vs-gone", "student").account
    stack.add_user("vs-later", "student")  # ids are never reused: an id below a living one belongs to a deleted account
    orphan = f"u-{gone.id}-0badc0de"
    with grpc.insecure_channel(stack.servers["retrieval"].address) as channel:
        retrieval_grpc.RetrievalServiceStub(channel).CreateWorkspace(retrieval_pb.CreateWorkspaceRequest(workspace=orphan))
    stack.gateway.accounts.delete_user(gone.id)
    counts = asyncio.run(_with_services(stack.config, retention.purge_expired))
    assert counts["workspaces"] >= 1
    assert orphan not in _workspaces(stack)


def test_a_store_made_through_the_api_shows_in_its_owners_dokumente_tab_only(stack, anna, ben, annas_store):
    owner = Client(stack.url, headers={"Authorization": f"Bearer {anna.api_key}"}, verbose=False)
    choices = owner.predict(api_name="/documents_workspaces")["choices"]
    workspace = annas_store.id.removeprefix("vs_")
    assert ["Naturkunde", workspace] in [list(choice) for choice in choices]
    listed = owner.predict(workspace, api_name="/documents_list")[0]["data"]
    assert {"photosynthese.txt", "vulkane.pdf"} <= {row[0] for row in listed}
    other = Client(stack.url, headers={"Authorization": f"Bearer {ben.api_key}"}, verbose=False)
    assert workspace not in str(other.predict(api_name="/documents_workspaces"))
    with pytest.raises(AppError, match="gibt es für dich nicht"):
        other.predict(workspace, api_name="/documents_list")


def test_an_ingest_cut_off_by_a_restart_reports_failed_and_runs_again_when_added_again(stack, anna, documents):
    client = client_for(stack, anna)
    store = client.vector_stores.create(name="Neustart")
    workspace = store.id.removeprefix("vs_")
    # as a gateway that stopped mid-ingest leaves it: recorded as running by this process, but no ingest runs
    cut = upload(client, documents["txt"])
    stack.gateway.stores.add_file(workspace, cut, "photosynthese.txt", THIS_PROCESS)
    found = client.vector_stores.files.retrieve(cut, vector_store_id=store.id)
    assert found.status == "failed" and found.last_error.code == "server_error" and "interrupted" in found.last_error.message
    again = client.vector_stores.files.create_and_poll(file_id=cut, vector_store_id=store.id)
    assert again.status == "completed", again.last_error
    # an ingest another gateway (sharing the database) runs stays in_progress here
    elsewhere = upload(client, documents["pdf"])
    stack.gateway.stores.add_file(workspace, elsewhere, "vulkane.pdf", "another-gateway")
    assert client.vector_stores.files.retrieve(elsewhere, vector_store_id=store.id).status == "in_progress"
    client.vector_stores.delete(store.id)


def test_the_uploads_one_user_keeps_are_limited_in_size(stack):
    client = client_for(stack, stack.add_user("vs-hoarder", "student"))
    first = client.files.create(file=("eins.txt", b"a" * (1536 * 1024)), purpose="assistants")
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("zwei.txt", b"b" * (1536 * 1024)), purpose="assistants")
    assert caught.value.status_code == 413 and caught.value.body["code"] == "upload_quota_exceeded"
    assert [f.id for f in client.files.list()] == [first.id]
    client.files.delete(first.id)
    assert client.files.create(file=("zwei.txt", b"b" * (1536 * 1024)), purpose="assistants").bytes == 1536 * 1024


def test_one_user_has_only_so_many_files_processed_at_once(stack):
    release = threading.Event()

    class SlowPage(_Page):
        def do_GET(self) -> None:
            release.wait(60)  # the ingest stays running until the test lets the page come
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    allow_page(stack, server)
    try:
        busy = stack.add_user("vs-busy", "student")
        client = client_for(stack, busy)
        store = f"vs_{busy.account.own_workspace}"
        base = f"http://127.0.0.1:{server.server_address[1]}"
        running = [client.post(f"/vector_stores/{store}/files", body={"url": f"{base}/{n}.html"}, cast_to=dict) for n in range(2)]
        with pytest.raises(openai.RateLimitError) as caught:
            client.post(f"/vector_stores/{store}/files", body={"url": f"{base}/2.html"}, cast_to=dict)
        assert caught.value.body["code"] == "too_many_ingests" and caught.value.response.headers["retry-after"]
        release.set()
        for added in running:
            done = client.vector_stores.files.poll(added["id"], vector_store_id=store, max_wait_seconds=120)
            assert done.status == "completed", done.last_error
        later = client.post(f"/vector_stores/{store}/files", body={"url": f"{base}/2.html"}, cast_to=dict)
        assert client.vector_stores.files.poll(later["id"], vector_store_id=store, max_wait_seconds=120).status == "completed"
    finally:
        release.set()
        server.shutdown()
