"""The agent's tools: each is one use case of the Gateway, called for the acting account with the Gateway's own checks.

No tool runs code or a shell, and none takes a user: a workspace argument is
checked by ``Gateway.workspace_access`` for the account that runs the agent
(inside ``Gateway.search``, ``ingest``, ``list_documents`` and
``summarize_document``), so a name the model was talked into (by a web page, a
document) reaches nothing the user could not reach in the Dokumente tab. Web
pages come through the retrieval service's FetchPage, with its address checks
(``retrieval.allowed_url_hosts``). What a tool found goes back to the model as
data; what the user sees of it is the short German line of the trace.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from schulki.config import AgentsConfig
from schulki.gateway.accounts.database import Account, Accounts, Workspace
from schulki.gateway.documents import whole_document
from schulki.gateway.documents.whole_document import DocumentRefused, Done
from schulki.gateway.documents.workspaces import WorkspaceRefused
from schulki.gateway.nodes.clients import ServiceDown
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

WORKSPACE = "arbeitsbereich"
"""The optional argument that names a workspace; empty or absent means the user's own."""


class Door(Protocol):
    """The Gateway's use cases the tools call (``context.Gateway``); each checks the account it is given."""

    accounts: Accounts

    def workspaces(self, account: Account) -> list[Workspace]: ...

    async def search(self, account: Account, workspace: str, query: str, top_k: int = 4) -> list[retrieval_pb.Hit]: ...

    def ingest(
        self, account: Account, workspace: str, path: Path, file_name: str
    ) -> AsyncIterator[retrieval_pb.IngestDocumentResponse]: ...

    async def read_web_page(self, account: Account, url: str, max_chars: int) -> retrieval_pb.FetchPageResponse: ...

    async def list_documents(self, account: Account, workspace: str) -> list[retrieval_pb.Document]: ...

    def summarize_document(
        self, account: Account, workspace: str, document_id: str, length: str = "paragraph", model: str | None = None
    ) -> AsyncGenerator[whole_document.Event, None]: ...


@dataclass
class ToolResult:
    """What a tool did: ``shown`` for the trace ("3 Treffer"), ``data`` for the model, and the tokens it used."""

    shown: str
    data: str
    tokens: int = 0


@dataclass
class ToolCall:
    """One run's view of the gateway: the acting account and the limits."""

    gateway: Door
    account: Account
    settings: AgentsConfig

    def workspace(self, arguments: dict[str, str]) -> str:
        """The workspace an action names, or the user's own (the first the user sees)."""
        return arguments.get(WORKSPACE, "").strip() or self.gateway.workspaces(self.account)[0].name

    def cut(self, text: str) -> str:
        limit = self.settings.result_chars
        return text if len(text) <= limit else text[:limit] + " …"


@dataclass(frozen=True)
class Tool:
    """A tool the model may pick: its name in the JSON, its German label, its arguments (required first) and the work."""

    name: str
    label: str
    arguments: tuple[str, ...]
    optional: tuple[str, ...]
    run: Callable[[ToolCall, dict[str, str]], Awaitable[ToolResult]]
    describe: str

    def quoted(self, arguments: dict[str, str]) -> str:
        """The trace's words for the call: the label and its first argument, „quoted“ and shortened."""
        first = arguments.get(self.arguments[0], "") if self.arguments else ""
        first = " ".join(first.split())
        return f"{self.label} „{first[:80] + ('…' if len(first) > 80 else '')}“" if first else self.label


async def _search(call: ToolCall, arguments: dict[str, str]) -> ToolResult:
    hits = await call.gateway.search(call.account, call.workspace(arguments), arguments["suchanfrage"], top_k=4)
    data = "\n\n".join(f"[{hit.source}{f', S. {hit.page}' if hit.page else ''}] {hit.text}" for hit in hits) or "Keine Treffer."
    return ToolResult(f"{len(hits)} Treffer", call.cut(data))


async def _read_page(call: ToolCall, arguments: dict[str, str]) -> ToolResult:
    page = await call.gateway.read_web_page(call.account, arguments["adresse"], call.settings.result_chars)
    return ToolResult(f"{len(page.text)} Zeichen gelesen", call.cut(page.text) or "Die Seite enthält keinen Text.")


def _file_name(title: str) -> str:
    stem = re.sub(r"[^\w-]+", "-", title, flags=re.UNICODE).strip("-")[:60] or "Notiz"
    return f"{stem}.md"


async def _save_note(call: ToolCall, arguments: dict[str, str]) -> ToolResult:
    workspace = call.workspace(arguments)
    title = " ".join(arguments["titel"].split())[:120] or "Notiz"
    name = _file_name(title)
    with tempfile.TemporaryDirectory(prefix="schulki-note-") as folder:
        path = Path(folder) / name
        path.write_text(f"# {title}\n\n{arguments['text'].strip()}\n", encoding="utf-8")
        async for event in call.gateway.ingest(call.account, workspace, path, name):
            if event.HasField("document"):
                return ToolResult(f"gespeichert als „{name}“", f"Die Notiz ist als {name} gespeichert.")
    raise ServiceDown("retrieval")  # an ingest stream ends with its document; one without it broke off


async def _summarize(call: ToolCall, arguments: dict[str, str]) -> ToolResult:
    workspace = call.workspace(arguments)
    wanted = arguments["dokument"].strip()
    documents = await call.gateway.list_documents(call.account, workspace)
    found = next((d for d in documents if wanted in (d.document_id, d.source) or d.source.endswith("/" + wanted)), None)
    if found is None:
        names = ", ".join(d.source for d in documents[:20]) or "keine"
        return ToolResult(f"kein Dokument „{wanted[:80]}“", f"Kein Dokument heißt so. Vorhandene Dokumente: {names}")
    before = call.gateway.accounts.tokens_today(call.account.id)
    summary = ""
    async for event in call.gateway.summarize_document(call.account, workspace, found.document_id):
        if isinstance(event, Done):
            summary = event.text
    used = call.gateway.accounts.tokens_today(call.account.id) - before  # the summary's own model calls, counted by the quota
    return ToolResult(f"Zusammenfassung von „{found.source}“ ({len(summary)} Zeichen)", call.cut(summary), max(0, used))


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            "dokumente_suchen",
            "Dokumente durchsuchen",
            ("suchanfrage",),
            (WORKSPACE,),
            _search,
            "sucht in deinen Dokumenten (suchanfrage: Stichwörter)",
        ),
        Tool(
            "webseite_lesen",
            "Webseite lesen",
            ("adresse",),
            (),
            _read_page,
            "liest den Text einer Webseite (adresse: http- oder https-Adresse)",
        ),
        Tool(
            "notiz_speichern",
            "Notiz speichern",
            ("titel", "text"),
            (WORKSPACE,),
            _save_note,
            "speichert eine Notiz als Dokument in deinen Dokumenten (titel, text)",
        ),
        Tool(
            "dokument_zusammenfassen",
            "Dokument zusammenfassen",
            ("dokument",),
            (WORKSPACE,),
            _summarize,
            "fasst ein gespeichertes Dokument zusammen (dokument: sein Name)",
        ),
    )
}
"""Every tool the agent mode knows; a run may use those the user ticked."""

REFUSALS = (WorkspaceRefused, DocumentRefused, ServiceDown, grpc.RpcError)
"""A tool's errors that end its step, not the run: the model reads the refusal and may try something else."""


def refusal(error: Exception) -> str:
    """A refused tool call in German, for the trace and for the model."""
    if isinstance(error, WorkspaceRefused):
        if error.read_only:
            return f"Der Arbeitsbereich „{error.name}“ darf nur gelesen werden."
        return f"Auf den Arbeitsbereich „{error.name}“ hast du keinen Zugriff."
    if isinstance(error, DocumentRefused):
        return error.message
    if isinstance(error, ServiceDown):
        return "Der Dienst ist gerade nicht erreichbar."
    if isinstance(error, grpc.RpcError):
        return error.details() or error.code().name
    return str(error)
