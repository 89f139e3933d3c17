"""A question about a CSV or XLSX table through the gateway's Dokumente tab (gradio_client, the real services):
the model is given the table's rows as one Markdown table, whole for a counting question about a small table,
and the answer's sources name the table."""

from __future__ import annotations

import pytest
from gradio_client import Client, handle_file

from tests.gateway_stack import running_stack
from tests.test_table_context import marks_csv, marks_xlsx


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("gateway"), services=("inference", "embeddings", "retrieval")) as running:
        yield running


@pytest.fixture(scope="module")
def student(stack, tmp_path_factory):
    created = stack.add_user("tab-ida", "student")
    client = Client(stack.url, headers={"Authorization": f"Bearer {created.api_key}"}, verbose=False)
    folder = tmp_path_factory.mktemp("tables")
    for name, data in (("noten.csv", marks_csv()), ("punkte.xlsx", marks_xlsx())):
        (folder / name).write_bytes(data)
        assert name in client.predict(created.account.own_workspace, handle_file(str(folder / name)), api_name="/documents_upload")[0]
    return created.account, client


@pytest.fixture()
def prompts(stack, monkeypatch):
    """The messages the gateway hands to the real chat model, recorded on their way (at its client to the inference service)."""
    seen: list[str] = []
    chat = stack.gateway._services.chat

    def recording(messages, *args, **kwargs):
        seen.append(messages[-1]["content"])
        return chat(messages, *args, **kwargs)

    monkeypatch.setattr(stack.gateway._services, "chat", recording)
    return seen


def test_a_counting_question_about_a_csv_gets_the_whole_table_and_names_it(student, prompts):
    account, client = student
    answer = client.predict(account.own_workspace, "Wer hat in Chemie die meisten Punkte?", api_name="/documents_ask")
    assert "noten.csv" in answer.split("Quellen", 1)[1]
    (prompt,) = prompts
    assert "[noten.csv, Tabelle „noten“, alle 4 Zeilen]" in prompt
    assert prompt.count("| Zeile | Name | Fach | Note | Bemerkung | Punkte |") == 1
    assert "| 2 | Anna | Chemie | 2 | arbeitet gut mit | 14 |" in prompt and "Punkte: 14" not in prompt


def test_a_question_about_an_xlsx_sheet_gets_its_rows_as_a_table(student, prompts):
    account, client = student
    answer = client.predict(account.own_workspace, "Wie viele Punkte hat Fatma?", api_name="/documents_ask")
    assert "punkte.xlsx" in answer.split("Quellen", 1)[1]
    (prompt,) = prompts
    assert "[punkte.xlsx, Tabelle „7a“, alle 3 Zeilen]" in prompt
    assert "| Zeile | Name | Punkte | Note |" in prompt and "| 3 | Fatma | 15 | 1 |" in prompt


def test_another_question_gets_the_rows_found_as_an_excerpt(student, prompts):
    account, client = student
    answer = client.predict(account.own_workspace, "Was ist mit Davids Referat in Physik?", api_name="/documents_ask")
    assert "noten.csv" in answer.split("Quellen", 1)[1]
    (prompt,) = prompts
    assert "Tabelle „noten“, Auszug, Zeilen " in prompt and "| 5 | David | Physik | 4 |" in prompt
