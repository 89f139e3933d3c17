"""The Admin tab's page of stored `schulki eval` results, through the gateway's real API (gradio_client)."""

from __future__ import annotations

import re

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from schulki.evaluation.results import save_result
from schulki.evaluation.runner import EvalOptions, evaluate

from tests import gateway_stack
from tests.eval_support import THREADS, default_model
from tests.gateway_stack import running_stack, stack_config


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gateway-eval")
    config = stack_config(data_dir)
    config.evaluation.results_dir = data_dir / "eval-results"
    with running_stack(data_dir, services=(), config=config) as running:
        yield running


def client(stack, name: str, role: str) -> Client:
    created = stack.add_user(name, role)
    return gateway_stack.ui_client(stack.url, {"Authorization": f"Bearer {created.api_key}"})


def test_admins_see_stored_measurements_and_students_do_not(stack):
    admin, student = client(stack, "eval-admin", "admin"), client(stack, "eval-student", "student")
    with pytest.raises(AppError, match="Nur für Admins"):
        student.predict(api_name="/admin_evaluation")
    table, status = admin.predict(api_name="/admin_evaluation")
    assert not any(any(cell for cell in row) for row in table.get("data") or []) and "Noch keine Messungen" in status

    options = EvalOptions(
        context=256, windows=2, questions_split="dev", question_limit=2, prompt_tokens=64, generate_tokens=8, threads=THREADS, host="ki-lab"
    )
    for record in evaluate([default_model()], options):
        save_result(stack.config.evaluation.results_dir, record)
    table, status = admin.predict(api_name="/admin_evaluation")
    assert table["headers"][:4] == ["Rechner", "Datei", "Quant", "Größe"] and "1 Messungen" in status
    row = table["data"][0]
    assert row[:3] == ["ki-lab", default_model().name, "Q4_K_M"] and row[5] == row[6] == "Referenz"
    assert re.fullmatch(r"[0-2]/2 \(\d+ %\)", row[7]) and float(row[9]) > 0  # questions right, generation tok/s
