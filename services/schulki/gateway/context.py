"""The gateway's shared state (settings, accounts, quotas, service clients, the pseudonym secret) and its use cases.

``Gateway`` is the one door to the services: chat, scoring a text and the next tokens, embed, transcribe,
search, ingest (a file or a web page), API uploads, vector stores, whole-document
work and document questions are its methods, and each counts the request
against the user's quotas and sends it to a service under the user's
pseudonym. The service clients and the quotas are private to it; the UI tabs
and the /v1 routes call its methods and only translate input and output. The
request id travels with the context (``logs.request_id``, set per API request
and per UI event), so every service call carries it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

from schulki.config import Config
from schulki.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from schulki.gateway.accounts.database import Account, Accounts, database_url
from schulki.gateway.accounts.login_limits import LoginLimiter
from schulki.gateway.accounts.quotas import Quotas, estimate_prompt_tokens
from schulki.gateway.documents import whole_document
from schulki.gateway.documents.file_records import FileRecords
from schulki.gateway.documents.questions import AnswerEvent, DocumentQuestion, answer_question, check_question
from schulki.gateway.documents.stores import Stores
from schulki.gateway.documents.workspaces import WorkspaceRefused, workspace_access
from schulki.gateway.nodes.chat_models import ChatModels
from schulki.gateway.nodes.clients import Node, Services
from schulki.gateway.web.file_owners import FileOwners
from schulki.inference.v1 import inference_service_pb2 as inference_pb
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from schulki.transcription.v1 import transcription_service_pb2 as transcription_pb

T = TypeVar("T")
StoreIngest = Callable[[str, Path | None, str, str], AsyncIterator[retrieval_pb.IngestDocumentResponse]]
"""Ingest into a vector store's workspace (workspace, an upload's path or None, else a web page's url, the file name),
for a user whose request was counted already; only ``Gateway``'s vector store use cases hand one out."""

SESSION_COOKIE = "schulki_session"


def _secret(config: Config) -> bytes:
    if config.gateway.secret_key is not None:
        return config.gateway.secret_key.get_secret_value().encode()
    path = Path(config.data_dir) / "gateway" / "secret"
    private_folder(path.parent)
    try:  # created private from its first byte: no moment in which others could read it
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def private_folder(path: Path) -> Path:
    """A folder only the gateway's user can enter (accounts, uploads and transcripts hold students' data)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


class Gateway:
    """Everything the routes and the UI need, built once per app; the one door to the services and the quotas."""

    def __init__(
        self,
        config: Config,
        accounts: Accounts,
        quotas: Quotas,
        services: Services,
        login_limiter: LoginLimiter,
        secret: bytes,
        models: ChatModels,
    ) -> None:
        self.config = config
        self.accounts = accounts
        self._quotas = quotas
        self._services = services
        self.login_limiter = login_limiter
        self.secret = secret
        self.models = models
        self.file_owners = FileOwners(accounts.engine)
        self.stores = Stores(accounts.engine)
        """The API's vector stores and their files; the tables live in the accounts database."""
        self.file_records = FileRecords(accounts.engine)
        """The uploads of /v1/files, facts and bytes, in the accounts database (every gateway on it knows them)."""

    @classmethod
    def create(cls, config: Config) -> Gateway:
        accounts = Accounts(database_url(config.gateway.database_url, Path(config.data_dir)))
        services = Services(config)
        models = ChatModels(config, accounts, services)
        services.default_model = models.default  # chats that name no model (translation, documents) use schulki-chat's model
        return cls(
            config=config,
            accounts=accounts,
            quotas=Quotas(config.gateway, accounts),
            services=services,
            login_limiter=LoginLimiter(config.gateway, accounts.engine),
            secret=_secret(config),
            models=models,
        )

    def pseudonym(self, account: Account) -> str:
        """A stable id for the services' fairness and quotas that does not reveal who the user is."""
        return hmac.new(self.secret, f"user:{account.id}".encode(), hashlib.sha256).hexdigest()[:20]

    # -- the clients' life and health (the app's lifespan, /healthz, the Admin tab, the service banners) ----------

    async def start(self) -> None:
        await self._services.start()

    async def close(self) -> None:
        await self._services.close()

    def available(self, service: str) -> bool:
        """Whether a node of the service (inference, embeddings, transcription, retrieval) answers its health checks."""
        return self._services.available(service)

    def service_names(self) -> list[str]:
        return list(self._services.pools)

    def nodes(self) -> dict[str, list[Node]]:
        """Every node of every service, by service name, with its health (for the Admin tab and the roll-out's drain)."""
        return {name: list(pool.nodes) for name, pool in self._services.pools.items()}

    def inference_nodes(self) -> list[Node]:
        return self._services.inference_nodes()

    async def check_health(self) -> None:
        await self._services.check_health()

    async def embeddings_model_name(self) -> str:
        return await self._services.embeddings_model_name()

    # -- use cases: each counts against the user's quotas, once ----------------------------------------------------

    def chat(
        self,
        account: Account,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
        model: str | None = None,
        logprobs: int | None = None,
    ) -> AsyncIterator[inference_pb.ChatResponse]:
        """``services.chat`` with the user's pseudonym and a token reservation: prompt and longest answer are set aside
        against the daily quota before the request starts, and settled with the real usage when it ends. ``logprobs``:
        None for none, else each token's log-probability and that many alternatives, as token events before its text."""
        return self._chat(account, messages, max_tokens, temperature, stop, seed, model, count_request=True, logprobs=logprobs)

    async def _chat(
        self,
        account: Account,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
        model: str | None = None,
        count_request: bool = True,
        logprobs: int | None = None,
    ) -> AsyncIterator[inference_pb.ChatResponse]:
        """The chat of ``chat``; ``count_request`` False for a call that is part of a job counted as one request already."""
        reservation = self._quotas.reserve(account, estimate_prompt_tokens(messages), max_tokens, count_request=count_request)
        try:
            async for event in self._services.chat(
                messages, self.pseudonym(account), reservation.max_tokens, temperature, stop or (), seed, model=model, logprobs=logprobs
            ):
                if event.HasField("finish"):
                    reservation.settle(event.finish.usage.total_tokens)
                else:
                    reservation.streamed = True
                yield event
        finally:
            reservation.release()

    async def score_text(
        self, account: Account, text: str, model: str | None = None, top_logprobs: int = 0
    ) -> inference_pb.ScoreTextResponse:
        """How likely the user's model finds each token of a text (perplexity, the most surprising word): one request,
        and the text's tokens count against the daily quota as a chat's prompt does."""
        served = self.models.resolve(account, model)
        reservation = self._quotas.reserve(account, estimate_prompt_tokens([{"content": text}]), 1)
        try:
            response = await self._services.score_text(text, self.pseudonym(account), served, top_logprobs)
            reservation.settle(len(response.tokens) + 1)
            return response
        finally:
            reservation.release()

    async def next_tokens(
        self, account: Account, text: str, count: int = 10, temperature: float = 1.0, model: str | None = None
    ) -> inference_pb.NextTokensResponse:
        """The most likely next tokens after the beginning of a text, at a temperature, under the user's model: one
        request, and the beginning's tokens count against the daily quota as a chat's prompt does."""
        served = self.models.resolve(account, model)
        reservation = self._quotas.reserve(account, estimate_prompt_tokens([{"content": text}]), 1)
        try:
            response = await self._services.next_tokens(text, self.pseudonym(account), served, count, temperature)
            reservation.settle(response.prompt_tokens)
            return response
        finally:
            reservation.release()

    async def embed(self, account: Account, texts: list[str]) -> embeddings_pb.EmbedResponse:
        """Embed texts for a user: one request against the quota, and their tokens counted once the vectors are back."""
        self._quotas.admit(account)
        response = await self._services.embed(texts, self.pseudonym(account))
        self._quotas.add_tokens(account, sum(embedding.token_count for embedding in response.embeddings))
        return response

    async def transcribe(
        self, account: Account, chunks: AsyncIterator[bytes] | Iterable[bytes], file_name: str, language: str = ""
    ) -> AsyncIterator[transcription_pb.TranscribeResponse]:
        """Transcribe a recording for a user (one request against the quota), streaming language, segments and summary."""
        self._quotas.admit(account)
        async for event in self._services.transcribe(chunks, file_name, self.pseudonym(account), language):
            yield event

    async def search(self, account: Account, workspace: str, query: str, top_k: int = 4) -> list[retrieval_pb.Hit]:
        """Search a workspace for a user (one request against the quota); the caller checked that the user may read it."""
        self._quotas.admit(account)
        return await self._services.search(workspace, query, top_k=top_k)

    def ingest(self, account: Account, workspace: str, path: Path, file_name: str) -> AsyncIterator[retrieval_pb.IngestDocumentResponse]:
        """Store an uploaded file in a workspace for a user (one request against the quota, counted now): progress, then
        the document. The caller checked that the user may write the workspace; its storage quota is the service's."""
        self._quotas.admit(account)
        return self._services.ingest(workspace, path, file_name, self.pseudonym(account))

    def ingest_url(self, account: Account, workspace: str, url: str) -> AsyncIterator[retrieval_pb.IngestDocumentResponse]:
        """Store the web page at url in a workspace for a user, as ``ingest`` stores a file."""
        self._quotas.admit(account)
        return self._services.ingest_url(workspace, url, self.pseudonym(account))

    async def upload_file(self, account: Account, store: Callable[[], Awaitable[T]]) -> T:
        """An upload through /v1/files: one request against the quota (no filling the disk in a loop), then ``store``."""
        self._quotas.admit(account)
        return await store()

    async def create_vector_store(self, account: Account, workspace: str) -> StoreIngest:
        """Make the retrieval workspace of a vector store the user created (one request against the quota); the ingest
        it returns runs the files named at creation, counted with it."""
        self._quotas.admit(account)
        await self._services.ensure_workspace(workspace)
        return self._store_ingest(account)

    def add_to_vector_store(self, account: Account) -> StoreIngest:
        """Adding a file or web page to a vector store: one request against the quota, counted now, before the request is
        checked; the ingest it returns runs later, in the background, counted with it."""
        self._quotas.admit(account)
        return self._store_ingest(account)

    def _store_ingest(self, account: Account) -> StoreIngest:
        def ingest(workspace: str, path: Path | None, url: str, file_name: str) -> AsyncIterator[retrieval_pb.IngestDocumentResponse]:
            if path is not None:
                return self._services.ingest(workspace, path, file_name, self.pseudonym(account))
            return self._services.ingest_url(workspace, url, self.pseudonym(account))

        return ingest

    def summarize_document(
        self, account: Account, workspace: str, document_id: str, length: str = "paragraph", model: str | None = None
    ) -> AsyncGenerator[whole_document.Event, None]:
        """Summarize a whole stored document for a user (one request; its tokens count like a chat's)."""
        return whole_document.summarize_document(_DocumentSession(self, account), workspace, document_id, length, model)

    def translate_document(
        self, account: Account, workspace: str, document_id: str, language: str, model: str | None = None
    ) -> AsyncGenerator[whole_document.Event, None]:
        """Translate a whole stored document for a user (one request; its tokens count like a chat's)."""
        return whole_document.translate_document(_DocumentSession(self, account), workspace, document_id, language, model)

    async def ask_documents(self, account: Account, question: DocumentQuestion) -> AsyncGenerator[AnswerEvent, None]:
        """Answer a question about a workspace's documents with the user's model: the workspace must be one the user may
        read, the question counts as one request before anything is searched, and the answer's tokens are reserved as
        for a chat; then the cited passages, the answer piece by piece, and its end (``gateway/documents/questions.py``)."""
        check_question(question)
        workspace_access(self, account, question.workspace)
        model = self.models.resolve(account, question.model)
        self._quotas.admit(account)

        def ask(
            messages: list[dict[str, str]], max_tokens: int, temperature: float | None, stop: list[str], seed: int | None
        ) -> AsyncIterator[inference_pb.ChatResponse]:
            return self._chat(account, messages, max_tokens, temperature, stop, seed, model, count_request=False)

        async for event in answer_question(self._services, self.config.gateway, question, model, ask):
            yield event

    # -- documents and workspaces; the caller checked that the user may read (or write) the workspace --------------

    async def list_documents(self, workspace: str) -> list[retrieval_pb.Document]:
        return await self._services.list_documents(workspace)

    async def export_document(self, workspace: str, document_id: str) -> retrieval_pb.ExportDocumentResponse:
        return await self._services.export_document(workspace, document_id)

    async def delete_document(self, workspace: str, document_id: str) -> int:
        return await self._services.delete_document(workspace, document_id)

    async def storage(self, workspace: str) -> tuple[int, int]:
        """Bytes used and the storage quota (0: none) of a workspace."""
        return await self._services.storage(workspace)

    async def list_workspaces(self) -> list[str]:
        return await self._services.list_workspaces()

    async def delete_workspace(self, workspace: str) -> None:
        await self._services.delete_workspace(workspace)

    # -- sign-in and the user's files ------------------------------------------------------------------------------

    def account_from_headers(self, cookies: dict[str, str], authorization: str | None) -> Account | None:
        """The user of a request: the login cookie, or an API key as ``Authorization: Bearer``."""
        token = cookies.get(SESSION_COOKIE)
        if token:
            account = self.accounts.session_user(token)
            if account:
                return account
        if authorization and authorization.lower().startswith("bearer "):
            return self.accounts.by_api_key(authorization[7:].strip())
        return None

    @property
    def files_root(self) -> Path:
        """Per-user download files (transcripts); each user's lie under their own id."""
        return private_folder(Path(self.config.data_dir) / "gateway" / "files").resolve()

    def user_files(self, account: Account) -> Path:
        return private_folder(self.files_root / str(account.id))

    def retention_days(self) -> int:
        return int(self.accounts.get_setting("chat_retention_days", str(self.config.gateway.chat_retention_days)))


class _DocumentSession:
    """What whole-document work may use of the gateway for one user: the job is one request (``begin``), and its
    model calls (``ask``) count their tokens but no further request."""

    def __init__(self, gateway: Gateway, account: Account) -> None:
        self._gateway, self._account = gateway, account
        self.settings = gateway.config.gateway

    def may_read(self, workspace: str) -> bool:
        try:
            workspace_access(self._gateway, self._account, workspace)
        except WorkspaceRefused:
            return False
        return True

    def resolve_model(self, model: str | None) -> str:
        return self._gateway.models.resolve(self._account, model)

    def model_context(self, model: str) -> int:
        """Tokens per sequence of the smallest context among the healthy nodes of ``model``."""
        return self._gateway._services.context_length(model)

    async def export_document(self, workspace: str, document_id: str) -> retrieval_pb.ExportDocumentResponse:
        return await self._gateway.export_document(workspace, document_id)

    def begin(self) -> None:
        """The job starts: one request against the per-minute limit (after the document was found and split)."""
        self._gateway._quotas.admit(self._account)

    def ask(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float, model: str
    ) -> AsyncIterator[inference_pb.ChatResponse]:
        return self._gateway._chat(self._account, messages, max_tokens, temperature, model=model, count_request=False)
