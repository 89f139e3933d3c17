"""Questions about a user's documents (Gateway.ask_documents): the passage budget's rules, and the use case through
/v1/vector_stores/{id}/chat/completions and the Dokumente tab on the real stack with the real model."""

from __future__ import annotations

import contextlib
import html
import json
import re
from collections.abc import Iterator

import grpc
import httpx
import openai
import pytest
from gradio_client.exceptions import AppError
from schulki.gateway.accounts.database import NewAccount
from schulki.gateway.documents.questions import Turn, choose_passages, keep_recent, passage_budget, retrieval_query, search_depth
from schulki.gateway.moderation.answers import BLOCKED
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as retrieval_grpc

from tests.conftest import shared_tls
from tests.gateway_stack import Stack, running_stack, stack_config, ui_client
from tests.retrieval_support import ingest
from tests.service_support import wait_until

TOWER = (
    "Der Wasserturm von Quedlinburg wurde von der Baumeisterin Hedwig Sommerfeld entworfen. "
    "Er steht am Rand der Altstadt und versorgte die Häuser mit Wasser."
)
VOLCANO = (
    "Der Vesuv ist ein Vulkan bei Neapel. Bei seinem großen Ausbruch wurde die römische Stadt Pompeji unter Asche begraben. "
    "Der Ausbruch geschah im Jahr 79 nach Christus."
)
DATES = [  # other documents that a follow-up on its own ("Und wann war das?") matches better than the volcano's
    "Wann war das Sportfest? Im Juni, bei Sonne.",
    "Wann war das Konzert der Schulband? Im Dezember in der Aula.",
    "Wann war das letzte Elterngespräch? Am Dienstag nach den Ferien.",
]
CHAPTERS = [
    f"Kapitel {n}. Die Klasse beobachtet im Schulgarten die Pflanze Nummer {n}. Sie misst jeden Morgen die Höhe, "
    f"notiert das Wetter und zeichnet die Blätter. Am Ende der Woche vergleicht sie die Pflanze {n} mit den anderen. "
    "Dann gießen zwei Kinder das Beet, zwei andere schreiben die Werte in eine Tabelle an der Tafel. Wenn es regnet, "
    "bleibt die Gießkanne im Schuppen, und die Klasse schaut, wie viel Wasser im Messbecher steht. Im Herbst "
    "ernten alle gemeinsam und kochen in der Schulküche eine Suppe aus dem Gemüse."
    for n in range(1, 13)
]


# -- the rules, without services -------------------------------------------------------------------------------------------


def test_the_number_of_passages_grows_and_shrinks_with_the_context():
    costs = [300] * 12  # twelve passages of 300 tokens, best first
    counts = []
    for context in (1024, 2048, 4096, 8192):
        budget = passage_budget(context, fixed_tokens=100, answer_tokens=512)
        chosen = choose_passages(costs, budget)
        assert sum(costs[i] for i in chosen) <= budget
        counts.append(len(chosen))
    assert counts == [1, 4, 11, 12]
    assert len(choose_passages(costs, passage_budget(8192, 100, 512, cap=1000))) == 3  # the setting caps the budget
    assert passage_budget(600, fixed_tokens=100, answer_tokens=512) == 0


def test_a_passage_that_does_not_fit_is_passed_over_for_a_shorter_one():
    assert choose_passages([300, 900, 100, 50], 450) == [0, 2, 3]
    assert choose_passages([500], 450) == []


def test_the_search_looks_deep_enough_to_fill_the_budget():
    assert search_depth(0) == 4 and search_depth(1000) == 10 and search_depth(100_000) == 40


def test_a_follow_up_is_searched_with_the_earlier_questions():
    history = [Turn("user", "Wer war Hedwig?"), Turn("assistant", "Eine Baumeisterin."), Turn("user", "Was baute sie?")]
    query = retrieval_query("Und wann war das?", [Turn("user", "ganz alt"), Turn("assistant", "x"), *history])
    assert query.splitlines() == ["Wer war Hedwig?", "Was baute sie?", "Und wann war das?"]  # two earlier questions, no answers
    assert retrieval_query("Und wann?", []) == "Und wann?"
    assert retrieval_query("x" * 5000, []) == "x" * 2000


def test_the_oldest_turns_leave_the_conversation_first_and_it_starts_with_a_question():
    roles = ["user", "assistant", "user", "assistant"]
    assert keep_recent([10, 10, 10, 10], roles, 40) == 4
    assert keep_recent([10, 10, 10, 10], roles, 30) == 2  # three fit, but the third newest is an answer
    assert keep_recent([10, 10, 10, 50], roles, 30) == 0


# -- the use case on the real stack ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("questions")
    config = stack_config(folder)
    config.gateway.requests_per_minute = {"student": 1000, "teacher": 1000, "admin": 1000}
    with running_stack(folder, services=("inference", "embeddings", "retrieval"), config=config) as running:
        yield running


@pytest.fixture(scope="module")
def retrieval(stack):
    return retrieval_grpc.RetrievalServiceStub(stack.servers["retrieval"].channel())


def store(retrieval, workspace: str, file_name: str, text: str) -> str:
    with contextlib.suppress(grpc.RpcError):  # it exists already
        retrieval.CreateWorkspace(retrieval_pb.CreateWorkspaceRequest(workspace=workspace), timeout=30)
    return ingest(retrieval, workspace, file_name, text.encode())[1].document_id


@pytest.fixture(scope="module")
def anna(stack, retrieval):
    created = stack.add_user("dq-anna", "student", ("8a",))
    workspace = created.account.own_workspace
    store(retrieval, workspace, "wasserturm.txt", TOWER)
    store(retrieval, workspace, "vesuv.txt", VOLCANO)
    for number, text in enumerate(DATES, start=1):
        store(retrieval, workspace, f"termine-{number}.txt", text)
    return created


@pytest.fixture(scope="module")
def garden(stack, retrieval):
    """A student whose workspace holds one long document of twelve chapters (twelve chunks)."""
    created = stack.add_user("dq-gina", "student")
    store(retrieval, created.account.own_workspace, "schulgarten.txt", "\n\n".join(CHAPTERS))
    return created


@pytest.fixture()
def budget(stack):
    """Set gateway.document_question_passage_tokens for one test."""
    before = stack.config.gateway.document_question_passage_tokens

    def set_budget(tokens: int) -> None:
        stack.config.gateway.document_question_passage_tokens = tokens

    yield set_budget
    stack.config.gateway.document_question_passage_tokens = before


def store_client(stack, user: NewAccount, workspace: str) -> openai.OpenAI:
    """The openai client, pointed at one vector store: its chat completions are questions about the store's documents."""
    return openai.OpenAI(base_url=f"{stack.url}/v1/vector_stores/vs_{workspace}", api_key=user.api_key, max_retries=0, timeout=300)


def http_client(stack, user: NewAccount) -> httpx.Client:
    return httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {user.api_key}"}, verify=str(shared_tls().ca_file), timeout=300
    )


def route(workspace: str) -> str:
    return f"/v1/vector_stores/vs_{workspace}/chat/completions"


def test_the_answer_is_written_from_the_users_document_and_cites_it(stack, anna):
    client = store_client(stack, anna, anna.account.own_workspace)
    answer = client.chat.completions.create(
        model="schulki-chat", messages=[{"role": "user", "content": "Wer hat den Wasserturm von Quedlinburg entworfen?"}]
    )
    extra = answer.model_extra or {}
    citations = extra["citations"]
    assert [c["index"] for c in citations] == list(range(1, len(citations) + 1))
    (tower,) = [c for c in citations if c["filename"] == "wasserturm.txt"]
    assert tower["file_id"] == f"doc-{tower['document_id']}"
    # the fact only the document holds reaches the model: in the answer, or at least in the passages it was given
    assert "Sommerfeld" in answer.choices[0].message.content or "Sommerfeld" in tower["text"]
    assert answer.choices[0].message.content and answer.usage.prompt_tokens > 0
    assert answer.model == stack.gateway.models.default()  # the user's model, by name


def test_the_default_budget_gives_the_model_more_than_the_old_four_passages(stack, garden, budget, retrieval):
    with http_client(stack, garden) as http:
        body = {"model": "schulki-chat", "messages": [{"role": "user", "content": "Was misst die Klasse im Schulgarten?"}]}
        wide = http.post(route(garden.account.own_workspace), json=body)
        budget(700)  # one or two chunks of 1,200 characters
        narrow = http.post(route(garden.account.own_workspace), json=body)
    assert wide.status_code == narrow.status_code == 200, (wide.text, narrow.text)
    (document,) = retrieval.ListDocuments(retrieval_pb.ListDocumentsRequest(workspace=garden.account.own_workspace), timeout=30).documents
    # the whole document (every chunk) fits the default context of 4,096 tokens; the old rule gave the model 4
    assert len(wide.json()["citations"]) == document.chunk_count > 4, (len(wide.json()["citations"]), document.chunk_count)
    assert 1 <= len(narrow.json()["citations"]) < 4


def test_a_follow_up_question_is_searched_with_the_conversation(stack, anna, budget):
    budget(80)  # room for one short document: the best passage alone
    conversation = [
        {"role": "user", "content": "Was geschah mit der Stadt Pompeji?"},
        {"role": "assistant", "content": "Sie wurde unter Asche begraben."},
        {"role": "user", "content": "Und wann war das?"},
    ]
    with http_client(stack, anna) as http:
        response = http.post(route(anna.account.own_workspace), json={"model": "schulki-chat", "messages": conversation})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert "Pompeji" in answer["search_query"] and "Und wann war das?" in answer["search_query"]
    assert answer["citations"][0]["filename"] == "vesuv.txt", answer["citations"]  # the best passage: the conversation's topic
    assert "79" in answer["citations"][0]["text"]


def test_the_tab_keeps_the_conversation_for_follow_ups(stack, anna, budget):
    budget(80)
    client = ui_client(stack.url, {"Authorization": f"Bearer {anna.api_key}"})
    workspace = anna.account.own_workspace
    first = client.predict(workspace, "Was geschah mit der Stadt Pompeji?", api_name="/documents_ask")
    assert "vesuv.txt" in first and "Folgefrage" not in first
    follow_up = client.predict(workspace, "Und wann war das?", api_name="/documents_ask")
    assert "vesuv.txt" in follow_up.split("Quellen", 1)[1] and "Folgefrage" in follow_up and "Pompeji" in follow_up
    client.predict(api_name="/documents_new_conversation")
    fresh = client.predict(workspace, "Und wann war das?", api_name="/documents_ask")
    assert "Folgefrage" not in fresh and "vesuv.txt" not in fresh.split("Quellen", 1)[1]


def test_another_students_store_is_not_found(stack, anna):
    ben = stack.add_user("dq-ben", "student", ("8a",))
    body = {"model": "schulki-chat", "messages": [{"role": "user", "content": "Wer hat den Wasserturm entworfen?"}]}
    with http_client(stack, ben) as http:
        for stream in (False, True):
            for store_id in (f"vs_{anna.account.own_workspace}", "vs_u-999999", anna.account.own_workspace):
                response = http.post(f"/v1/vector_stores/{store_id}/chat/completions", json={**body, "stream": stream})
                assert response.status_code == 404, (store_id, response.text)
                assert response.json()["error"]["type"] == "not_found_error"
        assert http.post(route(ben.account.own_workspace), json=body).status_code == 200  # their own store answers


def test_a_question_longer_than_the_context_is_a_clear_400(stack, anna):
    question = "Wer hat den Wasserturm von Quedlinburg entworfen und warum? " * 600  # far over 4,096 tokens
    with http_client(stack, anna) as http:
        for stream in (False, True):
            body = {"model": "schulki-chat", "messages": [{"role": "user", "content": question}], "stream": stream}
            response = http.post(route(anna.account.own_workspace), json=body)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == "context_length_exceeded" and "Die Frage ist zu lang" in error["message"], error
        too_long_answer = {"model": "schulki-chat", "messages": [{"role": "user", "content": "Wer?"}], "max_tokens": 100_000}
        response = http.post(route(anna.account.own_workspace), json=too_long_answer)
        assert response.status_code == 400 and response.json()["error"]["param"] == "max_tokens", response.text
        ends_with_answer = {"model": "schulki-chat", "messages": [{"role": "assistant", "content": "Hallo"}]}
        assert http.post(route(anna.account.own_workspace), json=ends_with_answer).status_code == 400
    client = ui_client(stack.url, {"Authorization": f"Bearer {anna.api_key}"})
    with pytest.raises(AppError, match="Die Frage ist zu lang"):
        client.predict(anna.account.own_workspace, question, api_name="/documents_ask")


def sse(response: httpx.Response) -> Iterator[dict]:
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def test_a_streamed_answer_brings_its_citations_first(stack, anna):
    body = {
        "model": "schulki-chat",
        "messages": [{"role": "user", "content": "Wer hat den Wasserturm entworfen?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with http_client(stack, anna) as http, http.stream("POST", route(anna.account.own_workspace), json=body) as response:
        assert response.status_code == 200
        chunks = list(sse(response))
    assert "wasserturm.txt" in [c["filename"] for c in chunks[0]["citations"]] and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] in (["stop"], ["length"])
    assert chunks[-1]["usage"]["completion_tokens"] > 0 and "citations" not in chunks[-1]


def test_a_client_that_disconnects_mid_stream_does_not_break_the_gateway(stack, anna):
    body = {"model": "schulki-chat", "messages": [{"role": "user", "content": "Erzähl vom Vesuv."}], "stream": True, "max_tokens": 400}
    tokens_before = stack.gateway.accounts.tokens_today(anna.account.id)
    with http_client(stack, anna) as http, http.stream("POST", route(anna.account.own_workspace), json=body) as response:
        for chunk in sse(response):
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                break  # the connection closes here, while the model is still writing
    # the model's answer is cancelled: no call stays open, and the engine decodes nothing more for it
    wait_until(lambda: all(node.in_flight == 0 for node in stack.gateway.inference_nodes()), 60, "the cancelled answer's end")
    engine = stack.servers["inference"].services[0].engine
    wait_until(lambda: engine.running == 0, 60, "the engine's slot freed")
    assert stack.gateway.accounts.tokens_today(anna.account.id) > tokens_before  # what it began with is counted
    with http_client(stack, anna) as http:  # and the gateway answers the next question as before
        response = http.post(route(anna.account.own_workspace), json={**body, "stream": False, "max_tokens": 8})
    assert response.status_code == 200 and response.json()["citations"], response.text


def test_the_openapi_document_lists_the_typed_answer(stack, anna):
    with http_client(stack, anna) as http:
        document = http.get("/v1/openapi.json").json()
    operation = document["paths"]["/v1/vector_stores/{vector_store_id}/chat/completions"]["post"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/DocumentChatCompletion")
    assert "text/event-stream" in operation["responses"]["200"]["content"] and "404" in operation["responses"]


def test_a_students_question_to_a_class_store_is_answered(stack, retrieval):
    student = stack.add_user("dq-carla", "student", ("8c",))
    store(retrieval, "k-8c", "vesuv.txt", VOLCANO)
    client = store_client(stack, student, "k-8c")
    answer = client.chat.completions.create(model="schulki-chat", messages=[{"role": "user", "content": "Welche Stadt begrub der Vesuv?"}])
    assert (answer.model_extra or {})["citations"][0]["filename"] == "vesuv.txt"


def test_a_cry_for_help_about_documents_gets_the_help_answer_and_the_model_is_not_asked(stack, anna):
    """Moderation reads a question about documents as it reads a chat's: on /v1 (whole and streamed) and in the tab."""
    admin = stack.add_user("dq-admin", "admin")
    flags_before = len(stack.gateway.moderation_flags(admin.account))
    tokens_before = stack.gateway.accounts.tokens_today(anna.account.id)
    question = {"role": "user", "content": "Ich will mich umbringen, es hat alles keinen Sinn."}
    answer = store_client(stack, anna, anna.account.own_workspace).chat.completions.create(model="schulki-chat", messages=[question])
    assert answer.choices[0].message.content == BLOCKED["self_harm"]
    assert answer.choices[0].finish_reason == "content_filter"
    body = {"model": "schulki-chat", "messages": [question], "stream": True}
    with http_client(stack, anna) as http, http.stream("POST", route(anna.account.own_workspace), json=body) as response:
        assert response.status_code == 200
        chunks = [c for c in sse(response) if c["choices"]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == BLOCKED["self_harm"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    shown = ui_client(stack.url, {"Authorization": f"Bearer {anna.api_key}"}).predict(
        anna.account.own_workspace, "ich w1ll m1ch UMBRINGEN", api_name="/documents_ask"
    )
    # the tab shows the fixed answer alone: no sources under it (Gradio sends it as sanitised HTML)
    assert words(html.unescape(re.sub(r"<[^>]+>", " ", shown))) == words(BLOCKED["self_harm"]), shown
    assert stack.gateway.accounts.tokens_today(anna.account.id) == tokens_before  # no model was asked, nothing reserved
    flags = stack.gateway.moderation_flags(admin.account)[: len(stack.gateway.moderation_flags(admin.account)) - flags_before]
    assert [(f.user, f.category, f.direction) for f in flags] == [("dq-anna", "self_harm", "input")] * 3, flags


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)
