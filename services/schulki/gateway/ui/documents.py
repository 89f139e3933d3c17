"""The Dokumente tab: the user's workspaces, upload with progress, list, delete, and questions answered with citations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from schulki.gateway.accounts.database import Workspace
from schulki.gateway.context import Gateway
from schulki.gateway.documents.questions import FOLLOW_UP_QUESTIONS, Cited, DocumentQuestion, Passage, Piece, Turn
from schulki.gateway.ui.common import account_of, discard_upload, handles_errors, status_banner
from schulki.gateway.ui.whole_document import build_whole_document_section
from schulki.gateway.web.i18n import Strings
from schulki.gateway.web.safe_markup import plain, safe_markdown_box
from schulki.retrieval.formats import EXTENSIONS
from schulki.retrieval.v1.retrieval_service_pb2 import Document, Hit, IngestProgress

MAX_URL_CHARS = 2000
"""Longest web address the tab accepts (what browsers and servers commonly handle)."""
FILE_TYPES = list(EXTENSIONS)  # the one table of formats, shared with the parser
MAX_CONVERSATION_TURNS = 20
"""Questions and answers the tab keeps of a conversation (Gateway.ask_documents leaves out the oldest that do not fit)."""


def mib(count: int) -> str:
    """Bytes as MB with one decimal, German style (1,5)."""
    return f"{count / (1024 * 1024):.1f}".replace(".", ",")


def citation(s: Strings, hit: Hit | Passage) -> str:
    return f"{hit.source}, {s['page']} {hit.page}" if hit.page else hit.source


def earlier_turns(conversation: dict | None, workspace: str) -> tuple[Turn, ...]:
    """The conversation a question follows: the tab's turns in this workspace (none after the workspace changed)."""
    if not conversation or conversation.get("workspace") != workspace:
        return ()
    return tuple(Turn(role, content) for role, content in conversation.get("turns", []))


def sources_footer(s: Strings, passages: Sequence[Passage], history: Sequence[Turn]) -> str:
    """The answer's sources, each file and page once in the order of the passages; for a follow-up, what it was searched with."""
    cited = dict.fromkeys(citation(s, passage) for passage in passages)
    footer = f"\n\n**{s['sources']}:**\n" + "\n".join(f"{i}. {plain(where)}" for i, where in enumerate(cited, start=1))
    earlier = [turn.content for turn in history if turn.role == "user"][-FOLLOW_UP_QUESTIONS:] if FOLLOW_UP_QUESTIONS else []
    if earlier:
        footer += "\n\n_" + s["follow_up"].format(questions=", ".join(f"„{plain(q[:80])}“" for q in earlier)) + "_"
    return footer


def stage_text(s: Strings, progress: IngestProgress, fetching: bool = False) -> str:
    """One ingest progress report in words: "Einbetten 40/120 chunks"; receiving a web page is "Abrufen"."""
    stages = dict(zip(("receiving", "parsing", "embedding", "storing"), s["ingest_stages"].split("|"), strict=False))
    stage = s["ingest_stages"].split("|")[4] if fetching and progress.stage == "receiving" else stages.get(progress.stage, progress.stage)
    return f"{stage} {progress.done}/{progress.total or '?'} {progress.unit}"


def web_address(url: str) -> str:
    """What a student typed as a web address; "www.example.org/seite" is taken as https, as browsers do."""
    url = url.strip()
    return url if "://" in url or not url else f"https://{url}"


Event = Callable[..., object]
"""A Gradio event handler: Gradio reads its inputs from its signature."""
ListDocuments = Callable[[str, gr.Request], Awaitable[tuple[object, object]]]


def build_documents_tab(gateway: Gateway, s: Strings, timer: gr.Timer, demo: gr.Blocks) -> None:
    status_banner(gateway, s, ("retrieval", "inference"), timer, demo, "documents_status")
    workspace = gr.Dropdown([], label=s["workspace"], elem_id="workspace", allow_custom_value=True)
    upload, upload_button, upload_result = _upload_row(s)
    web_url, web_button, web_summarize = _web_row(s)
    table, storage, refresh, doomed, delete = _document_list(s)
    question, ask, new_conversation, answer, conversation = _question_box(s)
    # Which workspace the user may read or change is the Gateway's to check, inside each call that names one.
    workspaces, list_documents, storage_usage = _list_events(gateway, s)
    ingest = _upload_event(gateway, s, list_documents)
    add_web_page, add_web_page_to_summarize = _web_page_events(gateway, s, list_documents)
    delete_document = _delete_event(gateway, s, list_documents)
    ask_question = _question_event(gateway, s)

    demo.load(workspaces, None, workspace, api_name="documents_workspaces")
    table.change(storage_usage, workspace, storage, api_name="documents_storage", show_progress="hidden")
    workspace.change(list_documents, workspace, [table, doomed], api_name="documents_list")
    refresh.click(list_documents, workspace, [table, doomed], api_name="documents_refresh")
    upload_button.click(ingest, [workspace, upload], [upload_result, table, doomed, upload], api_name="documents_upload")
    web_button.click(add_web_page, [workspace, web_url], [upload_result, table, doomed, web_url], api_name="documents_add_url")
    web_url.submit(add_web_page, [workspace, web_url], [upload_result, table, doomed, web_url], api_name="documents_add_url_submit")
    delete.click(delete_document, [workspace, doomed], [table, doomed, upload_result], api_name="documents_delete")
    ask.click(ask_question, [workspace, question, conversation], [answer, conversation], api_name="documents_ask")
    question.submit(ask_question, [workspace, question, conversation], [answer, conversation], api_name="documents_ask_submit")
    new_conversation.click(lambda: ("", None), None, [answer, conversation], api_name="documents_new_conversation")
    whole = build_whole_document_section(gateway, s, workspace, table)
    # "Summarize this page": store it, pick it in the "Ganzes Dokument" section, then summarize it there (Stop works as there).
    web_summarize.click(
        add_web_page_to_summarize,
        [workspace, web_url],
        [upload_result, table, doomed, web_url, whole.document],
        api_name="documents_add_url_summarize",
    ).success(whole.summarize, [workspace, whole.document, whole.length], whole.outputs)


def _upload_row(s: Strings) -> tuple[gr.File, gr.Button, gr.Markdown]:
    with gr.Row():
        upload = gr.File(label=s["upload"], file_types=FILE_TYPES, type="filepath", elem_id="document-upload")
        with gr.Column():
            upload_button = gr.Button(s["upload_button"], variant="primary", elem_id="document-upload-button")
            upload_result = safe_markdown_box(elem_id="upload-result")
    return upload, upload_button, upload_result


def _web_row(s: Strings) -> tuple[gr.Textbox, gr.Button, gr.Button]:
    with gr.Row():
        web_url = gr.Textbox(label=s["web_url"], elem_id="web-url", max_length=MAX_URL_CHARS, scale=3)
        web_button = gr.Button(s["web_add"], elem_id="web-add-button", scale=1)
        web_summarize = gr.Button(s["web_add_summarize"], elem_id="web-summarize-button", scale=1)
    return web_url, web_button, web_summarize


def _document_list(s: Strings) -> tuple[gr.Dataframe, gr.Markdown, gr.Button, gr.Dropdown, gr.Button]:
    table = gr.Dataframe(
        headers=[s["col_file"], s["col_pages"], s["col_chunks"], s["col_size"], s["col_id"]],
        label=s["documents"],
        interactive=False,
        elem_id="document-list",
    )
    storage = gr.Markdown(elem_id="storage-usage")
    with gr.Row():
        refresh = gr.Button(s["refresh"])
        doomed = gr.Dropdown([], label=s["delete_document"], allow_custom_value=True)
        delete = gr.Button(s["delete"], variant="stop")
    return table, storage, refresh, doomed, delete


def _question_box(s: Strings) -> tuple[gr.Textbox, gr.Button, gr.Button, gr.Markdown, gr.State]:
    question = gr.Textbox(label=s["question"], elem_id="document-question")
    with gr.Row():
        ask = gr.Button(s["ask"], variant="primary", elem_id="document-ask")
        new_conversation = gr.Button(s["new_conversation"], elem_id="document-new-conversation")
    # The questions and answers so far, {"workspace": name, "turns": [(role, text), …]}; another workspace starts anew.
    conversation = gr.State(None)
    answer = safe_markdown_box(label=s["answer"], elem_id="document-answer")
    return question, ask, new_conversation, answer, conversation


def _list_events(gateway: Gateway, s: Strings) -> tuple[Event, ListDocuments, Event]:
    """The workspace picker, the document list and the storage used."""

    def label(space: Workspace) -> str:
        if space.name.startswith("k-"):
            return s["class_workspace"].format(name=space.name[2:])
        if "-" in space.name[2:]:
            return space.label  # a vector store created through the API (u-<id>-<random>), with the name its owner gave it
        return s["my_documents"]

    def workspaces(request: gr.Request) -> gr.Dropdown:
        account = account_of(gateway, request, s)
        choices = [(label(space), space.name) for space in gateway.workspaces(account)]
        return gr.Dropdown(choices=choices, value=choices[0][1])

    @handles_errors(s)
    async def list_documents(name: str, request: gr.Request) -> tuple[object, object]:
        account = account_of(gateway, request, s)
        if not name:
            return gr.skip(), gr.skip()
        documents = await gateway.list_documents(account, name)  # WorkspaceRefused: "gibt es nicht" (handles_errors)
        rows = [[d.source, d.page_count, d.chunk_count, round(d.size_bytes / 1024, 1), d.document_id] for d in documents]
        return rows, gr.Dropdown(choices=[(d.source, d.document_id) for d in documents], value=None)

    @handles_errors(s)
    async def storage_usage(name: str, request: gr.Request) -> str:
        """ "x MB of y MB used" under the list; the table changes after every list, upload and delete."""
        account = account_of(gateway, request, s)
        if not name:
            return ""
        used, quota = await gateway.storage(account, name)
        shown = {"used": mib(used), "quota": mib(quota)}
        if s.lang == "en":
            shown = {key: value.replace(",", ".") for key, value in shown.items()}
        return s["storage_used"].format(**shown) if quota else s["storage_unlimited"].format(**shown)

    return workspaces, list_documents, storage_usage


def _upload_event(gateway: Gateway, s: Strings, list_documents: ListDocuments) -> Event:
    """Upload a file into the workspace, with progress."""

    @handles_errors(s)
    async def ingest(
        name: str, path: str | None, request: gr.Request, progress: gr.Progress = gr.Progress()
    ) -> tuple[str, object, object, None]:
        document = None
        try:  # the upload stays only in the user's workspace, not in Gradio's cache, also when it is refused
            account = account_of(gateway, request, s)
            if not path:
                raise gr.Error(s["no_file"])
            file_name = Path(path).name
            events = gateway.ingest(account, name, Path(path), file_name)
            progress(0, desc=file_name)
            async for event in events:
                if event.HasField("progress"):
                    p = event.progress
                    progress((p.done / p.total) if p.total else None, desc=stage_text(s, p))
                else:
                    document = event.document
        finally:
            discard_upload(path)
        rows, choices = await list_documents(name, request)
        message = (
            s["uploaded"].format(name=plain(document.source), chunks=document.chunk_count, pages=document.page_count) if document else ""
        )
        return message, rows, choices, None

    return ingest


def _web_page_events(gateway: Gateway, s: Strings, list_documents: ListDocuments) -> tuple[Event, Event]:
    """Add a web page, or add one to summarize it next."""

    @handles_errors(s)
    async def add_web_page(
        name: str, url: str, request: gr.Request, progress: gr.Progress = gr.Progress()
    ) -> tuple[str, object, object, str]:
        """Fetch a web page into the workspace, as an upload is stored: same access rules, request quota and storage quota."""
        _document, message, rows, choices = await fetch_web_page(name, url, request, progress)
        return message, rows, choices, ""

    @handles_errors(s)
    async def add_web_page_to_summarize(
        name: str, url: str, request: gr.Request, progress: gr.Progress = gr.Progress()
    ) -> tuple[str, object, object, str, gr.Dropdown]:
        """The same, and the stored page becomes the document the "Ganzes Dokument" section summarizes next
        (its other documents come back into the picker when the list's change refreshes it)."""
        document, message, rows, choices = await fetch_web_page(name, url, request, progress)
        if document is None:
            raise gr.Error(s["no_url"])
        return message, rows, choices, "", gr.Dropdown(choices=[(document.source, document.document_id)], value=document.document_id)

    async def fetch_web_page(
        name: str, url: str, request: gr.Request, progress: gr.Progress
    ) -> tuple[Document | None, str, object, object]:
        account = account_of(gateway, request, s)
        url = web_address(url or "")
        if not url:
            raise gr.Error(s["no_url"])
        if len(url) > MAX_URL_CHARS:
            raise gr.Error(s["url_too_long"].format(max=MAX_URL_CHARS))
        document = None
        events = gateway.ingest_url(account, name, url)
        progress(0, desc=s["ingest_stages"].split("|")[4])
        async for event in events:
            if event.HasField("progress"):
                p = event.progress
                progress((p.done / p.total) if p.total else None, desc=stage_text(s, p, fetching=True))
            else:
                document = event.document
        rows, choices = await list_documents(name, request)
        message = s["web_added"].format(name=plain(document.source), chunks=document.chunk_count) if document else ""
        return document, message, rows, choices

    return add_web_page, add_web_page_to_summarize


def _delete_event(gateway: Gateway, s: Strings, list_documents: ListDocuments) -> Event:
    @handles_errors(s)
    async def delete_document(name: str, document_id: str | None, request: gr.Request) -> tuple[object, object, str]:
        account = account_of(gateway, request, s)
        await gateway.delete_document(account, name, document_id)  # WorkspaceRefused: "nur lesen" or "gibt es nicht"
        rows, choices = await list_documents(name, request)
        return rows, choices, s["deleted"]

    return delete_document


def _question_event(gateway: Gateway, s: Strings) -> Event:
    """A question answered from the workspace's passages, with their sources."""

    @handles_errors(s)
    async def ask_question(name: str, text: str, so_far: dict | None, request: gr.Request) -> AsyncIterator[tuple[str, Any]]:
        """Answer through Gateway.ask_documents (access, quota, the user's model, the passage budget), following the
        conversation in this workspace; the answer streams with its sources, and the question joins the conversation."""
        account = account_of(gateway, request, s)
        text = (text or "").strip()
        if not text:
            raise gr.Error(s["empty_message"])
        history = earlier_turns(so_far, name)
        events = gateway.ask_documents(account, DocumentQuestion(workspace=name, question=text, history=history))
        answer_text, footer = "", ""
        try:
            async for event in events:
                if isinstance(event, Cited):
                    if not event.passages:
                        yield s["no_hits"], gr.skip()
                        return
                    footer = sources_footer(s, event.passages, history)
                elif isinstance(event, Piece):
                    # moderation's fixed answer takes the place of what was shown, as in the Chat tab, and is not
                    # from the documents: no sources under it
                    answer_text = event.text if event.replaces else answer_text + event.text
                    footer = "" if event.replaces else footer
                    yield answer_text + footer, gr.skip()
        finally:
            await events.aclose()  # Stop, or a closed page: the model's answer is cancelled
        turns = [*history, Turn("user", text), Turn("assistant", answer_text.strip())][-MAX_CONVERSATION_TURNS:]
        yield answer_text + footer, {"workspace": name, "turns": [(turn.role, turn.content) for turn in turns]}

    return ask_question
