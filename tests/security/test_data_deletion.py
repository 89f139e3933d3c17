"""Attacks on a user's rights over their data: deletion that leaves traces, and no way to get a copy.

The real gateway with the real retrieval (on each store engine) and embeddings services; the admin
deletes and exports through the Admin tab's API and ``schulki user export``
runs as the admin would run it, in its own process.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile

import grpc
import httpx
import pytest
from gradio_client import handle_file
from schulki.retrieval.v1 import retrieval_service_pb2 as pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc

from tests import gateway_stack
from tests.gateway_stack import running_stack, stack_config
from tests.security.data_support import padded_html


@pytest.fixture(scope="module")
def stack(tmp_path_factory, store_engine):
    data_dir = tmp_path_factory.mktemp("deletion")
    config = stack_config(data_dir)
    store_engine.configure(config.retrieval)
    with running_stack(data_dir, services=("embeddings", "retrieval"), config=config) as running:
        yield running


def login(stack, name: str, role: str = "student"):
    created = stack.add_user(name, role)
    client = gateway_stack.ui_client(stack.url, {"Authorization": f"Bearer {created.api_key}"})
    return created, client


def with_data(stack, name: str, tmp_path):
    """A student with a document, a stored chat and a transcript."""
    created, client = login(stack, name)
    account = created.account
    page = tmp_path / f"{name}.html"
    page.write_bytes(padded_html(4096, "Mein Referat: Die Photosynthese findet in den Chloroplasten statt."))
    client.predict(account.own_workspace, handle_file(str(page)), api_name="/documents_upload")
    stack.gateway.accounts.save_chat(
        account.id, None, [{"role": "user", "content": "Wie funktioniert Photosynthese?"}, {"role": "assistant", "content": "Mit Licht."}]
    )
    transcript = stack.gateway.user_files(account) / "aufnahme1"
    transcript.mkdir()
    (transcript / "transkript.txt").write_text("[00:00] Heute sprechen wir über Vulkane.", encoding="utf-8")
    return created, client


def workspaces(stack) -> list[str]:
    with grpc.insecure_channel(stack.servers["retrieval"].address) as channel:
        return list(pb_grpc.RetrievalServiceStub(channel).ListWorkspaces(pb.ListWorkspacesRequest(), timeout=30).workspaces)


def check_export(data: bytes, name: str) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        account = json.loads(archive.read("konto.json"))
        chats = json.loads(archive.read("chats.json"))
        documents = json.loads(archive.read("dokumente.json"))
        assert account["name"] == name and account["role"] == "student"
        assert chats[0]["messages"][0]["content"] == "Wie funktioniert Photosynthese?"
        assert documents[0]["source"] == f"{name}.html"
        assert "Chloroplasten" in archive.read(documents[0]["file"]).decode()
        assert "Vulkane" in archive.read("transkripte/aufnahme1/transkript.txt").decode()
        assert "LIESMICH.txt" in names
        assert not any("hash" in json.dumps(account).lower() and k in account for k in ("password_hash", "api_key_hash"))


def test_schulki_user_export_gives_a_student_all_their_data(stack, tmp_path):
    """Attack on the right of access: a student asks what schulki keeps about them; the admin runs `schulki user export`."""
    created, _ = with_data(stack, "del-export", tmp_path)
    target = tmp_path / "export.zip"
    env = {
        **os.environ,
        "SCHULKI_DATA_DIR": str(stack.config.data_dir),
        "SCHULKI_GATEWAY__RETRIEVAL_ADDRESSES": json.dumps(stack.config.gateway.retrieval_addresses),
        "SCHULKI_GATEWAY__EMBEDDINGS_ADDRESSES": json.dumps(stack.config.gateway.embeddings_addresses),
        "SCHULKI_GATEWAY__INFERENCE_ADDRESSES": json.dumps(stack.config.gateway.inference_addresses),
        "SCHULKI_GATEWAY__TRANSCRIPTION_ADDRESSES": json.dumps(stack.config.gateway.transcription_addresses),
    }
    done = subprocess.run(
        [sys.executable, "-m", "schulki.cli", "user", "export", "del-export", "-o", str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    check_export(target.read_bytes(), "del-export")
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    # and `schulki user delete` takes all of it away again
    done = subprocess.run(
        [sys.executable, "-m", "schulki.cli", "user", "delete", "del-export"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert created.account.own_workspace not in workspaces(stack)
    assert stack.gateway.accounts.by_name("del-export") is None
    assert not (stack.gateway.files_root / str(created.account.id)).exists()


def test_the_admin_tab_exports_a_users_data_and_students_cannot(stack, tmp_path):
    """Attack: a student calling the export handler for another student; the admin's export works."""
    with_data(stack, "del-admin-export", tmp_path)
    _, student = login(stack, "del-curious")
    with pytest.raises(Exception, match="Nur für Admins"):
        student.predict("del-admin-export", api_name="/admin_export_user")
    _, admin = login(stack, "del-admin", "admin")
    message, shown = admin.predict("del-admin-export", api_name="/admin_export_user")
    assert "del-admin-export" in message and shown["visible"] is True
    with open(shown["value"], "rb") as handle:  # gradio_client downloaded the file the button offers
        check_export(handle.read(), "del-admin-export")


def test_deleting_a_user_removes_everything_of_theirs_everywhere(stack, tmp_path):
    """Attack: traces of a deleted student (documents, vectors, chats, transcripts, key, sessions) left anywhere."""
    created, _ = with_data(stack, "del-gone", tmp_path)
    account = created.account
    session = httpx.post(
        f"{stack.url}/login", headers={"Origin": stack.url}, data={"name": "del-gone", "password": created.password}, follow_redirects=False
    )
    assert account.own_workspace in workspaces(stack)
    _, admin = login(stack, "del-admin2", "admin")
    assert "gelöscht" in admin.predict("del-gone", api_name="/admin_delete_user")
    assert account.own_workspace not in workspaces(stack)
    assert not (stack.gateway.files_root / str(account.id)).exists()
    assert stack.gateway.accounts.get(account.id) is None and stack.gateway.accounts.list_chats(account.id) == []
    assert httpx.get(f"{stack.url}/v1/models", headers={"Authorization": f"Bearer {created.api_key}"}).status_code == 401
    assert httpx.get(f"{stack.url}/", cookies=session.cookies, follow_redirects=False).status_code == 303
    # nothing of theirs comes back when the purge runs, and nobody else's data went with it
    admin.predict(365, 30, 30, api_name="/admin_save_data_periods")
    assert account.own_workspace not in workspaces(stack)
    assert stack.gateway.accounts.by_name("del-admin2") is not None
