"""The Dokumente tab: the user's workspaces, upload with progress, list, delete, and questions answered with citations."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from schulki.gateway.accounts import Account
from schulki.gateway.context import Gateway
from schulki.gateway.i18n import Strings
from schulki.gateway.ui.common import account_of, discard_upload, status_banner, user_error
from schulki.retrieval.formats import EXTENSIONS

FILE_TYPES = list(EXTENSIONS)  # the one table of formats, shared with the parser
ANSWER_PROMPT = (
    "Beantworte die Frage nur mit den folgenden Auszügen aus Dokumenten. Wenn sie die Antwort nicht enthalten, sag das. "
    "Antworte kurz und auf Deutsch.\n\n{context}\n\nFrage: {question}"
)


def mib(count: int) -> str:
    """Bytes as MB with one decimal, German style (1,5)."""
    return f"{count / (1024 * 1024):.1f}".replace(".", ",")


def citation(s: Strings, hit) -> str:
    return f"{hit.source}, {s['page']} {hit.page}" if hit.page else hit.source


def build_documents_tab(gateway: Gateway, s: Strings, timer: gr.Timer, demo: gr.Blocks) -> None:
    status_banner(gateway, s, ("retrieval", "inference"), timer, demo, "documents_status")
    workspace = gr.Dropdown([], label=s["workspace"], elem_id="workspace", allow_custom_value=True)
    with gr.Row():
        upload = gr.File(label=s["upload"], file_types=FILE_TYPES, type="filepath", elem_id="document-upload")
        with gr.Column():
            upload_button = gr.Button(s["upload_button"], variant="primary", elem_id="document-upload-button")
            upload_result = gr.Markdown(elem_id="upload-result")
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
    question = gr.Textbox(label=s["question"], elem_id="document-question")
    ask = gr.Button(s["ask"], variant="primary", elem_id="document-ask")
    answer = gr.Markdown(label=s["answer"], elem_id="document-answer")

    def allowed(account: Account, name: str, write: bool = False):
        found = gateway.accounts.workspace_for(account, name, write)
        if found is None:
            raise gr.Error(s["read_only"] if write and gateway.accounts.workspace_for(account, name) else s["no_access"])
        return found

    def label(space) -> str:
        if space.name.startswith("k-"):
            return s["class_workspace"].format(name=space.name[2:])
        return s["my_documents"]

    def workspaces(request: gr.Request):
        account = account_of(gateway, request, s)
        choices = [(label(space), space.name) for space in gateway.accounts.workspaces(account)]
        return gr.Dropdown(choices=choices, value=choices[0][1])

    async def list_documents(name: str, request: gr.Request):
        account = account_of(gateway, request, s)
        if not name:
            return gr.skip(), gr.skip()
        allowed(account, name)
        try:
            documents = await gateway.services.list_documents(name)
        except Exception as error:
            raise user_error(s, error) from error
        rows = [[d.source, d.page_count, d.chunk_count, round(d.size_bytes / 1024, 1), d.document_id] for d in documents]
        return rows, gr.Dropdown(choices=[(d.source, d.document_id) for d in documents], value=None)

    async def ingest(name: str, path: str | None, request: gr.Request, progress=gr.Progress()):
        document = None
        try:  # the upload stays only in the user's workspace, not in Gradio's cache, also when it is refused
            account = account_of(gateway, request, s)
            if not path:
                raise gr.Error(s["no_file"])
            allowed(account, name, write=True)
            file_name = Path(path).name
            gateway.quotas.admit(account)
            progress(0, desc=file_name)
            async for event in gateway.services.ingest(name, Path(path), file_name):
                if event.HasField("progress"):
                    p = event.progress
                    progress((p.done / p.total) if p.total else None, desc=f"{p.stage} {p.done}/{p.total or '?'} {p.unit}")
                else:
                    document = event.document
        except Exception as error:
            raise user_error(s, error) from error
        finally:
            discard_upload(path)
        rows, choices = await list_documents(name, request)
        message = s["uploaded"].format(name=document.source, chunks=document.chunk_count, pages=document.page_count) if document else ""
        return message, rows, choices, None

    async def delete_document(name: str, document_id: str | None, request: gr.Request):
        account = account_of(gateway, request, s)
        allowed(account, name, write=True)
        if document_id:
            try:
                await gateway.services.delete_document(name, document_id)
            except Exception as error:
                raise user_error(s, error) from error
        rows, choices = await list_documents(name, request)
        return rows, choices, s["deleted"]

    async def ask_question(name: str, text: str, request: gr.Request):
        account = account_of(gateway, request, s)
        allowed(account, name)
        text = (text or "").strip()
        if not text:
            raise gr.Error(s["empty_message"])
        try:
            gateway.quotas.admit(account)
            hits = await gateway.services.search(name, text, top_k=4)
            if not hits:
                yield s["no_hits"]
                return
            sources = "\n".join(
                f"{i}. {citation(s, hit)}" for i, hit in enumerate(dict((citation(s, h), h) for h in hits).values(), start=1)
            )
            footer = f"\n\n**{s['sources']}:**\n{sources}"
            context = "\n\n".join(f"[{citation(s, hit)}]\n{hit.text}" for hit in hits)
            prompt = [{"role": "user", "content": ANSWER_PROMPT.format(context=context, question=text)}]
            answer_text = ""
            async for event in gateway.chat(account, prompt, gateway.config.gateway.max_chat_tokens, admitted=True):
                if not event.HasField("finish"):
                    answer_text += event.text
                    yield answer_text + footer
            yield answer_text + footer
        except gr.Error:
            raise
        except Exception as error:
            raise user_error(s, error) from error

    async def storage_usage(name: str, request: gr.Request):
        """ "x MB of y MB used" under the list; the table changes after every list, upload and delete."""
        account = account_of(gateway, request, s)
        if not name:
            return ""
        allowed(account, name)
        try:
            used, quota = await gateway.services.storage(name)
        except Exception as error:
            raise user_error(s, error) from error
        shown = {"used": mib(used), "quota": mib(quota)}
        if s.lang == "en":
            shown = {key: value.replace(",", ".") for key, value in shown.items()}
        return s["storage_used"].format(**shown) if quota else s["storage_unlimited"].format(**shown)

    demo.load(workspaces, None, workspace, api_name="documents_workspaces")
    table.change(storage_usage, workspace, storage, api_name="documents_storage", show_progress="hidden")
    workspace.change(list_documents, workspace, [table, doomed], api_name="documents_list")
    refresh.click(list_documents, workspace, [table, doomed], api_name="documents_refresh")
    upload_button.click(ingest, [workspace, upload], [upload_result, table, doomed, upload], api_name="documents_upload")
    delete.click(delete_document, [workspace, doomed], [table, doomed, upload_result], api_name="documents_delete")
    ask.click(ask_question, [workspace, question], answer, api_name="documents_ask")
    question.submit(ask_question, [workspace, question], answer, api_name="documents_ask_submit")
