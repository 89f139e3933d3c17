"""Attacks on storage: a student filling the disk through their private workspace, alone or with parallel uploads.

The retrieval service (its own process, on each store engine, with the real
embeddings service) enforces a quota per workspace at ingest; the Dokumente tab shows
"x MB von y MB belegt" through the real gateway.
"""

from __future__ import annotations

import threading

import grpc
import pytest
from gradio_client import handle_file
from schulki.retrieval.v1 import retrieval_service_pb2 as pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc

from tests import gateway_stack
from tests.gateway_stack import running_stack, stack_config
from tests.retrieval_support import ingest, requests
from tests.security.data_support import padded_html, retrieval_process

KIB = 1024
QUOTA_MB = 1


@pytest.fixture(scope="module")
def stub(tmp_path_factory, embeddings_address, store_engine):
    with (
        retrieval_process(
            tmp_path_factory.mktemp("quota"),
            embeddings_address,
            engine_environment=store_engine.environment(),
            workspace_quota_mb=f'{{"u-": {QUOTA_MB}, "k-": 2}}',
        ) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        yield pb_grpc.RetrievalServiceStub(channel)


def upload(stub, workspace: str, name: str, size: int) -> pb.Document:
    return ingest(stub, workspace, name, padded_html(size, "Die Elbe fließt durch Dresden und Hamburg."))[1]


def test_a_student_cannot_store_more_than_the_quota_of_their_private_workspace(stub):
    """Attack: uploading file after file into one's private workspace until the disk is full."""
    stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="u-7"), timeout=30)
    upload(stub, "u-7", "eins.html", 600 * KIB)
    with pytest.raises(grpc.RpcError) as caught:
        upload(stub, "u-7", "zwei.html", 600 * KIB)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Speicherplatz" in caught.value.details() and "0,6 von 1,0 MB belegt" in caught.value.details()
    listing = stub.ListDocuments(pb.ListDocumentsRequest(workspace="u-7"), timeout=30)
    assert [d.source for d in listing.documents] == ["eins.html"]
    assert listing.quota_bytes == QUOTA_MB * 1024 * KIB and listing.used_bytes == listing.documents[0].size_bytes
    upload(stub, "u-7", "klein.html", 300 * KIB)  # what still fits is accepted


def test_parallel_uploads_cannot_squeeze_past_the_quota_together(stub):
    """Attack: two uploads at once, each fitting alone, both checked before either is stored."""
    stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="u-8"), timeout=30)
    results: list[object] = []

    def one(name: str) -> None:
        try:
            results.append(upload(stub, "u-8", name, 700 * KIB))
        except grpc.RpcError as error:
            results.append(error)

    threads = [threading.Thread(target=one, args=(f"teil{i}.html",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    errors = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(results) == 2 and len(errors) == 1
    assert errors[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(stub.ListDocuments(pb.ListDocumentsRequest(workspace="u-8"), timeout=30).documents) == 1


def test_an_upload_into_a_full_workspace_is_refused_without_storing_it(stub):
    """Attack: streaming 50 MB into a full workspace, to make the service write it to disk while receiving."""
    stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="u-9"), timeout=30)
    upload(stub, "u-9", "voll.html", 1024 * KIB)  # exactly the quota: accepted, and the workspace is full
    sent = 0

    def endless():
        nonlocal sent
        for message in requests("u-9", "mehr.html", padded_html(50 * 1024 * KIB, "x"), piece=256 * KIB):
            sent += 1
            yield message

    with pytest.raises(grpc.RpcError) as caught:
        for _ in stub.IngestDocument(endless(), timeout=60):
            pass
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert sent < 200  # refused long before the 50 MB were sent


def test_the_documents_tab_shows_how_much_of_the_quota_is_used(tmp_path, store_engine):
    """The student sees "x MB von y MB belegt" under their documents, through the real gateway."""
    config = stack_config(tmp_path)
    store_engine.configure(config.retrieval)
    config.retrieval.workspace_quota_mb = {"u-": 2}
    with running_stack(tmp_path, services=("embeddings", "retrieval"), config=config) as stack:
        created = stack.add_user("quota-lena")
        client = gateway_stack.ui_client(stack.url, {"Authorization": f"Bearer {created.api_key}"})
        workspace = created.account.own_workspace
        page = tmp_path / "elbe.html"
        page.write_bytes(padded_html(512 * KIB, "Die Elbe fließt durch Dresden."))
        client.predict(workspace, handle_file(str(page)), api_name="/documents_upload")
        assert client.predict(workspace, api_name="/documents_storage") == "Speicherplatz: 0,5 MB von 2,0 MB belegt"
