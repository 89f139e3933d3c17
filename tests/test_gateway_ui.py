"""The web UI's API (every event has a fixed api_name), driven by gradio_client against the real services.

The heart of it: one student can neither see nor search nor change another
student's workspace, whatever workspace name they send.
"""

from __future__ import annotations

import grpc
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as retrieval_grpc

from tests import gateway_stack
from tests.gateway_stack import running_stack, service_log, write_pdf


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # transcription stays down: its tab must say so while the others work
    with running_stack(tmp_path_factory.mktemp("gateway"), services=("inference", "embeddings", "retrieval")) as running:
        yield running


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs")
    return write_pdf(
        folder / "biologie.pdf",
        [
            "Die Photosynthese findet in den Chloroplasten der Pflanzenzellen statt. Pflanzen brauchen dazu Licht, Wasser und Kohlendioxid.",
            "Der Rhein ist ein Fluss in Europa. Er fliesst durch Basel, Koeln und Duesseldorf.",
        ],
    )


def client_for(stack, name: str, role: str = "student", classes: tuple[str, ...] = ()):
    created = stack.add_user(name, role, classes)
    return created.account, gateway_stack.ui_client(stack.url, {"Authorization": f"Bearer {created.api_key}"})


@pytest.fixture(scope="module")
def anna(stack):
    return client_for(stack, "ui-anna", classes=("7a",))


@pytest.fixture(scope="module")
def ben(stack):
    return client_for(stack, "ui-ben", classes=("7b",))


@pytest.fixture(scope="module")
def annas_document(anna, pdf):
    account, client = anna
    message, table, _choices, _file = client.predict(account.own_workspace, handle_file(str(pdf)), api_name="/documents_upload")
    assert "biologie.pdf" in message and table["data"][0][0] == "biologie.pdf" and table["data"][0][1] == 2
    return table["data"][0][4]


def test_an_answer_about_ones_own_document_cites_file_and_page(anna, annas_document):
    account, client = anna
    answer = client.predict(account.own_workspace, "Wo findet die Photosynthese statt?", api_name="/documents_ask")
    assert "Quellen" in answer and "biologie.pdf, S. 1" in answer


def test_a_student_can_neither_see_nor_search_nor_change_another_students_workspace(anna, ben, annas_document, pdf):
    anna_account, _ = anna
    _, ben_client = ben
    foreign = anna_account.own_workspace
    for api_name, args in (
        ("/documents_list", (foreign,)),
        ("/documents_ask", (foreign, "Photosynthese")),
        ("/documents_delete", (foreign, annas_document)),
    ):
        with pytest.raises(AppError, match="gibt es für dich nicht"):
            ben_client.predict(*args, api_name=api_name)
    with pytest.raises(AppError, match=r"gibt es für dich nicht|nur Lehrkräfte"):
        ben_client.predict(foreign, handle_file(str(pdf)), api_name="/documents_upload")
    workspaces = ben_client.predict(api_name="/documents_workspaces")
    assert foreign not in str(workspaces)
    own = ben_client.predict(workspaces["value"], api_name="/documents_list")[0]["data"]
    assert own == [] or all(row[4] != annas_document for row in own)


def test_a_class_workspace_is_read_by_its_students_and_changed_only_by_its_teachers(stack, pdf):
    _, teacher = client_for(stack, "ui-lehrerin", "teacher", ("7c",))
    _, student = client_for(stack, "ui-carla", "student", ("7c",))
    _, outsider = client_for(stack, "ui-dana", "student", ("7d",))
    message = teacher.predict("k-7c", handle_file(str(pdf)), api_name="/documents_upload")[0]
    assert "biologie.pdf" in message
    assert "biologie.pdf" in student.predict("k-7c", "Durch welche Städte fliesst der Rhein?", api_name="/documents_ask")
    with pytest.raises(AppError, match="nur Lehrkräfte"):
        student.predict("k-7c", handle_file(str(pdf)), api_name="/documents_upload")
    with pytest.raises(AppError, match="gibt es für dich nicht"):
        outsider.predict("k-7c", "Rhein", api_name="/documents_ask")


def test_a_chat_streams_and_is_stored_for_its_owner_only(stack, anna, ben):
    anna_account, client = anna
    job = client.submit("Hallo! Wie heißt die Hauptstadt von Italien?", "preset_tutor", api_name="/chat")
    updates = list(job)
    history = job.outputs()[-1][0]
    assert len(updates) >= 3  # the answer arrives piece by piece
    # the chat as shown: Markdown rendered and sanitised (safe_markup), so HTML around the text
    assert "Hallo!" in history[0]["content"][0]["text"] and history[1]["content"][0]["text"].strip()
    saved = stack.gateway.accounts.list_chats(anna_account.id)
    assert len(saved) == 1 and saved[0][1].startswith("Hallo!")
    _, ben_client = ben
    assert "Hallo!" in str(client.predict(saved[0][0], api_name="/chat_open"))
    with pytest.raises(AppError, match="gibt es nicht") as refused:  # the same answer as for a chat that does not exist
        ben_client.predict(saved[0][0], api_name="/chat_open")
    assert "Hallo!" not in str(refused.value)


def test_the_admin_tab_refuses_students_and_serves_admins(stack, anna):
    _, student = anna
    with pytest.raises(AppError, match="Nur für Admins"):
        student.predict(api_name="/admin_overview")
    with pytest.raises(AppError, match="Nur für Admins"):
        student.predict("ui-eve", "admin", "", api_name="/admin_add_user")
    # a class's use to count (the module's chat tests make some too, but this test also runs alone, as with -k)
    stack.gateway.accounts.count_usage(anna[0].id, requests=1, tokens=5)
    _, admin = client_for(stack, "ui-admin", "admin")
    health, models, usage, users, _retention, *_model_settings = admin.predict(api_name="/admin_overview")
    status = {row[0]: row[2] for row in health["data"]}
    assert status["Chat-Modell"] == "bereit" and status["Transkription"] == "nicht erreichbar"
    assert models["data"][0][2] == "Q4_K_M"
    # the parallel column: sequences running now / the slots the inference service decodes at once
    assert models["headers"][5] == "Gleichzeitig (laufen/Plätze)"
    running_now, slots = (int(n) for n in str(models["data"][0][5]).split("/"))
    assert slots == stack.servers["inference"].services[0].engine.parallel > 1 and 0 <= running_now <= slots
    assert any(row[0] == "7a" for row in usage["data"])  # counts only
    assert "ui-anna" in [row[0] for row in users["data"]]
    created = admin.predict("ui-frank", "student", "7a", api_name="/admin_add_user")
    assert "ui-frank" in created and "sk-schulki-" in created
    assert stack.gateway.accounts.by_name("ui-frank").classes == ("7a",)
    anna_account = stack.gateway.accounts.by_name("ui-anna")
    # a stored chat of hers (the chat test stores one too)
    stack.gateway.accounts.save_chat(anna_account.id, None, [{"role": "user", "content": "Wie weit ist der Mond weg?"}])
    assert stack.gateway.accounts.list_chats(anna_account.id)
    assert admin.predict(0, api_name="/admin_retention") == "Gespeichert."
    assert stack.gateway.accounts.list_chats(anna_account.id) == []  # no retention: stored chats are gone at once
    admin.predict(30, api_name="/admin_retention")


def test_deleting_a_user_removes_their_workspace_with_its_documents(stack, pdf):
    account, client = client_for(stack, "ui-gone", "student")
    client.predict(account.own_workspace, handle_file(str(pdf)), api_name="/documents_upload")
    _, admin = client_for(stack, "ui-admin2", "admin")
    assert "gelöscht" in admin.predict("ui-gone", api_name="/admin_delete_user")
    assert stack.gateway.accounts.by_name("ui-gone") is None
    with grpc.insecure_channel(stack.servers["retrieval"].address) as channel:
        names = retrieval_grpc.RetrievalServiceStub(channel).ListWorkspaces(retrieval_pb.ListWorkspacesRequest()).workspaces
    assert account.own_workspace not in names


def test_the_tab_of_a_service_that_is_down_says_so_and_the_others_work(anna):
    _, client = anna
    assert "Transkription" in client.predict(api_name="/transcription_status_load")
    assert "nicht erreichbar" in client.predict(api_name="/transcription_status_load")
    assert client.predict(api_name="/chat_status_load") == ""
    with pytest.raises(AppError, match="nicht erreichbar"):
        client.predict(handle_file(__file__), "", api_name="/transcribe")


def test_the_english_ui_speaks_english(stack):
    created = stack.add_user("ui-english", "student")
    client = gateway_stack.ui_client(stack.url + "/en/", {"Authorization": f"Bearer {created.api_key}"})
    assert "Logged in as" in str(client.predict(api_name="/whoami"))


def test_the_request_id_of_a_ui_event_follows_it_into_every_service_log(stack, pdf):
    created = stack.add_user("ui-traced", "student")
    headers = {"Authorization": f"Bearer {created.api_key}"}
    workspace = created.account.own_workspace
    with service_log() as log:
        uploader = gateway_stack.ui_client(stack.url, {**headers, "X-Request-Id": "ui-upload-1"})
        uploader.predict(workspace, handle_file(str(pdf)), api_name="/documents_upload")
        log.wait_for("retrieval", "IngestDocument", "ui-upload-1")
        log.wait_for("embeddings", "Embed", "ui-upload-1")  # the retrieval service passes it on while it embeds the chunks
        asker = gateway_stack.ui_client(stack.url, {**headers, "X-Request-Id": "ui-ask-1"})
        assert "biologie.pdf" in asker.predict(workspace, "Wo findet die Photosynthese statt?", api_name="/documents_ask")
        log.wait_for("retrieval", "Search", "ui-ask-1")
        log.wait_for("inference", "Chat", "ui-ask-1")  # the streamed answer: every step of the event carries the id
        chatter = gateway_stack.ui_client(stack.url, {**headers, "X-Request-Id": "ui-chat-1"})
        chatter.predict("Hallo", "preset_assistant", api_name="/chat")
        log.wait_for("inference", "Chat", "ui-chat-1")
