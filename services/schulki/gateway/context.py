"""The gateway's shared state (settings, accounts, quotas, service clients, the pseudonym secret) and its use cases.

``Gateway`` is the one door to the services: chat, completions for editors, scoring a text and the next tokens, embed, transcribe,
search, ingest (a file or a web page), the Dokumente tab's documents, API
uploads, vector stores, whole-document work, document questions and the
admins' operations are its methods. Each takes the user's account, checks
there what the user may do (the workspace rule, the store's owner, the model
the user may pick, the admin role), counts the request against the user's
quotas and sends it to a service under the user's pseudonym. The service
clients, the quotas and the vector stores' running ingests are private to it;
the UI tabs and the /v1 routes call its methods and only translate input and
output. The
request id travels with the context (``logs.request_id``, set per API request
and per UI event), so every service call carries it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from pathlib import Path
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

from schulki.config import Config
from schulki.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from schulki.gateway.accounts.database import Account, Accounts, Workspace, database_url
from schulki.gateway.accounts.login_limits import LoginLimiter
from schulki.gateway.accounts.quotas import Quotas, Reservation, estimate_prompt_tokens
from schulki.gateway.agents import loop as agent_loop
from schulki.gateway.agents import switch as agent_switch
from schulki.gateway.documents import whole_document
from schulki.gateway.documents.file_records import FileRecords
from schulki.gateway.documents.questions import AnswerEvent, DocumentQuestion, Finished, Piece, answer_question, check_question
from schulki.gateway.documents.store_ingests import DOCUMENT_PREFIX, StoreContents, StoreIngest, StoreIngests
from schulki.gateway.documents.stored_files import FileRefused, find_file
from schulki.gateway.documents.stores import FileRecord, Stores
from schulki.gateway.documents.workspaces import WorkspaceRefused
from schulki.gateway.lessons.oversight import Oversight
from schulki.gateway.lessons.running import AnswerStopped
from schulki.gateway.lessons.task_chat import TaskTurn, task_answer
from schulki.gateway.lessons.tasks import Lessons, TaskForm, TaskRefused
from schulki.gateway.moderation.flags import Flag, Flags
from schulki.gateway.moderation.guard import GuardedAnswer, Moderation
from schulki.gateway.nodes.chat_models import ChatModels
from schulki.gateway.nodes.clients import NodeView, Services
from schulki.gateway.privacy.folders import private_folder
from schulki.gateway.web.file_owners import FileOwners
from schulki.inference.v1 import inference_service_pb2 as inference_pb
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from schulki.transcription.v1 import transcription_service_pb2 as transcription_pb

T = TypeVar("T")

SESSION_COOKIE = "schulki_session"


class AdminOnly(Exception):
    """An operation only admins may do, asked by someone else (the error table: 403, "Nur für Admins." on the page)."""


Event = TypeVar("Event")


class ModelAnswer(Generic[Event]):
    """A model's events, and the model that writes them: the one the user asked for, or their default."""

    def __init__(self, model: str, events: AsyncGenerator[Event, None], guard: GuardedAnswer | None = None) -> None:
        self.model = model
        self._events = events
        self._guard = guard

    @property
    def filtered(self) -> bool:
        """Whether moderation replaced the model's answer by a fixed one (the API says ``content_filter``)."""
        return self._guard is not None and self._guard.filtered

    def __aiter__(self) -> ModelAnswer[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()


ChatAnswer = ModelAnswer[inference_pb.ChatResponse]
"""A chat's events and its model."""


Streamed = TypeVar("Streamed", inference_pb.ChatResponse, inference_pb.CompleteResponse)


async def _settled(reservation: Reservation, events: Callable[[], AsyncIterator[Streamed]]) -> AsyncGenerator[Streamed, None]:
    """A model's events (``events()`` starts them) passed on with the token reservation kept: settled with the finish's
    real usage, marked streamed once text went out, and released at the end, also when the request cannot be made or
    the caller goes away mid-stream."""
    try:
        async for event in events():
            if event.HasField("finish"):  # settled before the finish goes out: a client that saw it sees its usage counted
                await reservation.settle_off_loop(event.finish.usage.total_tokens)
            else:
                reservation.streamed = True
            yield event
    finally:
        await reservation.release_off_loop()


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
        self._ingests = StoreIngests(self, services.list_documents, services.storage)
        """The vector stores' files and the ingests this app runs for them."""
        self.moderation = Moderation(config.moderation, Flags(accounts.engine))
        """The school's moderation rules, applied to every chat (``gateway/moderation/``), and their flags."""
        self.lessons = Lessons(accounts.engine, config.lessons)
        """Tasks for classes (``gateway/lessons/``): each method takes the account and checks it."""
        self.oversight = Oversight(self.lessons)
        """The task owner's reads of the students' task chats, and their log."""

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
        self._quotas.close()

    def available(self, service: str) -> bool:
        """Whether a node of the service (inference, embeddings, transcription, retrieval) answers its health checks."""
        return self._services.available(service)

    def service_names(self) -> list[str]:
        return list(self._services.pools)

    def nodes(self) -> dict[str, list[NodeView]]:
        """Every node of every service, by service name, with its health now (for the Admin tab and the roll-out's drain)."""
        return {name: [NodeView.of(node) for node in pool.nodes] for name, pool in self._services.pools.items()}

    def inference_nodes(self) -> list[NodeView]:
        return [NodeView.of(node) for node in self._services.inference_nodes()]

    async def check_health(self) -> None:
        await self._services.check_health()

    async def embeddings_model_name(self) -> str:
        return await self._services.embeddings_model_name()

    # -- the workspace rule (``gateway/documents/workspaces.py``), asked inside each use case that names a workspace --

    def workspaces(self, account: Account) -> list[Workspace]:
        """The workspaces the user may see: the private one, the user's own stores, then their classes'."""
        found = self.accounts.workspaces(account)
        stores = [Workspace(store.workspace, store.name, True) for store in self.stores.owned(account.id)]
        return found[:1] + stores + found[1:]

    def workspace_access(self, account: Account, name: str, write: bool = False) -> Workspace:
        """The workspace, when the user may read it (and change it, with ``write``); WorkspaceRefused otherwise."""
        name = name if isinstance(name, str) else ""  # a Gradio event called through its API may send anything
        for workspace in self.workspaces(account):
            if workspace.name == name:
                if write and not workspace.writable:
                    raise WorkspaceRefused(name, read_only=True)
                return workspace
        raise WorkspaceRefused(name, read_only=False)

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
        options: inference_pb.ChatRequest | None = None,
        logprobs: int | None = None,
    ) -> ChatAnswer:
        """``services.chat`` with the model the user asked for (None: their default; ModelChoiceError for one that does not
        exist or that they may not use), their pseudonym and a token reservation: prompt and longest answer are set aside
        against the daily quota before the request starts, and settled with the real usage when it ends; the school's
        moderation rules apply to the question and the answer (``gateway/moderation/guard.py``). ``options`` carries
        the request's further fields (sampling, a JSON schema) into the inference request. ``logprobs``: None for none,
        else each token's log-probability and that many alternatives, as token events before its text."""
        chosen = self.models.resolve(account, model)
        events = self._chat(
            account, messages, max_tokens, temperature, stop, seed, chosen, count_request=True, options=options, logprobs=logprobs
        )
        # moderation reads the question before the model is asked, and the answer as it streams
        # a German note would break what the client parses: a JSON schema's answer, tool calls
        parsed = options is not None and (options.HasField("json_schema") or len(options.tools) > 0)
        guarded = self.moderation.guard(
            account, messages, events, whole_words=logprobs is None, admit=lambda: self._quotas.admit(account), notes=not parsed
        )
        return ChatAnswer(chosen, guarded.events(), guarded)

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
        options: inference_pb.ChatRequest | None = None,
        logprobs: int | None = None,
    ) -> AsyncGenerator[inference_pb.ChatResponse, None]:
        """The chat of ``chat``; ``count_request`` False for a call that is part of a job counted as one request already."""
        classes = frozenset(account.classes) if account.role == "student" else frozenset()
        paused = await run_in_threadpool(self.lessons.class_paused, classes) if classes else False  # a teacher's stop
        if paused:
            raise TaskRefused(423, "Deine Klasse ist gerade pausiert. Deine Lehrkraft kann sie wieder freigeben. (Paused.)", "class_paused")
        reservation = await self._quotas.reserve_off_loop(
            account, estimate_prompt_tokens(messages), max_tokens, count_request=count_request
        )

        def class_open() -> str | None:
            return "paused" if self.lessons.class_paused(classes) else None

        def events() -> AsyncIterator[inference_pb.ChatResponse]:
            answer = self._unwatched_chat(messages, account, reservation, temperature, stop, seed, model, options, logprobs)
            # a class's stop ends the answer within a second: it just stops, as the stop button does
            return self.lessons.running.watched(answer, None, classes, class_open) if classes else answer

        try:
            async with aclosing(_settled(reservation, events)) as settled:
                async for event in settled:
                    yield event
        except AnswerStopped:
            return

    async def _admit(self, account: Account) -> None:
        """``Quotas.admit`` on the quotas' writer thread: its queries and commit do not hold up the loop that streams
        every student's answer (QuotaExceeded comes back here as from ``admit``)."""
        await self._quotas.off_loop(self._quotas.admit, account)

    def _unwatched_chat(
        self,
        messages: list[dict[str, str]],
        account: Account,
        reservation: Reservation,
        temperature: float | None,
        stop: list[str] | None,
        seed: int | None,
        model: str | None,
        options: inference_pb.ChatRequest | None,
        logprobs: int | None,
    ) -> AsyncIterator[inference_pb.ChatResponse]:
        return self._services.chat(
            messages,
            self.pseudonym(account),
            reservation.max_tokens,
            temperature,
            stop or (),
            seed,
            model=model,
            options=options,
            logprobs=logprobs,
        )

    # -- tasks (``gateway/lessons/``): the checks with the services' facts, and a student's answer in a task ---------

    def create_task(self, account: Account, form: TaskForm) -> tuple[int, str | None]:
        """A teacher's new task: the form checked (``Lessons.check_form``), the model one the teacher may use, the
        documents a class workspace the teacher may change, and the budget drawn from the teacher's daily quota now.
        Returns the task's id and its code (None without one), shown once."""
        self.lessons.check_form(account, form)
        model = self.models.resolve(account, form.model or None)
        if form.workspace:
            if not form.workspace.startswith("k-"):
                raise TaskRefused(
                    400, "Als Wissen einer Aufgabe dienen die Dokumente einer Klasse. (Class documents only.)", "not_class_documents"
                )
            self.workspace_access(account, form.workspace, write=True)
        limit = self.config.gateway.tokens_per_day.get(account.role, 0)
        left = limit - self.accounts.tokens_today(account.id)
        granted = self.accounts.reserve_tokens(account.id, 0, form.token_budget, limit) if form.token_budget <= left else None
        if granted != form.token_budget:
            if granted:
                self.accounts.count_usage(account.id, tokens=-granted)
            raise TaskRefused(
                429,
                f"Dein Tageskontingent reicht dafür nicht: heute sind noch {max(0, left)} Tokens übrig. (Budget over your quota.)",
                "budget_over_quota",
            )
        return self.lessons.create(account, TaskForm(**{**form.__dict__, "model": model}))

    def task_chat(self, account: Account, task_id: object, message: object) -> AsyncGenerator[TaskTurn, None]:
        """A student's message in a task they take part in, while it is open: one request against their rate, the
        task's instructions and documents, the task's model and budget (``gateway/lessons/task_chat.py``)."""

        async def asked(prompt: list[dict[str, str]], max_tokens: int, model: str) -> AsyncGenerator[inference_pb.ChatResponse, None]:
            async for event in self._services.chat(prompt, self.pseudonym(account), max_tokens, model=model):
                yield event

        def chat(prompt: list[dict[str, str]], max_tokens: int, model: str) -> AsyncIterator[inference_pb.ChatResponse]:
            # a task's chat is moderated as every chat is (the request was counted already: nothing more to admit)
            guarded = self.moderation.guard(account, prompt, asked(prompt, max_tokens, model), whole_words=True, admit=lambda: None)
            return guarded.events()

        def search(workspace: str, query: str, top_k: int) -> Awaitable[list[retrieval_pb.Hit]]:
            return self._services.search(workspace, query, top_k=top_k)

        return task_answer(
            self.lessons,
            account,
            task_id,
            message,
            self.config.gateway.max_chat_tokens,
            lambda: self._quotas.admit_request(account),
            search,
            chat,
        )

    def complete(
        self, account: Account, request: inference_pb.CompleteRequest, model: str | None = None
    ) -> ModelAnswer[inference_pb.CompleteResponse]:
        """A raw prompt continued, or a gap filled, for a user (/v1/completions, /v1/infill), by the model they asked for
        (None: their default; ModelChoiceError for one that does not exist or that they may not use): one request against
        the quota and a token reservation for the prompt (prefix, suffix and extra files) and ``request.max_tokens``,
        settled with the real usage, as ``chat`` does; sent under the user's pseudonym."""
        chosen = self.models.resolve(account, model)
        return ModelAnswer(chosen, self._complete(account, request, chosen))

    async def _complete(
        self, account: Account, request: inference_pb.CompleteRequest, model: str
    ) -> AsyncGenerator[inference_pb.CompleteResponse, None]:
        fill = request.fill_in_the_middle
        texts = [request.prompt, fill.prefix, fill.suffix, *(f.file_name + f.text for f in fill.extra_files)]
        scoring = request.HasField("max_tokens") and request.max_tokens == 0  # echo's scoring of the prompt alone
        reservation = await self._quotas.reserve_off_loop(
            account, estimate_prompt_tokens([{"content": text} for text in texts]), max(request.max_tokens, 1)
        )
        job = inference_pb.CompleteRequest()
        job.CopyFrom(request)
        job.max_tokens, job.user = 0 if scoring else reservation.max_tokens, self.pseudonym(account)
        async with aclosing(_settled(reservation, lambda: self._services.complete(job, model))) as settled:
            async for event in settled:
                yield event

    async def score_text(
        self, account: Account, text: str, model: str | None = None, top_logprobs: int = 0
    ) -> inference_pb.ScoreTextResponse:
        """How likely the user's model finds each token of a text (perplexity, the most surprising word): one request,
        and the text's tokens count against the daily quota as a chat's prompt does."""
        served = self.models.resolve(account, model)
        return await self._text_read(
            account,
            text,
            lambda: self._services.score_text(text, self.pseudonym(account), served, top_logprobs),
            lambda r: len(r.tokens) + 1,
        )

    async def next_tokens(
        self, account: Account, text: str, count: int = 10, temperature: float = 1.0, model: str | None = None
    ) -> inference_pb.NextTokensResponse:
        """The most likely next tokens after the beginning of a text, at a temperature, under the user's model: one
        request, and the beginning's tokens count against the daily quota as a chat's prompt does."""
        served = self.models.resolve(account, model)
        return await self._text_read(
            account,
            text,
            lambda: self._services.next_tokens(text, self.pseudonym(account), served, count, temperature),
            lambda r: r.prompt_tokens,
        )

    async def attention(self, account: Account, text: str, model: str | None = None) -> inference_pb.AttentionResponse:
        """How the tokens of a short sentence attend to each other in the user's model: one request, and the sentence's
        tokens count against the daily quota as a chat's prompt does."""
        served = self.models.resolve(account, model)
        return await self._text_read(
            account, text, lambda: self._services.attention(text, self.pseudonym(account), served), lambda r: len(r.tokens)
        )

    async def _text_read(self, account: Account, text: str, ask: Callable[[], Awaitable[T]], used: Callable[[T], int]) -> T:
        """One request in which the model reads a text and writes nothing (scoring, next tokens, attention): the text's
        tokens reserved against the daily quota as a chat's prompt, on the quotas' writer thread, and settled with what
        ``used`` says the model read."""
        reservation = await self._quotas.reserve_off_loop(account, estimate_prompt_tokens([{"content": text}]), 1)
        try:
            response = await ask()
            await reservation.settle_off_loop(used(response))
            return response
        finally:
            await reservation.release_off_loop()

    async def embed(self, account: Account, texts: list[str]) -> embeddings_pb.EmbedResponse:
        """Embed texts for a user: one request against the quota, and their tokens counted once the vectors are back."""
        await self._admit(account)
        response = await self._services.embed(texts, self.pseudonym(account))
        await self._quotas.off_loop(self._quotas.add_tokens, account, sum(embedding.token_count for embedding in response.embeddings))
        return response

    async def transcribe(
        self, account: Account, chunks: AsyncIterator[bytes] | Iterable[bytes], file_name: str, language: str = ""
    ) -> AsyncIterator[transcription_pb.TranscribeResponse]:
        """Transcribe a recording for a user (one request against the quota), streaming language, segments and summary."""
        await self._admit(account)
        async for event in self._services.transcribe(chunks, file_name, self.pseudonym(account), language):
            yield event

    async def search(self, account: Account, workspace: str, query: str, top_k: int = 4) -> list[retrieval_pb.Hit]:
        """Search a workspace the user may read (one request against the quota)."""
        self.workspace_access(account, workspace)
        await self._admit(account)
        return await self._services.search(workspace, query, top_k=top_k)

    def ingest(self, account: Account, workspace: str, path: Path, file_name: str) -> AsyncIterator[retrieval_pb.IngestDocumentResponse]:
        """Store an uploaded file in a workspace the user may change (one request against the quota, counted now):
        progress, then the document. The workspace's storage quota is the service's."""
        self.workspace_access(account, workspace, write=True)
        self._quotas.admit(account)
        return self._services.ingest(workspace, path, file_name, self.pseudonym(account))

    def ingest_url(self, account: Account, workspace: str, url: str) -> AsyncIterator[retrieval_pb.IngestDocumentResponse]:
        """Store the web page at url in a workspace the user may change, as ``ingest`` stores a file."""
        self.workspace_access(account, workspace, write=True)
        self._quotas.admit(account)
        return self._services.ingest_url(workspace, url, self.pseudonym(account))

    async def upload_file(self, account: Account, store: Callable[[], Awaitable[T]]) -> T:
        """An upload through /v1/files: one request against the quota (no filling the disk in a loop), then ``store``."""
        await self._admit(account)
        return await store()

    # -- vector stores (/v1/vector_stores): the workspaces the user may see, their files, and the ingests ----------

    async def vector_stores(self, account: Account) -> list[StoreContents]:
        return [await self._ingests.contents(space) for space in self.workspaces(account)]

    async def vector_store(self, account: Account, workspace: str) -> StoreContents:
        """A store the user may read, its files and documents; WorkspaceRefused (404 as for one that does not exist) otherwise."""
        return await self._ingests.contents(self.workspace_access(account, workspace))

    async def create_vector_store(self, account: Account, name: str, file_ids: list[str]) -> StoreContents:
        """A new store of the user's (one request against the quota) with the uploads named, their ingests counted with it;
        every file id is checked before the store exists (all or nothing)."""
        for file_id in file_ids:
            if await run_in_threadpool(find_file, self, account, file_id) is None:  # may copy it from the database
                raise FileRefused(404, f"No file with id {file_id!r} found.", param="file_ids", code="file_not_found")
        self._ingests.check_room(account, len(file_ids))
        limit = self.config.gateway.vector_stores_per_user
        if len(self.stores.owned(account.id)) >= limit:
            raise FileRefused(
                400,
                f"Du hast schon {limit} eigene Arbeitsbereiche; lösche erst einen. (At most {limit} vector stores per user; delete one first.)",
                code="too_many_vector_stores",
            )
        record = self.stores.create(account.id, name.strip() or "Dokumente")
        try:
            self._quotas.admit(account)
            await self._services.ensure_workspace(record.workspace)
        except Exception:
            self.stores.remove(record.workspace)
            raise
        space = Workspace(record.workspace, record.name, True)
        for file_id in file_ids:
            await self._ingests.add(account, self._store_ingest(account), space.name, file_id, None)
        return await self._ingests.contents(space)

    async def delete_vector_store(self, account: Account, workspace: str) -> None:
        """Delete a store the user created through the API, its documents and files; others only lose files one by one."""
        space = self.workspace_access(account, workspace, write=True)
        if self.stores.store(space.name) is None:
            raise FileRefused(
                400,
                "Nur selbst angelegte Arbeitsbereiche lassen sich löschen; hier lassen sich nur Dateien löschen. "
                "(Only vector stores created through the API can be deleted; delete the files of this one instead.)",
                code="vector_store_not_deletable",
            )
        self._ingests.cancel(space.name)
        await self._services.delete_workspace(space.name)
        self.stores.remove(space.name)

    async def add_to_vector_store(self, account: Account, workspace: str, file_id: str | None, url: str | None) -> FileRecord:
        """Add an upload or a web page to a store the user may change: one request against the quota, counted before the
        file is checked; the ingest runs in the background, counted with it. The record as the user sees it now."""
        space = self.workspace_access(account, workspace, write=True)
        if (file_id is None) == (url is None):
            raise FileRefused(400, "Send either file_id (an upload from /v1/files) or url (a web page).", param="file_id")
        await self._admit(account)
        return self._ingests.current(await self._ingests.add(account, self._store_ingest(account), space.name, file_id, url))

    async def delete_vector_store_file(self, account: Account, workspace: str, file_id: str) -> None:
        """Delete a file (or a document, ``doc-<id>``) of a store the user may change; its running ingest stops."""
        space = self.workspace_access(account, workspace, write=True)
        if file_id not in (await self._ingests.contents(space)).file_ids():
            raise FileRefused(404, f"No file with id {file_id!r} in this vector store.", param="file_id", code="file_not_found")
        self._ingests.cancel(space.name, file_id)
        record = self.stores.file(space.name, file_id)
        document_id = record.document_id if record else file_id.removeprefix(DOCUMENT_PREFIX)
        if document_id:
            await self._services.delete_document(space.name, document_id)
        self.stores.remove_file(space.name, file_id)

    def _store_ingest(self, account: Account) -> StoreIngest:
        def ingest(workspace: str, path: Path | None, url: str, file_name: str) -> AsyncIterator[retrieval_pb.IngestDocumentResponse]:
            if path is not None:
                return self._services.ingest(workspace, path, file_name, self.pseudonym(account))
            return self._services.ingest_url(workspace, url, self.pseudonym(account))

        return ingest

    def summarize_document(
        self, account: Account, workspace: str, document_id: str, length: str = "paragraph", model: str | None = None
    ) -> AsyncGenerator[whole_document.Event, None]:
        """Summarize a whole stored document in a workspace the user may read (one request; its tokens count like a chat's)."""
        self.workspace_access(account, workspace)
        return whole_document.summarize_document(_DocumentSession(self, account), workspace, document_id, length, model)

    def translate_document(
        self, account: Account, workspace: str, document_id: str, language: str, model: str | None = None
    ) -> AsyncGenerator[whole_document.Event, None]:
        """Translate a whole stored document in a workspace the user may read (one request; its tokens count like a chat's)."""
        self.workspace_access(account, workspace)
        return whole_document.translate_document(_DocumentSession(self, account), workspace, document_id, language, model)

    async def ask_documents(self, account: Account, question: DocumentQuestion) -> AsyncGenerator[AnswerEvent, None]:
        """Answer a question about a workspace's documents with the user's model: the workspace must be one the user may
        read, the question counts as one request before anything is searched, and the answer's tokens are reserved as
        for a chat; then the cited passages, the answer piece by piece, and its end (``gateway/documents/questions.py``)."""
        check_question(question)
        self.workspace_access(account, question.workspace)
        model = self.models.resolve(account, question.model)
        await self._admit(account)

        guarded: GuardedAnswer | None = None

        def ask(
            messages: list[dict[str, str]], max_tokens: int, temperature: float | None, stop: list[str], seed: int | None
        ) -> AsyncIterator[inference_pb.ChatResponse]:
            # moderated as a chat: the rules read the student's question (not the passages the prompt wraps it in)
            # before the model is asked, and the answer as it streams; the request was counted above
            nonlocal guarded
            asked = [{"role": "user", "content": question.question}]
            answer = self._chat(account, messages, max_tokens, temperature, stop, seed, model, count_request=False)
            guarded = self.moderation.guard(account, asked, answer, whole_words=True, admit=lambda: None)
            return guarded.events()

        async for event in answer_question(self._services, self.config.gateway, question, model, ask):
            filtered = guarded is not None and guarded.filtered  # from here on the fixed answer, in place of the model's
            if filtered and isinstance(event, Piece):
                yield Piece(event.text.strip(), replaces=True)
            elif filtered and isinstance(event, Finished):
                yield dataclasses.replace(event, reason="content_filter")
            else:
                yield event

    # -- the chat tab's agent mode (gateway/agents/): the roles the admin switched on, and one run ---------------

    def agent_allowed(self, account: Account) -> bool:
        return agent_switch.agent_allowed(self.accounts, self.config.gateway.agents, account)

    def agent_roles(self, account: Account) -> list[str]:
        """The roles besides admin that may use the agent mode (for the Admin tab: admins only)."""
        return self.admin_only(account, lambda: agent_switch.agent_roles(self.accounts, self.config.gateway.agents))

    def set_agent_roles(self, account: Account, roles: object) -> list[str]:
        return self.admin_only(account, lambda: agent_switch.set_agent_roles(self.accounts, roles))

    def run_agent(
        self, account: Account, task: object, tools: object, planner: agent_loop.Planner | None = None
    ) -> AsyncGenerator[agent_loop.Event, None]:
        """An agent run for a user whose role may (AgentRefused otherwise): one request, the model's steps counted as a
        chat's tokens, each tool a use case of this Gateway for the same account. ``planner`` replaces the model's
        choice of actions (tests only); the loop checks its actions as it checks the model's."""
        return agent_loop.run_agent(_AgentSession(self, account), task, tools, planner)

    async def read_web_page(self, account: Account, url: str, max_chars: int) -> retrieval_pb.FetchPageResponse:
        """A web page's text for a user (one request against the quota), fetched by the retrieval service with the
        address checks of a URL ingest and stored nowhere."""
        await self._admit(account)
        return await self._services.fetch_page(url, self.pseudonym(account), max_chars)

    # -- the documents of a workspace the user may read (or change) ------------------------------------------------

    async def list_documents(self, account: Account, workspace: str) -> list[retrieval_pb.Document]:
        self.workspace_access(account, workspace)
        return await self._services.list_documents(workspace)

    async def export_document(self, account: Account, workspace: str, document_id: str) -> retrieval_pb.ExportDocumentResponse:
        self.workspace_access(account, workspace)
        return await self._services.export_document(workspace, document_id)

    async def delete_document(self, account: Account, workspace: str, document_id: str | None) -> int:
        """Delete a document of a workspace the user may change; no document named deletes nothing (after the check)."""
        self.workspace_access(account, workspace, write=True)
        return await self._services.delete_document(workspace, document_id) if document_id else 0

    async def storage(self, account: Account, workspace: str) -> tuple[int, int]:
        """Bytes used and the storage quota (0: none) of a workspace the user may read."""
        self.workspace_access(account, workspace)
        return await self._services.storage(workspace)

    # -- the school's data, asked by no user: the retention purge and the deletion of a user's data ----------------

    async def list_workspaces(self) -> list[str]:
        return await self._services.list_workspaces()

    async def delete_workspace(self, workspace: str) -> None:
        await self._services.delete_workspace(workspace)

    async def stored_documents(self, workspace: str) -> list[retrieval_pb.Document]:
        return await self._services.list_documents(workspace)

    async def purge_document(self, workspace: str, document_id: str) -> int:
        return await self._services.delete_document(workspace, document_id)

    def moderation_flags(self, account: Account) -> list[Flag]:
        """The moderation flags the user may see: an admin all, a teacher those of the students of her classes;
        TeachersOnly for a student."""
        return self.moderation.flags.visible_to(account, self.accounts)

    # -- admins only ---------------------------------------------------------------------------------------------

    def admin_only(self, account: Account, work: Callable[[], T]) -> T:
        """``work()`` for an admin (the Admin tab's operations: accounts, models, settings, node health, a user's data);
        AdminOnly for anyone else, before it starts. An async ``work`` gives its coroutine back to await."""
        if account.role != "admin":
            raise AdminOnly()
        return work()

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

    def resolve_model(self, model: str | None) -> str:
        return self._gateway.models.resolve(self._account, model)

    def model_context(self, model: str) -> int:
        """Tokens per sequence of the smallest context among the healthy nodes of ``model``."""
        return self._gateway._services.context_length(model)

    async def export_document(self, workspace: str, document_id: str) -> retrieval_pb.ExportDocumentResponse:
        return await self._gateway._services.export_document(workspace, document_id)  # the Gateway checked the workspace

    def begin(self) -> None:
        """The job starts: one request against the per-minute limit (after the document was found and split)."""
        self._gateway._quotas.admit(self._account)

    def ask(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float, model: str
    ) -> AsyncIterator[inference_pb.ChatResponse]:
        return self._gateway._chat(self._account, messages, max_tokens, temperature, model=model, count_request=False)


class _AgentSession:
    """What an agent run may use of the gateway for one user: the run is one request (``begin``), and its model calls
    (``ask``, the user's model) count their tokens but no further request; its tools are the Gateway's use cases."""

    def __init__(self, gateway: Gateway, account: Account) -> None:
        self.gateway, self.account = gateway, account
        self.settings = gateway.config.gateway.agents

    def allowed(self) -> bool:
        return self.gateway.agent_allowed(self.account)

    def begin(self) -> None:
        self.gateway._quotas.admit(self.account)

    async def screen(self, task: str) -> str | None:
        return await self.gateway.moderation.screen(self.account, task)

    async def screen_answer(self, answer: str) -> tuple[str, bool]:
        return await self.gateway.moderation.screen_answer(self.account, answer)

    def ask(
        self, messages: list[dict[str, str]], max_tokens: int, options: inference_pb.ChatRequest
    ) -> AsyncIterator[inference_pb.ChatResponse]:
        model = self.gateway.models.resolve(self.account, None)
        return self.gateway._chat(self.account, messages, max_tokens, 0.0, model=model, count_request=False, options=options)
