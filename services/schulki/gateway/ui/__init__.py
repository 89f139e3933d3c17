"""The web UI: ``build_ui(gateway, lang)`` returns the Gradio Blocks, one module per tab."""

from __future__ import annotations

import html

import gradio as gr

from schulki.gateway.context import Gateway
from schulki.gateway.ui.admin import build_admin_tab
from schulki.gateway.ui.chat import build_chat_tab
from schulki.gateway.ui.common import account_of
from schulki.gateway.ui.documents import build_documents_tab
from schulki.gateway.ui.moderation import build_moderation_tab
from schulki.gateway.ui.tasks import build_tasks_tab
from schulki.gateway.ui.tasks import texts as task_texts
from schulki.gateway.ui.thinking import CSS as THINKING_CSS
from schulki.gateway.ui.thinking import build_thinking_tab, texts
from schulki.gateway.ui.transcription import build_transcription_tab
from schulki.gateway.ui.translate import build_translate_tab
from schulki.gateway.web.i18n import strings

PAGE_CSS = THINKING_CSS
"""The page's own styles, given to Gradio when the UI is mounted."""
STATUS_REFRESH_S = 10.0
"""How often a tab re-checks whether the services it needs are back."""
QUEUE_IDLE_POLL_S = 0.01
"""How often Gradio's queue looks for a new event while it has none (Gradio: every 1 ms). Each look wakes the
gateway's event loop, which streams every answer: two mounted pages at 1,000 looks a second were a third of the
loop's own CPU under a class's load. 10 ms more before an event starts is not felt beside an answer's seconds."""
QUEUE_PROGRESS_POLL_S = 0.05
"""How often Gradio's queue sends pending progress (a transcription's bar) while events run (Gradio: 10 ms)."""


def theme() -> gr.themes.Base:
    """Gradio's default look with the system's own fonts: nothing is fetched from Google Fonts."""
    return gr.themes.Default(
        font=[gr.themes.Font("system-ui"), gr.themes.Font("Segoe UI"), gr.themes.Font("Roboto"), "sans-serif"],
        font_mono=[gr.themes.Font("ui-monospace"), gr.themes.Font("DejaVu Sans Mono"), "monospace"],
    )


def serve_concurrently(demo: gr.Blocks, running_events: int) -> None:
    """Let every event run as soon as it arrives, whoever else runs the same one.

    Gradio runs one event per listener at a time unless told otherwise: three
    students pressing "Senden" were answered one after another, and a short
    recording waited behind another student's two-hour one. Without a limit
    here, each chat reaches the inference service's fair queue under its user's
    pseudonym as /v1 requests do, so a user holds at most
    inference.max_running_per_user turns and the engine batches the class; a
    transcription or an upload waits in its service's fair queue likewise.
    ``max_threads`` is the number of places Gradio's worker loop keeps for
    running events (40 by default, across every listener and user); the queue
    is rebuilt with it, as a mounted app never passes through launch().
    """
    demo.max_threads = running_events
    demo.queue(default_concurrency_limit=None)
    demo._queue.sleep_when_free = QUEUE_IDLE_POLL_S
    demo._queue.progress_update_sleep_when_free = QUEUE_PROGRESS_POLL_S


def build_ui(gateway: Gateway, lang: str = "de") -> gr.Blocks:
    s = strings(lang)
    home = "/en/" if lang == "en" else "/"
    other_home, other_lang = ("/", "de") if lang == "en" else ("/en/", "en")
    # Gradio copies uploads and downloads into its cache; delete_cache removes them after an hour.
    with gr.Blocks(title="schulki", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        timer = gr.Timer(STATUS_REFRESH_S)
        # Markdown, not gr.HTML: Gradio 6 evaluates an HTML component's value as a JavaScript template (new Function),
        # which would run "${…}" in a user's name and needs 'unsafe-eval' in the Content-Security-Policy.
        # Not sanitised in the browser: Gradio's sanitiser gives every link target="_blank", so "Abmelden" and the
        # language switch opened new tabs and left this one signed in. The header holds only what personalise() builds,
        # with the account's name and role escaped.
        header = gr.Markdown(elem_id="header", sanitize_html=False)
        with gr.Tabs():
            with gr.Tab(s["tab_chat"], id="chat"):
                build_chat_tab(gateway, s, timer, demo)
            with gr.Tab(task_texts(s)["tab"], id="tasks"):
                build_tasks_tab(gateway, s, demo)
            with gr.Tab(s["tab_documents"], id="documents"):
                build_documents_tab(gateway, s, timer, demo)
            with gr.Tab(s["tab_transcription"], id="transcription"):
                build_transcription_tab(gateway, s, timer, demo)
            with gr.Tab(s["tab_translate"], id="translate"):
                build_translate_tab(gateway, s, timer, demo)
            with gr.Tab(texts(s)["tab"], id="thinking"):
                build_thinking_tab(gateway, s, timer, demo)
            build_moderation_tab(gateway, s, demo)
            with gr.Tab(s["tab_admin"], id="admin", visible=False) as admin_tab:
                build_admin_tab(gateway, s, demo)

        def personalise(request: gr.Request) -> tuple[str, gr.Tab]:
            account = account_of(gateway, request, s)
            links = (
                f'<div style="display:flex;justify-content:space-between;align-items:center"><strong style="font-size:1.4em">schulki</strong>'
                f"<span>{s['signed_in_as']} <b>{html.escape(account.name)}</b> ({html.escape(account.role)}) · "
                f'<a href="{other_home}">{s["other_language"]}</a> · <a href="/logout?lang={lang}" id="logout">{s["logout"]}</a></span></div>'
            )
            return links, gr.Tab(visible=account.role == "admin")

        demo.load(personalise, None, [header, admin_tab], api_name="whoami")
    serve_concurrently(demo, gateway.config.gateway.ui_running_events)
    demo.schulki_home = home
    demo.schulki_other_lang = other_lang
    return demo
