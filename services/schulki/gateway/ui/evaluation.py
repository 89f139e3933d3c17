"""The Admin tab's page of stored ``schulki eval`` results: the table a teacher puts on a slide.

It only reads what ``schulki eval`` stored (``evaluation.results_dir``, else
``<data_dir>/models/eval-results``); measuring runs on the machine being
measured, with the command, never in the gateway.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from starlette.concurrency import run_in_threadpool

from schulki.evaluation import report
from schulki.evaluation.results import RESULTS_FOLDER, load_results
from schulki.gateway.context import Gateway
from schulki.gateway.ui.common import as_admin, handles_errors
from schulki.gateway.web.i18n import Strings

TEXTS = {
    "title": ("Messungen der Quantisierungen (schulki eval)", "Measured quants (schulki eval)"),
    "intro": (
        "Perplexität und KL-Divergenz auf dem deutschen Referenztext (kleiner ist besser), gleiches Top-Token wie die "
        "Referenzdatei, richtig beantwortete Fragen des Fragensatzes und Geschwindigkeit, gemessen auf den Rechnern der "
        "Schule mit `schulki eval`.",
        "Perplexity and KL divergence on the German reference text (lower is better), same top token as the reference "
        "file, questions answered right and speed, measured on the school's machines with `schulki eval`.",
    ),
    "load": ("Messungen anzeigen", "Show measurements"),
    "none": (
        "Noch keine Messungen in {folder}. Auf einem Rechner: `schulki eval DATEI.gguf …`",
        "No measurements in {folder} yet. On a machine: `schulki eval FILE.gguf …`",
    ),
    "count": ("{n} Messungen aus {folder}", "{n} measurements from {folder}"),
}
HEADERS_EN = report.HEADERS


def text(s: Strings, key: str) -> str:
    return TEXTS[key][1 if s.lang == "en" else 0]


def results_dir(gateway: Gateway) -> Path:
    """Where the gateway reads stored results."""
    return Path(gateway.config.evaluation.results_dir or Path(gateway.config.data_dir) / "models" / RESULTS_FOLDER)


def build_evaluation_section(gateway: Gateway, s: Strings) -> None:
    """An accordion in the Admin tab with the stored results as a table."""
    headers = list(HEADERS_EN if s.lang == "en" else report.HEADERS_DE)
    with gr.Accordion(text(s, "title"), open=False):
        gr.Markdown(text(s, "intro"))
        show = gr.Button(text(s, "load"), elem_id="admin-evaluation-load")
        table = gr.Dataframe(headers=headers, interactive=False, elem_id="admin-evaluation")
        status = gr.Markdown(elem_id="admin-evaluation-status")

    @handles_errors(s)
    async def load(request: gr.Request) -> tuple[list[list[str]], str]:
        return await as_admin(gateway, s, request, shown)

    async def shown() -> tuple[list[list[str]], str]:
        folder = results_dir(gateway)
        records = await run_in_threadpool(load_results, folder)
        message = text(s, "count").format(n=len(records), folder=folder) if records else text(s, "none").format(folder=folder)
        return report.rows(records), message

    show.click(load, None, [table, status], api_name="admin_evaluation")
