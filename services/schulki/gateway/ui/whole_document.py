"""The "Ganzes Dokument" section of the Dokumente tab: summarize or translate one stored document, with progress and Stop.

The work itself is in ``gateway/documents/whole_document.py``; this module only wires the
components. Stop cancels the running event: the call to the model in flight
is cancelled and no further part is sent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import gradio as gr

from schulki.gateway.accounts.database import Account
from schulki.gateway.context import Gateway
from schulki.gateway.documents.export import export, file_name
from schulki.gateway.documents.whole_document import LANGUAGES, LENGTHS, Done, Event, Progress
from schulki.gateway.ui.common import account_of, handles_errors
from schulki.gateway.web.i18n import Strings
from schulki.gateway.web.safe_markup import plain, safe_markdown_box


@dataclass
class WholeDocumentSection:
    """What other parts of the tab wire to: the document picker, the length choice, and the summarize handler with its outputs."""

    document: gr.Dropdown
    length: gr.Dropdown
    summarize: Callable
    outputs: list


def build_whole_document_section(gateway: Gateway, s: Strings, workspace: gr.Dropdown, table: gr.Dataframe) -> WholeDocumentSection:
    """The section below the question box; the Gateway refuses a workspace the user may not read (shown as "gibt es nicht")."""
    document, length, summarize, language, translate, stop, progress, result, txt, md, word = _components(s)
    documents = _picker_event(gateway, s)
    summarize_clicked, translate_clicked = _work_events(gateway, s, (txt, md, word))

    outputs = [progress, result, txt, md, word]
    table.change(documents, [workspace, document], document, api_name="whole_documents", show_progress="hidden")
    summarizing = summarize.click(summarize_clicked, [workspace, document, length], outputs, api_name="whole_summarize")
    translating = translate.click(translate_clicked, [workspace, document, language], outputs, api_name="whole_translate")
    stop.click(None, cancels=[summarizing, translating], api_name="whole_stop")
    return WholeDocumentSection(document, length, summarize_clicked, outputs)


def _components(
    s: Strings,
) -> tuple[
    gr.Dropdown,
    gr.Dropdown,
    gr.Button,
    gr.Dropdown,
    gr.Button,
    gr.Button,
    gr.Markdown,
    gr.Markdown,
    gr.DownloadButton,
    gr.DownloadButton,
    gr.DownloadButton,
]:
    with gr.Accordion(s["whole_document"], open=True, elem_id="whole-document-section"):
        document = gr.Dropdown([], label=s["whole_pick"], elem_id="whole-document", allow_custom_value=True)
        with gr.Row():
            length = gr.Dropdown(
                [(s[f"whole_length_{key}"], key) for key in LENGTHS], value="paragraph", label=s["whole_length"], elem_id="whole-length"
            )
            summarize = gr.Button(s["whole_summarize"], variant="primary", elem_id="whole-summarize")
            language = gr.Dropdown(
                [(name, code) for code, (name, _) in LANGUAGES.items()], value="en", label=s["whole_language"], elem_id="whole-language"
            )
            translate = gr.Button(s["whole_translate"], variant="primary", elem_id="whole-translate")
            stop = gr.Button(s["stop"], variant="stop", elem_id="whole-stop")
        progress = safe_markdown_box(elem_id="whole-progress")
        result = safe_markdown_box(label=s["whole_result"], elem_id="whole-result")
        with gr.Row():
            txt = gr.DownloadButton(s["download_txt"], visible=False, elem_id="whole-download-txt")
            md = gr.DownloadButton(s["whole_download_md"], visible=False, elem_id="whole-download-md")
            word = gr.DownloadButton(s["whole_download_docx"], visible=False, elem_id="whole-download-docx")

    return document, length, summarize, language, translate, stop, progress, result, txt, md, word


def _picker_event(gateway: Gateway, s: Strings) -> Callable[..., object]:
    @handles_errors(s)
    async def documents(name: str, current: str | None, request: gr.Request) -> object:
        """The workspace's documents; the one picked stays picked while it exists, else the newest upload is picked."""
        account = account_of(gateway, request, s)
        if not name:
            return gr.skip()
        found = await gateway.list_documents(account, name)
        ids = [d.document_id for d in found]
        newest = max(found, key=lambda d: d.created_at).document_id if found else None
        return gr.Dropdown(choices=[(d.source, d.document_id) for d in found], value=current if current in ids else newest)

    return documents


def _work_events(
    gateway: Gateway, s: Strings, buttons: tuple[gr.DownloadButton, ...]
) -> tuple[Callable[..., AsyncIterator[tuple[object, ...]]], Callable[..., AsyncIterator[tuple[object, ...]]]]:
    """Summarize and translate, each streaming its progress; a translation then offers its downloads."""

    def started(events: AsyncIterator[Event], document_id: str | None) -> AsyncIterator[Event]:
        """The work, once the Gateway took the workspace (it refuses one the user may not read when asked) and a document is picked."""
        if not document_id:
            raise gr.Error(s["whole_no_document"])
        return events

    @handles_errors(s)
    async def summarize_clicked(name: str, document_id: str | None, chosen: str, request: gr.Request) -> AsyncIterator[tuple[object, ...]]:
        account = account_of(gateway, request, s)
        hidden = gr.DownloadButton(visible=False)
        async for event in started(gateway.summarize_document(account, name, document_id or "", chosen), document_id):
            yield *_shown(s, event), hidden, hidden, hidden

    @handles_errors(s)
    async def translate_clicked(name: str, document_id: str | None, target: str, request: gr.Request) -> AsyncIterator[tuple[object, ...]]:
        account = account_of(gateway, request, s)
        hidden = gr.DownloadButton(visible=False)
        done = None
        async for event in started(gateway.translate_document(account, name, document_id or "", target), document_id):
            done = event if isinstance(event, Done) else done
            yield *_shown(s, event), hidden, hidden, hidden
        if done is None:
            return
        yield gr.skip(), gr.skip(), *await downloads(gateway, account, done, target, buttons)

    return summarize_clicked, translate_clicked


def _shown(s: Strings, event: Event) -> tuple[object, object]:
    """(progress line, result text) for an event; gr.skip() leaves a component as it is."""
    if isinstance(event, Progress):
        return event.message(s.lang), gr.skip()
    if isinstance(event, Done):
        return s["whole_done"].format(name=plain(event.source), parts=event.parts), event.text
    return gr.skip(), event.text


async def downloads(
    gateway: Gateway, account: Account, done: Done, target: str, slots: tuple[gr.DownloadButton, ...]
) -> list[gr.DownloadButton]:
    """The translation as .txt, .md and .docx, each served only to this user."""
    folder = gateway.user_files(account) / uuid.uuid4().hex
    folder.mkdir()
    buttons = []
    for button, file_format in zip(slots, ("txt", "md", "docx"), strict=True):
        target_path = folder / file_name(done.source, target, file_format)
        target_path.write_bytes(export(done.blocks, file_format, done.source))
        # Gradio serves its cached copy to anyone who knows the path; the gateway serves it only to this user
        cached = await button.async_move_resource_to_block_cache(str(target_path))
        if cached is not None:
            gateway.file_owners.add(cached, account.id)
        buttons.append(gr.DownloadButton(value=cached, visible=True))
    return buttons
