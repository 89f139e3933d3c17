"""Attacks on privacy over time: user data that outlives its retention period, or its account.

The real gateway with the real retrieval (on each store engine) and embeddings
services; the admin sets the periods in the Admin tab (through its API), which
applies them at once. Ages are made by dating files and manifest records back,
as time would.
"""

from __future__ import annotations

import os
import time

import grpc
import pytest
from gradio_client import handle_file
from schulki.retrieval.v1 import retrieval_service_pb2 as pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc

from tests import gateway_stack
from tests.gateway_stack import running_stack, stack_config
from tests.retrieval_support import ingest
from tests.security.data_support import padded_html

DAY = 86400


@pytest.fixture(scope="module")
def stack(tmp_path_factory, store_engine):
    data_dir = tmp_path_factory.mktemp("retention")
    config = stack_config(data_dir)
    store_engine.configure(config.retrieval)
    config.gateway.backup_dir = data_dir / "backups"
    config.gateway.backup_dir.mkdir()
    with running_stack(data_dir, services=("embeddings", "retrieval"), config=config) as running:
        yield running


def login(stack, name: str, role: str = "student"):
    created = stack.add_user(name, role)
    return created.account, gateway_stack.ui_client(stack.url, {"Authorization": f"Bearer {created.api_key}"})


def age(path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def date_back(stack, workspace: str, source: str, seconds: int) -> None:
    """Date a document's manifest record back, in whichever store the retrieval service runs on."""
    store = stack.servers["retrieval"].services[0].store
    with store._write_lock:
        for record in store._manifest(workspace):
            if record.source == source:
                store._unrecord(workspace, record.document_id)
                record.created_at -= seconds
                store._record(workspace, record)


def retrieval(stack):
    return grpc.insecure_channel(stack.servers["retrieval"].address)


def test_documents_transcripts_uploads_and_backups_past_their_period_are_deleted(stack, tmp_path):
    """Attack: a student's essay, transcript and refused upload, and a backup holding them, kept forever."""
    account, student = login(stack, "ret-mia")
    workspace = account.own_workspace
    for name in ("alt.html", "neu.html"):
        page = tmp_path / name
        page.write_bytes(padded_html(2048, f"Aufsatz {name} über die Elbe."))
        student.predict(workspace, handle_file(str(page)), api_name="/documents_upload")
    date_back(stack, workspace, "alt.html", 400 * DAY)
    folder = stack.gateway.user_files(account)
    for name, days in (("alt", 40), ("neu", 1)):
        (folder / name).mkdir()
        (folder / name / "transkript.txt").write_text(f"Transkript {name}")
        age(folder / name, days)
    uploads = stack.config.data_dir / "gateway" / "uploads" / "abc123"
    uploads.mkdir(parents=True)
    (uploads / "abgelehnt.txt").write_text("Ein abgelehnter Aufsatz")
    age(uploads / "abgelehnt.txt", 2 / 24)
    (uploads / "gerade.txt").write_text("Gerade hochgeladen")
    backups = stack.config.gateway.backup_dir
    for name, days in (("backup-alt", 40), ("backup-neu", 2)):
        (backups / name).mkdir()
        age(backups / name, days)

    _, admin = login(stack, "ret-admin", "admin")
    result = admin.predict(365, 30, 30, api_name="/admin_save_data_periods")
    assert result[0] == "Gespeichert." and list(result[1:]) == [365, 30, 30]

    assert [d.source for d in _documents(stack, workspace)] == ["neu.html"]
    assert sorted(p.name for p in folder.iterdir()) == ["neu"]
    assert not (uploads / "abgelehnt.txt").exists() and (uploads / "gerade.txt").exists()
    assert sorted(p.name for p in backups.iterdir()) == ["backup-neu"]
    assert list(admin.predict(api_name="/admin_data_periods")) == [365, 30, 30]


def _documents(stack, workspace: str):
    with retrieval(stack) as channel:
        return pb_grpc.RetrievalServiceStub(channel).ListDocuments(pb.ListDocumentsRequest(workspace=workspace), timeout=30).documents


def test_data_of_an_account_that_is_gone_is_removed_by_the_next_purge(stack):
    """Attack: a deleted student's workspace and transcripts coming back (a backup restored, a deletion while retrieval was down)."""
    gone, _ = login(stack, "ret-gone")
    login(stack, "ret-after")  # a newer account: ids above the deleted one's are in use
    stack.gateway.accounts.delete_user(gone.id)  # the account went, the rest stayed behind
    with retrieval(stack) as channel:
        stub = pb_grpc.RetrievalServiceStub(channel)
        stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace=gone.own_workspace), timeout=30)
        ingest(stub, gone.own_workspace, "tagebuch.txt", "Mein geheimes Tagebuch über die Klassenfahrt.".encode())
    leftover = stack.gateway.files_root / str(gone.id) / "x"
    leftover.mkdir(parents=True)
    (leftover / "transkript.txt").write_text("Transkript")

    _, admin = login(stack, "ret-admin2", "admin")
    admin.predict(365, 30, 30, api_name="/admin_save_data_periods")

    with retrieval(stack) as channel:
        names = pb_grpc.RetrievalServiceStub(channel).ListWorkspaces(pb.ListWorkspacesRequest(), timeout=30).workspaces
    assert gone.own_workspace not in names
    assert not (stack.gateway.files_root / str(gone.id)).exists()
    assert stack.gateway.accounts.by_name("ret-after") is not None
