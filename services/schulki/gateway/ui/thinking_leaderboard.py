"""The school's own leaderboard in the "Wie denkt die KI?" tab: what ``schulki eval`` measured on this school's machines.

Per model file and host: perplexity and KL divergence on the German reference
text, the German question set's score and the answer speed, as a table whose
columns sort by a click on their head (numbers, not text, so they sort as
numbers), and quality against file size as a picture (scatter_image.py). It reads only the stored
results (the Admin tab's folder, ui/evaluation.py); nothing is measured in the
gateway. With no results yet it says how to measure.
"""

from __future__ import annotations

import uuid
from typing import Any

import gradio as gr
import pandas as pd  # type: ignore[import-untyped]  # comes with gradio
from starlette.concurrency import run_in_threadpool

from schulki.evaluation.results import load_results
from schulki.gateway.context import Gateway
from schulki.gateway.ui.common import account_of, handles_errors
from schulki.gateway.ui.evaluation import results_dir
from schulki.gateway.ui.scatter_image import Point, scatter
from schulki.gateway.web.i18n import Strings

COLUMNS = {
    "de": ("Modell", "Quant", "Rechner", "Größe (MiB)", "Perplexität", "KL-Divergenz", "Fragen richtig (%)", "Antwort Tok/s"),
    "en": ("Model", "Quant", "Machine", "Size (MiB)", "Perplexity", "KL divergence", "Questions right (%)", "Answer tok/s"),
}
TEXTS: dict[str, dict[str, str]] = {
    "de": {
        "title": "Rangliste der Schule: Welches Modell ist wie gut – und wie schnell?",
        "intro": (
            "Gemessen auf den Rechnern dieser Schule mit `schulki eval`: **Perplexität** und **KL-Divergenz** auf einem "
            "deutschen Text (kleiner ist besser; die KL-Divergenz misst, wie weit eine kleinere Datei von der Referenz "
            "abweicht), richtig beantwortete **Fragen** eines deutschen Fragensatzes und **Tokens pro Sekunde** beim "
            "Antworten. Klicke auf eine Spaltenüberschrift, um zu sortieren."
        ),
        "load": "Rangliste zeigen",
        "plot": "Qualität (Perplexität, kleiner ist besser) gegen Dateigröße",
        "none": (
            "Noch keine Messungen. Eine Lehrkraft oder der Admin misst ein Modell auf einem Rechner der Schule mit "
            "`schulki eval DATEI.gguf` (mehrere Dateien desselben Modells: die größte zuerst, sie ist die Referenz für "
            "die KL-Divergenz); die Ergebnisse landen in `{folder}` und erscheinen dann hier."
        ),
        "count": "{n} Messungen von {hosts} Rechnern.",
        "reference": "Referenz",
    },
    "en": {
        "title": "The school's leaderboard: which model is how good – and how fast?",
        "intro": (
            "Measured on this school's machines with `schulki eval`: **perplexity** and **KL divergence** on a German "
            "text (lower is better; KL divergence measures how far a smaller file strays from the reference), "
            "**questions** of a German question set answered right, and **tokens per second** while answering. Click a "
            "column head to sort."
        ),
        "load": "Show leaderboard",
        "plot": "Quality (perplexity, lower is better) against file size",
        "none": (
            "No measurements yet. A teacher or the admin measures a model on one of the school's machines with "
            "`schulki eval FILE.gguf` (several files of one model: the largest first, it is the reference for the KL "
            "divergence); the results land in `{folder}` and then show here."
        ),
        "count": "{n} measurements from {hosts} machines.",
        "reference": "reference",
    },
}


def leaderboard_rows(records: list[dict]) -> list[list[Any]]:
    """One row per stored result, numbers as numbers (None where a figure was not measured), best perplexity first."""
    rows = []
    for record in records:
        questions = record.get("questions") or {}
        speed = record.get("speed") or {}
        size = record.get("size_bytes")
        rows.append(
            [
                record.get("model_name") or record.get("file", "?"),
                record.get("quant", "?"),
                record.get("host", "?"),
                round(size / 2**20, 1) if size else None,
                round(record["perplexity"], 3) if record.get("perplexity") is not None else None,
                round(record["mean_kld"], 5) if record.get("mean_kld") is not None else None,
                round(100 * questions["accuracy"], 1) if questions.get("total") else None,
                round(speed["generation_tokens_per_s"], 1) if speed.get("generation_tokens_per_s") else None,
            ]
        )
    return sorted(rows, key=lambda row: (row[4] is None, row[4] or 0.0))


def build_leaderboard_section(gateway: Gateway, s: Strings) -> None:
    t = TEXTS.get(s.lang, TEXTS["de"])
    columns = list(COLUMNS.get(s.lang, COLUMNS["de"]))
    gr.Markdown(f"### {t['title']}\n\n{t['intro']}")
    load = gr.Button(t["load"], elem_id="leaderboard-load")
    status = gr.Markdown(elem_id="leaderboard-status")
    table = gr.Dataframe(headers=columns, interactive=False, elem_id="leaderboard-table")
    # A picture, not gr.ScatterPlot: Gradio's plots draw with Vega, which the page's policy (no 'unsafe-eval') stops.
    plot = gr.Image(label=t["plot"], type="filepath", interactive=False, elem_id="leaderboard-plot")

    @handles_errors(s)
    async def show(request: gr.Request) -> tuple[str, Any, Any]:
        account = account_of(gateway, request, s)  # every logged-in user sees the school's measurements; strangers nothing
        folder = results_dir(gateway)
        records = await run_in_threadpool(load_results, folder)
        if not records:
            return t["none"].format(folder=folder), gr.Dataframe(value=None, headers=columns), None
        rows = leaderboard_rows(records)
        frame = pd.DataFrame(rows, columns=columns)
        hosts = len({record.get("host") for record in records})
        points = [Point(row[3], row[4], f"{row[1]} ({row[2]})", row[0]) for row in rows if row[3] is not None and row[4] is not None]
        picture = None
        if points:
            folder = gateway.user_files(account) / uuid.uuid4().hex
            folder.mkdir()
            target = folder / "rangliste.png"
            drawn = scatter(points, columns[3], columns[4], "," if s.lang == "de" else ".")
            await run_in_threadpool(drawn.save, target)
            # Gradio serves its cached copy to anyone who knows the path; the gateway serves it only to this user
            picture = await plot.async_move_resource_to_block_cache(str(target))
            assert picture is not None, "Gradio returns the cached path of the file it was given"
            gateway.file_owners.add(picture, account.id)
        return t["count"].format(n=len(records), hosts=hosts), frame, picture

    load.click(show, None, [status, table, plot], api_name="thinking_leaderboard")
