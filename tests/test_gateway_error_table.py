"""One table (gateway/errors.py) turns the use cases' errors into the API's OpenAI error and the page's message.

The routes and tabs let these errors go up; none catches one of the table's
classes to answer it by hand (a source check, as the import rules are), and
the same error gives the API's answer and the German and English messages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grpc
import pytest
from schulki.gateway.accounts.quotas import QuotaExceeded
from schulki.gateway.api.errors import from_exception
from schulki.gateway.documents.stored_files import FileRefused
from schulki.gateway.documents.whole_document import DocumentRefused
from schulki.gateway.errors import TOLD, told
from schulki.gateway.nodes.chat_models import ModelChoiceError
from schulki.gateway.nodes.clients import ServiceDown
from schulki.gateway.web.i18n import Strings

GATEWAY = Path(__file__).resolve().parents[1] / "services" / "schulki" / "gateway"
TABLE_NAMES = {cls.__name__ for cls in TOLD} | {"RpcError"}


def _caught_by_hand(path: Path) -> list[str]:
    """``except X`` clauses of a module that name a class of the error table."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            names = {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node.type) if isinstance(n, (ast.Name, ast.Attribute))}
            found += [f"{path.name}:{node.lineno} catches {name}" for name in sorted(names & TABLE_NAMES)]
    return found


def test_no_route_or_tab_answers_a_table_error_by_hand():
    modules = sorted((GATEWAY / "api").glob("*.py")) + sorted((GATEWAY / "ui").glob("*.py"))
    assert len(modules) > 15
    assert [problem for path in modules for problem in _caught_by_hand(path)] == []


def test_the_source_check_finds_a_planted_catch(tmp_path):
    planted = tmp_path / "route.py"
    planted.write_text("try:\n    pick()\nexcept ModelChoiceError as error:\n    raise Answer(error)\nexcept grpc.RpcError:\n    pass\n")
    assert len(_caught_by_hand(planted)) == 2


@pytest.mark.parametrize(
    ("error", "status", "code", "german"),
    [
        (
            ModelChoiceError("Das Modell „x“ gibt es hier nicht. (There is no model 'x'.)", unknown=True),
            404,
            "model_not_found",
            "gibt es hier nicht",
        ),
        (ModelChoiceError("Dieses Modell ist für dich gesperrt. (Not for you.)", unknown=False), 403, "model_not_allowed", "gesperrt"),
        (ServiceDown("inference"), 503, "service_unavailable", "nicht erreichbar"),
        (QuotaExceeded("Zu viele Anfragen: höchstens 3 pro Minute.", 20), 429, "rate_limit_exceeded", "Zu viele Anfragen"),
        (DocumentRefused(404, "Dieses Dokument gibt es nicht. (No such document.)"), 404, None, "Dokument gibt es nicht"),
    ],
)
def test_one_entry_gives_the_apis_answer_and_the_pages_message(error, status, code, german):
    answer = from_exception(error)
    assert (answer.status, answer.code) == (status, code)
    page = told(error, Strings("de"))
    assert page is not None and german in page.page


def test_a_refused_file_keeps_its_status_type_and_retry_after():
    answer = from_exception(FileRefused(429, "Es werden schon 3 Dateien von dir verarbeitet.", code="too_many_ingests", retry_after_s=5))
    assert (answer.status, answer.type, answer.code, answer.headers) == (429, "rate_limit_error", "too_many_ingests", {"Retry-After": "5"})
    missing = from_exception(FileRefused(404, "No file with id 'x' found.", param="file_id", code="file_not_found"))
    assert (missing.status, missing.type, missing.param, missing.headers) == (404, "not_found_error", "file_id", None)


def test_a_services_refusal_keeps_its_status_and_message():
    class Refused(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.PERMISSION_DENIED

        def details(self) -> str:
            return "Diese Adresse ist gesperrt."

    answer = from_exception(Refused())
    assert (answer.status, answer.type, answer.message) == (403, "permission_error", "Diese Adresse ist gesperrt.")
    page = told(Refused(), Strings("de"))
    assert page is not None and "Diese Adresse ist gesperrt." in page.page


def test_an_error_outside_the_table_is_a_bug_and_goes_up():
    with pytest.raises(KeyError):
        from_exception(KeyError("bug"))
