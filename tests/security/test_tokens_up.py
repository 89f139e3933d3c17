"""``schulki up`` guards its services with a service token, as the roll-out does: another user of the machine cannot call them.

Attacks finding 7: on a machine running ``schulki up`` any local user could
call the retrieval port on loopback directly (``ListDocuments``,
``ExportDocument``) and read every student's documents, because the services
started without a token. The stack here is a real ``schulki up`` (embeddings,
retrieval and the gateway); a student stores a document through the gateway,
and the attacker calls the ports over gRPC the way any local program can.
"""

from __future__ import annotations

import re
import subprocess
import sys

import grpc
import openai
import pytest
from gradio_client import Client
from schulki.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from schulki.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from schulki.retrieval.v1 import retrieval_service_pb2 as pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
from schulki.runtime.tokens import token_problem

from tests.up_stack import UpProcess

SECRET_TEXT = "Mein Tagebuch: Am Dienstag habe ich mich mit Lea über die Klassenfahrt gestritten."


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    data = tmp_path_factory.mktemp("up")
    with UpProcess(data, services=("embeddings", "retrieval"), env={"SCHULKI_EMBEDDINGS__THREADS": "1"}) as running:
        yield running.wait_until_running()


@pytest.fixture(scope="module")
def student_document(up, tmp_path_factory):
    """A student's private document, stored through the gateway's API: (her API key, her workspace)."""
    added = subprocess.run(
        [sys.executable, "-m", "schulki.cli", "user", "add", "tok-lea", "--role", "student"],
        env=up.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    key = re.search(r"API-Key: (\S+)", added.stdout).group(1)
    client = openai.OpenAI(base_url=up.url + "/v1", api_key=key, max_retries=0, timeout=300)
    private = next(s for s in client.vector_stores.list() if s.metadata["kind"] == "private")
    diary = tmp_path_factory.mktemp("files") / "tagebuch.txt"
    diary.write_text(SECRET_TEXT, encoding="utf-8")
    with diary.open("rb") as handle:
        file_id = client.files.create(file=handle, purpose="assistants").id
    stored = client.vector_stores.files.create_and_poll(file_id=file_id, vector_store_id=private.id)
    assert stored.status == "completed", (stored.last_error, "".join(up.output)[-3000:])
    workspace = private.id.removeprefix("vs_")
    return key, workspace


def token_of(up) -> str:
    return (up.data_dir / "runtime" / "service_token").read_text().strip()


def call_retrieval(up, workspace: str, token: str | None):
    """ListDocuments, then ExportDocument of the first document, as any program on the machine can send them."""
    metadata = [("authorization", f"Bearer {token}")] if token is not None else []
    with grpc.insecure_channel(up.address("retrieval")) as channel:
        stub = pb_grpc.RetrievalServiceStub(channel)
        listed = stub.ListDocuments(pb.ListDocumentsRequest(workspace=workspace), metadata=metadata, timeout=30)
        exported = stub.ExportDocument(
            pb.ExportDocumentRequest(workspace=workspace, document_id=listed.documents[0].document_id), metadata=metadata, timeout=30
        )
    return listed, exported


def test_schulki_up_makes_a_strong_private_token_once(up):
    path = up.data_dir / "runtime" / "service_token"
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert token_problem(token_of(up)) is None and len(token_of(up)) == 64


@pytest.mark.parametrize("token", [None, "", "0" * 64, "wrong-but-long-enough-3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c1e"])
def test_the_retrieval_port_refuses_a_caller_without_the_token(up, student_document, token):
    _, workspace = student_document
    with pytest.raises(grpc.RpcError) as refused:
        call_retrieval(up, workspace, token)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value.details()
    # ExportDocument alone too, with an id a reader might guess or have seen
    with grpc.insecure_channel(up.address("retrieval")) as channel, pytest.raises(grpc.RpcError) as export_refused:
        pb_grpc.RetrievalServiceStub(channel).ExportDocument(pb.ExportDocumentRequest(workspace=workspace, document_id="1"), timeout=30)
    assert export_refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_embeddings_port_refuses_a_caller_without_the_token(up):
    with grpc.insecure_channel(up.address("embeddings")) as channel, pytest.raises(grpc.RpcError) as refused:
        embeddings_grpc.EmbeddingsServiceStub(channel).Embed(embeddings_pb.EmbedRequest(texts=["Hallo"]), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_with_the_token_the_retrieval_port_answers(up, student_document):
    """Shows the refusals above are the token's doing: the same calls with it read the document."""
    _, workspace = student_document
    listed, exported = call_retrieval(up, workspace, token_of(up))
    assert [d.source for d in listed.documents] == ["tagebuch.txt"]
    assert SECRET_TEXT in " ".join(chunk.text for chunk in exported.chunks)


def test_the_page_still_lists_the_students_documents(up, student_document):
    """The gateway, started by the same ``schulki up``, sends the token: the Dokumente tab lists what the student stored."""
    key, workspace = student_document
    page = Client(up.url, headers={"Authorization": f"Bearer {key}"}, verbose=False)
    table = page.predict(workspace, api_name="/documents_list")[0]
    assert [row[0] for row in table["data"]] == ["tagebuch.txt"]


def test_the_admins_export_command_on_the_same_machine_finds_the_token(up, student_document, tmp_path):
    """``schulki user export`` (the right of access) calls the services itself: it reads the token the stack made."""
    import zipfile

    target = tmp_path / "lea.zip"
    done = subprocess.run(
        [sys.executable, "-m", "schulki.cli", "user", "export", "tok-lea", "-o", str(target)],
        env=up.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(target) as archive:
        assert any(SECRET_TEXT in archive.read(name).decode("utf-8", "replace") for name in archive.namelist())
